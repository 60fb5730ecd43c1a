/**
 * Runs attempts over a list of sources until `need` succeed: `need` (plus `extraAttempts`) start at once, each
 * failure starts the next source, a source slower than `hedgeAfterMs` gets a backup
 * started beside it, and as soon as `need` have succeeded every other attempt is aborted.
 * Used for share fetching on the server and in the browser opener (DESIGN invariant 16).
 */

export interface GatherOptions {
  /**
   * Attempts kept in flight beyond `need` (default 0). One spare means a single stalled source
   * costs nothing, at the price of one more request per gather.
   */
  readonly extraAttempts?: number | undefined;
  /** Start one more source when an attempt has not settled after this long (default: never). */
  readonly hedgeAfterMs?: number | undefined;
  /** Abort an attempt that has not settled after this long (default: never). */
  readonly timeoutMs?: number | undefined;
  /** Aborts the whole gather. */
  readonly signal?: AbortSignal | undefined;
}

export interface GatherResult<S, T> {
  readonly successes: ReadonlyArray<{ readonly source: S; readonly value: T }>;
  readonly failures: ReadonlyArray<{ readonly source: S; readonly error: unknown }>;
}

/** The error an attempt sees when it is aborted because it timed out. */
export class GatherTimeoutError extends Error {
  override readonly name = 'GatherTimeoutError';
}

export function gatherFirst<S, T>(
  sources: readonly S[],
  need: number,
  attempt: (source: S, signal: AbortSignal) => Promise<T>,
  options: GatherOptions = {},
): Promise<GatherResult<S, T>> {
  const extra = Math.max(0, Math.floor(options.extraAttempts ?? 0));
  return new Promise((resolve) => {
    const successes: Array<{ source: S; value: T }> = [];
    const failures: Array<{ source: S; error: unknown }> = [];
    const running = new Set<AbortController>();
    const timers = new Set<ReturnType<typeof setTimeout>>();
    let next = 0;
    let done = false;

    const finish = () => {
      if (done) return;
      done = true;
      for (const timer of timers) clearTimeout(timer);
      for (const controller of running) controller.abort();
      running.clear();
      options.signal?.removeEventListener('abort', onOuterAbort);
      resolve({ successes, failures });
    };
    const onOuterAbort = () => finish();

    const settleCheck = () => {
      if (successes.length >= need) return finish();
      if (running.size === 0 && next >= sources.length) return finish();
      // Keep enough attempts in flight to still reach `need` (plus the spares).
      while (!done && running.size + successes.length < need + extra && next < sources.length) start();
      if (running.size === 0 && next >= sources.length) finish();
    };

    const start = () => {
      const source = sources[next++] as S;
      const controller = new AbortController();
      running.add(controller);
      let settled = false;
      const localTimers: Array<ReturnType<typeof setTimeout>> = [];
      const schedule = (ms: number, fn: () => void) => {
        const timer = setTimeout(() => {
          timers.delete(timer);
          fn();
        }, ms);
        timers.add(timer);
        localTimers.push(timer);
      };
      if (options.timeoutMs !== undefined) {
        schedule(options.timeoutMs, () => controller.abort(new GatherTimeoutError('attempt timed out')));
      }
      if (options.hedgeAfterMs !== undefined) {
        schedule(options.hedgeAfterMs, () => {
          if (!settled && !done && next < sources.length) start();
        });
      }
      const settle = (outcome: { value: T } | { error: unknown }) => {
        if (settled) return;
        settled = true;
        for (const timer of localTimers) {
          clearTimeout(timer);
          timers.delete(timer);
        }
        running.delete(controller);
        if (done) return;
        if ('value' in outcome) successes.push({ source, value: outcome.value });
        else failures.push({ source, error: outcome.error });
        settleCheck();
      };
      controller.signal.addEventListener('abort', () => settle({ error: controller.signal.reason }), { once: true });
      Promise.resolve()
        .then(() => attempt(source, controller.signal))
        .then(
          (value) => settle({ value }),
          (error: unknown) => settle({ error }),
        );
    };

    if (options.signal?.aborted) return finish();
    options.signal?.addEventListener('abort', onOuterAbort, { once: true });
    if (need <= 0) return finish();
    settleCheck();
  });
}
