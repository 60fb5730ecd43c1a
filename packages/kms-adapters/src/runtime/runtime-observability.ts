import { KosError, type KosLogger, type KosMetrics, noopMetrics, silentLogger } from '@kos/core';
import type { MetricsConfig } from './runtime-config.js';

/** The metrics a runtime reports to, and the Prometheus text when Prometheus is in use. */
export interface RuntimeMetrics {
  readonly metrics: KosMetrics;
  readonly kind: 'prometheus' | 'custom' | 'none';
  readonly text?: () => Promise<string>;
  readonly contentType?: string;
}

function isMetricsSink(value: unknown): value is KosMetrics {
  const sink = value as Partial<KosMetrics> | null;
  return (
    typeof sink === 'object' &&
    sink !== null &&
    ['decision', 'keyRelease', 'dekCache', 'shareFetch', 'error', 'rotation'].every(
      (name) => typeof (sink as Record<string, unknown>)[name] === 'function',
    )
  );
}

/**
 * Builds what `metrics` asks for. Prometheus loads prom-client on demand: when it is not
 * installed, a configuration that asked for it fails to start (ERR_INVALID_OPTIONS), while the
 * embedded default (`optional`) runs without metrics and says so in the log.
 */
export async function resolveRuntimeMetrics(
  config: MetricsConfig | undefined,
  options: { readonly optional: boolean; readonly logger: KosLogger },
): Promise<RuntimeMetrics> {
  if (config === undefined || config === false) return { metrics: noopMetrics, kind: 'none' };
  if (isMetricsSink(config)) return { metrics: config, kind: 'custom' };
  if (typeof config !== 'object' || (config as { prometheus?: unknown }).prometheus !== true) {
    throw new KosError(
      'ERR_INVALID_OPTIONS',
      'kos runtime: metrics must be a KosMetrics sink, { prometheus: true } or false',
    );
  }
  let create: typeof import('../observability/prometheus-metrics.js').createPrometheusMetrics;
  try {
    ({ createPrometheusMetrics: create } = await import('../observability/prometheus-metrics.js'));
  } catch (error) {
    if (options.optional) {
      options.logger.warn({ metrics: 'none' }, 'kos: prom-client is not installed; Prometheus metrics are off');
      return { metrics: noopMetrics, kind: 'none' };
    }
    throw new KosError(
      'ERR_INVALID_OPTIONS',
      'kos runtime: metrics { prometheus: true } needs the prom-client package (npm install prom-client)',
      { cause: error },
    );
  }
  const prometheus = create({
    ...(config.prefix === undefined ? {} : { prefix: config.prefix }),
    ...(config.maxKeyAgeKids === undefined ? {} : { maxKeyAgeKids: config.maxKeyAgeKids }),
    ...(config.keyRegistryRefreshMs === undefined ? {} : { keyRegistryRefreshMs: config.keyRegistryRefreshMs }),
    ...(config.defaultMetrics ? { defaultMetrics: true } : {}),
  });
  return {
    metrics: prometheus,
    kind: 'prometheus',
    text: () => prometheus.metricsText(),
    contentType: prometheus.contentType,
  };
}

/** A logger whose calls never throw (a failing logger must not fail a request). */
export function safeLogger(logger: KosLogger | undefined): KosLogger {
  if (!logger) return silentLogger;
  for (const level of ['info', 'warn', 'error', 'debug'] as const) {
    if (typeof logger[level] !== 'function') {
      throw new KosError('ERR_INVALID_OPTIONS', `kos runtime: logger.${level} must be a function (pino-compatible)`);
    }
  }
  const guard =
    (level: keyof KosLogger) =>
    (object: object, message?: string): void => {
      try {
        logger[level](object, message);
      } catch {
        // Logging must not change what KOS does.
      }
    };
  return { info: guard('info'), warn: guard('warn'), error: guard('error'), debug: guard('debug') };
}

/**
 * Logs failed audit writes: the first at once, then at most one line per `intervalMs` with the
 * number of failures since (a failing disk must not flood the log). Codes only, no messages.
 */
export function auditFailureLogger(logger: KosLogger, intervalMs = 10_000, clock: () => number = Date.now) {
  let last = Number.NEGATIVE_INFINITY;
  let suppressed = 0;
  return (error: unknown): void => {
    const now = clock();
    if (now - last < intervalMs) {
      suppressed++;
      return;
    }
    const code = (error as { code?: unknown } | null)?.code;
    logger.error(
      { code: typeof code === 'string' ? code : 'unknown', failuresSinceLastLog: suppressed + 1 },
      'kos: audit trail write failed',
    );
    last = now;
    suppressed = 0;
  };
}
