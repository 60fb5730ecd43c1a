import { createKosRuntime, type KosRuntime, type KosRuntimeOptions } from './kos-runtime.js';

/** A runtime being started for an adapter: the promise, and the runtime itself once it is up. */
export interface StartingRuntime {
  /** Resolves once KOS is ready; rejects with the start-up error. */
  readonly ready: Promise<KosRuntime>;
  /** The runtime once `ready` resolved (requests then skip a wait), else undefined. */
  readonly current: KosRuntime | undefined;
}

/**
 * Starts (or adopts) the runtime an adapter serves with. A start-up failure is not an
 * unhandled rejection: every request answers it (`startupFailure`) and `ready` rejects with it.
 */
export function startRuntime(
  options: KosRuntimeOptions & { readonly runtime?: KosRuntime | Promise<KosRuntime> },
): StartingRuntime {
  const ready = Promise.resolve(options.runtime ?? createKosRuntime(options));
  const state: { ready: Promise<KosRuntime>; current: KosRuntime | undefined } = { ready, current: undefined };
  ready.then(
    (runtime) => {
      state.current = runtime;
    },
    () => undefined,
  );
  return state;
}
