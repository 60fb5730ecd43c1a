import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..');

interface SoakReport {
  interrupted: boolean;
  requests: number;
  errors: {
    expected: number;
    unexpected: number;
    byCode: Record<string, { total: number; expected: number; unexpected: number }>;
    unexpectedSamples: unknown[];
  };
  wrongPlaintexts: number;
  latency: Record<string, { count: number; p50Ms: number; p99Ms: number }>;
  chaos: { kills: number; restarts: number; unexpectedExits: number; maxDownSeen: number };
  memory: {
    gcForced: boolean;
    heapGrowthPct: number | undefined;
    objectsGrowthPct: number | undefined;
    rssGrowthPct: number | undefined;
  };
  processes: { started: number; pids: number[]; stillRunning: number };
  dataDir: string;
  failures: string[];
}

interface SoakRun {
  code: number | null;
  report: SoakReport;
  stderr: string;
  /** Milliseconds from the interrupt (if any) to the script's exit. */
  exitAfterInterruptMs?: number;
}

/** Runs `scripts/soak.ts --json` as `npm run soak` does, optionally sending SIGINT once the soak phase runs. */
function runSoak(args: readonly string[], interruptAfterSoakStartMs?: number): Promise<SoakRun> {
  const child: ChildProcess = spawn(
    process.execPath,
    ['--expose-gc', '--conditions=kos-source', '--import', 'tsx', 'scripts/soak.ts', ...args, '--json'],
    { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let stdout = '';
  let stderr = '';
  let interruptedAt: number | undefined;
  child.stdout?.on('data', (chunk) => {
    stdout += chunk;
  });
  child.stderr?.on('data', (chunk) => {
    stderr += chunk;
    if (interruptAfterSoakStartMs !== undefined && interruptedAt === undefined && /\[soak\] soak /.test(stderr)) {
      interruptedAt = -1;
      setTimeout(() => {
        interruptedAt = Date.now();
        child.kill('SIGINT');
      }, interruptAfterSoakStartMs);
    }
  });
  return new Promise((resolveRun, rejectRun) => {
    child.once('error', rejectRun);
    child.once('exit', (code) => {
      const line = stdout.trim().split('\n').pop() ?? '';
      let report: SoakReport;
      try {
        report = JSON.parse(line);
      } catch {
        rejectRun(new Error(`soak printed no JSON report (exit ${code}):\n${stderr}\n${stdout}`));
        return;
      }
      resolveRun({
        code,
        report,
        stderr,
        ...(interruptedAt && interruptedAt > 0 ? { exitAfterInterruptMs: Date.now() - interruptedAt } : {}),
      });
    });
  });
}

function isRunning(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/**
 * The soak's short form (issue 5): a real deployment on loopback (the Express example on a
 * configured runtime, five `kos-kms` processes) under mixed-tier traffic while node processes
 * are SIGKILLed and restarted. The long form and its figures are in docs/benchmarks.md "Soak".
 */
describe('soak (short form)', () => {
  it('mixed-tier traffic with nodes killed and restarted: no unexpected error, no wrong plaintext, every process stopped', async () => {
    // Two library problems the soak found (docs/benchmarks.md "Soak") would make this test fail
    // for reasons this test is not about; both are worked around here, not in the script's
    // defaults, so a plain `npm run soak` still shows them:
    // --clear-stale-locks: a kos-kms process SIGKILLed while it holds its replay-cache file lock
    //   leaves the lock behind, and the restarted node then hangs every grant redemption until
    //   the lock is 10 s stale (proper-lockfile `stale`). The harness removes the dead process's
    //   lock before each restart.
    // --share-timeout-ms 10000: a restarted node's first grant redemption sweeps its whole
    //   file replay cache under that lock (one read, and for expired entries an unlink + fsync,
    //   each), and a loaded CI machine is slow anyway; with two other nodes down, a k = 3 read
    //   has no node to hedge to and the 3 s default fails it. This test is about correctness
    //   (right plaintext, only expected error codes), not latency.
    //
    // Memory: an 8 s run takes its start and end samples ~10 s apart on a ~17 MiB heap of
    // objects, where the records written during the run (kept by the example app), caches
    // still filling towards their bounds and GC timing move it by several % on their own. So
    // the short form only guards against a gross leak (doubling); the 10 % target is for the
    // long form (`npm run soak -- --seconds 120`, default --max-growth-pct 10), whose figures
    // are in docs/benchmarks.md.
    const { code, report, stderr } = await runSoak([
      '--seconds',
      '8',
      '--warmup',
      '2',
      '--seed',
      '1',
      '--clear-stale-locks',
      '--share-timeout-ms',
      '10000',
      '--max-growth-pct',
      '100',
    ]);
    const context = JSON.stringify({ failures: report.failures, samples: report.errors.unexpectedSamples, stderr });
    expect(report.errors.unexpected, context).toBe(0);
    expect(report.wrongPlaintexts, context).toBe(0);
    expect(report.failures, context).toEqual([]);
    expect(code, context).toBe(0);
    expect(report.interrupted).toBe(false);

    // Enough traffic to mean something, in every tier and for writes.
    expect(report.requests).toBeGreaterThan(60);
    for (const tier of ['low', 'medium', 'high', 'write']) expect(report.latency[tier]?.count ?? 0).toBeGreaterThan(0);
    // Chaos happened, stayed within n − k and every killed node came back.
    expect(report.chaos.kills).toBeGreaterThan(0);
    expect(report.chaos.restarts).toBe(report.chaos.kills);
    expect(report.chaos.maxDownSeen).toBeLessThanOrEqual(2);
    expect(report.chaos.unexpectedExits).toBe(0);
    // The only errors allowed are the expected ones (too many nodes down for a k = 4 client).
    for (const [errorCode, count] of Object.entries(report.errors.byCode)) {
      expect(count.unexpected, errorCode).toBe(0);
      expect(errorCode).toBe('ERR_SHARES_INSUFFICIENT');
    }

    expect(report.memory.gcForced).toBe(true);
    expect(report.memory.objectsGrowthPct).toBeLessThan(100);

    expect(report.processes.started).toBeGreaterThanOrEqual(5 + report.chaos.restarts);
    expect(report.processes.stillRunning).toBe(0);
    expect(report.processes.pids.filter(isRunning)).toEqual([]);
    expect(existsSync(report.dataDir)).toBe(false);
  }, 180_000);

  it('SIGINT stops the run promptly, reports it, exits 130 and leaves no process or folder behind', async () => {
    const run = await runSoak(['--seconds', '120', '--warmup', '1', '--seed', '2', '--chaos-interval', '1'], 3000);
    expect(run.code, run.stderr).toBe(130);
    expect(run.report.interrupted).toBe(true);
    expect(run.exitAfterInterruptMs).toBeLessThan(30_000);
    expect(run.report.requests).toBeGreaterThan(0);
    expect(run.report.processes.started).toBeGreaterThanOrEqual(5);
    expect(run.report.processes.stillRunning).toBe(0);
    expect(run.report.processes.pids.filter(isRunning)).toEqual([]);
    expect(existsSync(run.report.dataDir)).toBe(false);
  }, 180_000);
});
