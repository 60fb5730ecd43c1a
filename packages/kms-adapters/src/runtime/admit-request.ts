import type { Identity, KosDecision } from '@kos/core';
import type { KmsResponse } from '../kms-node/kms-handler.js';
import { type PlainRequest, startupFailure } from './adapter-support.js';
import type { KosRuntime } from './kos-runtime.js';
import type { StartingRuntime } from './start-runtime.js';

/** Where a request stands relative to the in-process KMS nodes mounted on the app. */
export interface MountInput {
  /** The request path and query below the middleware's mount point (cheap to read). */
  readonly url: string;
  /** The path below the middleware's mount point (read only when `url` is under the prefix). */
  path(): string;
  /** The request body of a node call (bounded by the adapter's reader). */
  readBody(): Promise<Uint8Array | undefined>;
}

/** A response the adapter sends as it is (`raw`: a mounted node's text body, not a JSON value). */
export interface AdapterAnswer {
  readonly answer: { readonly status: number; readonly headers: Record<string, string>; readonly body: unknown };
  readonly raw: boolean;
}

/** A request KOS let through to the route, with who is calling and at which tier. */
export interface Admitted {
  readonly runtime: KosRuntime;
  readonly decision: KosDecision;
  readonly identity: Identity;
}

/**
 * `admitRequest` without waiting, when KOS has started, the request is not for a mounted node
 * and `kos.decideNow` knows the decision; undefined otherwise (call `admitRequest`).
 */
export function admitNow(started: StartingRuntime, request: PlainRequest, url: string): Admitted | undefined {
  const runtime = started.current;
  if (!runtime || url.startsWith(runtime.mountPrefix)) return undefined;
  const admission = runtime.kos.decideNow(request);
  return admission && { runtime, decision: admission.decision, identity: admission.identity };
}

/**
 * The part every adapter does before the route runs: wait for start-up only while it is
 * pending (a failed start answers its code), hand requests under the KMS mount prefix to the
 * mounted node, and identify the caller and decide its tier. Resolves either an answer to send
 * (start-up failure, a node's response, a denial — all typed) or the admitted request.
 */
export async function admitRequest(
  started: StartingRuntime,
  request: PlainRequest,
  mount: MountInput,
): Promise<AdapterAnswer | Admitted> {
  let runtime: KosRuntime | undefined = started.current;
  if (!runtime) {
    try {
      runtime = await started.ready;
    } catch (error) {
      return { answer: startupFailure(error), raw: false };
    }
  }
  // `url` starts with the prefix exactly when the path does (the prefix holds no "?").
  if (mount.url.startsWith(runtime.mountPrefix)) {
    const path = mount.path();
    if (path.startsWith(`${runtime.mountPrefix}/`)) {
      try {
        // Routed on the path below the middleware's mount point; DPoP proofs are checked against the full URL.
        const mounted: KmsResponse | undefined = await runtime.handleKms({
          method: request.method,
          url: request.url,
          headers: request.headers,
          path,
          body: await mount.readBody(),
        });
        if (mounted) return { answer: mounted, raw: true };
      } catch (error) {
        return { answer: runtime.kos.errorResponse(error), raw: false };
      }
    }
  }
  try {
    const { decision, identity } = await runtime.kos.decide(request);
    return { runtime, decision, identity };
  } catch (error) {
    return { answer: runtime.kos.errorResponse(error), raw: false };
  }
}
