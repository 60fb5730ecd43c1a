/**
 * The hand-rolled sampler the benchmark scripts share: interleaved warm-up, a batch size
 * calibrated per case, then samples taken in rounds (one sample of every case per round, in a
 * rotated order) so that compared cases see the same machine conditions.
 */

export interface SamplerOptions {
  /** Sampling time per case (all cases of a group share rounds, so a group gets cases x this). */
  readonly perCaseMs: number;
  /** Warm-up time per case, interleaved. */
  readonly warmupMs: number;
  /** Target duration of one sample (one batch). */
  readonly sampleTargetMs: number;
  readonly minRounds: number;
  readonly maxRounds: number;
}

export interface Case {
  /** Unique id, also the JSON key. */
  readonly id: string;
  readonly label: string;
  /** Payload bytes per op (for MB/s). */
  readonly bytes?: number;
  /** Id of the case this one is compared with (same group). */
  readonly baseline?: string;
  readonly fn: () => unknown;
}

export interface Group {
  readonly name: string;
  readonly cases: readonly Case[];
}

export interface Result {
  readonly group: string;
  readonly id: string;
  readonly label: string;
  readonly bytes: number | null;
  readonly baseline: string | null;
  readonly medianNs: number;
  readonly p25Ns: number;
  readonly p75Ns: number;
  readonly usPerOp: number;
  readonly mbPerSec: number | null;
  /** Median of per-round (case / baseline) time ratios; > 1 means slower than the baseline. */
  readonly ratio: number | null;
  /** Ratio of the two medians, for comparison with `ratio`. */
  readonly ratioOfMedians: number | null;
  readonly samples: number;
  readonly batch: number;
}

/** Keeps every result observable (so no call can be optimised away) and counts the ops run. */
export const sink: { last: unknown; ops: number } = { last: undefined, ops: 0 };

export function quantile(sorted: readonly number[], q: number): number {
  if (sorted.length === 0) return Number.NaN;
  const at = (sorted.length - 1) * q;
  const lo = Math.floor(at);
  const hi = Math.ceil(at);
  return (sorted[lo] as number) + ((sorted[hi] as number) - (sorted[lo] as number)) * (at - lo);
}

export function median(values: readonly number[]): number {
  return quantile(
    [...values].sort((a, b) => a - b),
    0.5,
  );
}

/** Runs `n` ops and returns the elapsed nanoseconds. Sync ops are not awaited. */
async function batch(fn: () => unknown, isAsync: boolean, n: number): Promise<number> {
  const start = process.hrtime.bigint();
  if (isAsync) {
    for (let i = 0; i < n; i++) sink.last = await fn();
  } else {
    for (let i = 0; i < n; i++) sink.last = fn();
  }
  const elapsed = Number(process.hrtime.bigint() - start);
  sink.ops += n;
  return elapsed;
}

export async function runGroup(group: Group, options: SamplerOptions): Promise<Result[]> {
  const { cases } = group;
  const isAsync = new Map<string, boolean>();
  for (const c of cases) {
    const first = c.fn();
    isAsync.set(c.id, first instanceof Promise);
    sink.last = await first;
  }
  // Warm-up, interleaved so every case is JIT-compiled under the same conditions.
  const warmEnd = performance.now() + options.warmupMs * cases.length;
  while (performance.now() < warmEnd) {
    for (const c of cases) await batch(c.fn, isAsync.get(c.id) as boolean, 8);
  }
  // Calibrate a batch size per case so one sample takes about sampleTargetMs. The best of
  // three probes is used, so one slow op (GC, a metadata round trip) does not shrink the batch.
  const sizes = new Map<string, number>();
  for (const c of cases) {
    const async = isAsync.get(c.id) as boolean;
    let best = Number.POSITIVE_INFINITY;
    for (let probe = 0; probe < 3; probe++) best = Math.min(best, (await batch(c.fn, async, 8)) / 8);
    sizes.set(c.id, Math.max(1, Math.min(1 << 20, Math.round((options.sampleTargetMs * 1e6) / Math.max(best, 1)))));
  }
  // Sampling rounds.
  const samples = new Map<string, number[]>(cases.map((c) => [c.id, []]));
  const deadline = performance.now() + options.perCaseMs * cases.length;
  let round = 0;
  while (round < options.maxRounds && (round < options.minRounds || performance.now() < deadline)) {
    for (let j = 0; j < cases.length; j++) {
      const c = cases[(round + j) % cases.length] as Case;
      const n = sizes.get(c.id) as number;
      const ns = await batch(c.fn, isAsync.get(c.id) as boolean, n);
      (samples.get(c.id) as number[]).push(ns / n);
    }
    round++;
  }
  const medians = new Map(cases.map((c) => [c.id, median(samples.get(c.id) as number[])]));
  return cases.map((c) => {
    const own = samples.get(c.id) as number[];
    const sorted = [...own].sort((a, b) => a - b);
    const med = medians.get(c.id) as number;
    let ratio: number | null = null;
    let ratioOfMedians: number | null = null;
    if (c.baseline !== undefined) {
      const base = samples.get(c.baseline);
      if (!base) throw new Error(`case ${c.id}: baseline ${c.baseline} is not in group ${group.name}`);
      ratio = median(own.map((value, i) => value / (base[i] as number)));
      ratioOfMedians = med / (medians.get(c.baseline) as number);
    }
    return {
      group: group.name,
      id: c.id,
      label: c.label,
      bytes: c.bytes ?? null,
      baseline: c.baseline ?? null,
      medianNs: med,
      p25Ns: quantile(sorted, 0.25),
      p75Ns: quantile(sorted, 0.75),
      usPerOp: med / 1e3,
      mbPerSec: c.bytes === undefined ? null : (c.bytes * 1e3) / med,
      ratio,
      ratioOfMedians,
      samples: own.length,
      batch: sizes.get(c.id) as number,
    };
  });
}
