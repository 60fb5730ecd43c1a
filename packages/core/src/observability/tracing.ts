import { errorCodeOf } from './metrics.js';

/**
 * OpenTelemetry spans through `@opentelemetry/api` when it is installed (an optional peer
 * dependency): KOS loads it with a dynamic import and, without it, runs the same code with a
 * span that does nothing. Spans go to whatever tracer provider the application registered
 * (none: the API's no-op). Attributes are tiers, key ids, versions, node ids and counts —
 * never client ids, tokens, shares or key bytes.
 */

export type SpanAttributeValue = string | number | boolean | string[];
export type SpanAttributes = Record<string, SpanAttributeValue>;

/** The part of an OpenTelemetry span KOS uses. */
export interface KosSpan {
  setAttribute(key: string, value: SpanAttributeValue): unknown;
  setStatus(status: { code: number; message?: string }): unknown;
}

interface OtelSpan extends KosSpan {
  end(): void;
}

interface OtelTracer {
  startActiveSpan<T>(name: string, options: { attributes?: SpanAttributes }, fn: (span: OtelSpan) => T): T;
}

interface OtelTracerProvider {
  /** On the API's global proxy: the registered provider, or the API's no-op one. */
  getDelegate?(): unknown;
}

interface OtelApi {
  trace: { getTracer(name: string, version?: string): OtelTracer; getTracerProvider(): OtelTracerProvider };
  ProxyTracerProvider: new () => OtelTracerProvider;
}

/** `SpanStatusCode.ERROR` of the OpenTelemetry API. */
const STATUS_ERROR = 2;

const NOOP_SPAN: KosSpan = Object.freeze({
  setAttribute: () => undefined,
  setStatus: () => undefined,
});

let tracer: OtelTracer | undefined;
let api: OtelApi | undefined;
/** The API's no-op provider: what the global proxy delegates to while no SDK is registered. */
let noopProvider: unknown;
let loading: Promise<boolean> | undefined;

/**
 * Loads `@opentelemetry/api` once (resolves whether it is present). KOS starts this itself
 * when a KeyManager or `createKos` is built; await it to have spans from the first request.
 */
export function loadTracing(): Promise<boolean> {
  loading ??= (async () => {
    try {
      const loaded = (await import('@opentelemetry/api')) as unknown as OtelApi;
      noopProvider = new loaded.ProxyTracerProvider().getDelegate?.();
      api = loaded;
      tracer = loaded.trace.getTracer('@kos/core');
      return true;
    } catch {
      return false;
    }
  })();
  return loading;
}

/** The tracer, unless there is no API or no SDK registered yet (the API would hand out no-op spans). */
function recordingTracer(): OtelTracer | undefined {
  const active = tracer;
  if (!active || (noopProvider !== undefined && api?.trace.getTracerProvider().getDelegate?.() === noopProvider)) {
    return undefined;
  }
  return active;
}

/** Whether `withSpan` records spans now (an SDK is registered), so work that skips it would be missed. */
export function spansRecorded(): boolean {
  return recordingTracer() !== undefined;
}

/** Whether spans are being created (the OpenTelemetry API was found). */
export function tracingAvailable(): boolean {
  return tracer !== undefined;
}

/** Marks a span as failed with a stable error code (never a message that could carry data). */
export function failSpan(span: KosSpan, code: string): void {
  span.setAttribute('kos.error.code', code);
  span.setStatus({ code: STATUS_ERROR, message: code });
}

/**
 * Runs `fn` inside an active span `name` (child of the current span, when a context manager
 * is registered); an error marks the span failed with its code and is rethrown.
 */
export function withSpan<T>(name: string, attributes: SpanAttributes, fn: (span: KosSpan) => Promise<T>): Promise<T> {
  const active = recordingTracer();
  if (!active) return fn(NOOP_SPAN);
  return active.startActiveSpan(name, { attributes }, async (span) => {
    try {
      return await fn(span);
    } catch (error) {
      failSpan(span, errorCodeOf(error));
      throw error;
    } finally {
      span.end();
    }
  });
}
