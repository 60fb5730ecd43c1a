import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { createKosRuntime, loadKosConfigFile } from '@kos/kms-adapters';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const execute = promisify(execFile);
const NODE_ARGS = ['--conditions=kos-source', '--import', 'tsx'];
const KOS = join(root, 'packages/kms-adapters/src/cli/kos.ts');

const PERIOD_MS = 6000;

function sleep(ms: number): Promise<void> {
  return new Promise((resolveSleep) => setTimeout(resolveSleep, ms));
}

/**
 * Scheduled rotation set in the JSON configuration: `rotationPeriodMs` makes keys due (`kos
 * status`, `kos rotate --due`), `rotationCheckIntervalMs` makes an instance rotate them itself.
 * A KOS made by `kos init` (file metadata, five file nodes), its kos.config.json edited as an
 * operator would.
 */
describe('rotationPeriodMs and rotationCheckIntervalMs from the JSON configuration', () => {
  let dir: string;
  let config: string;
  let original: Record<string, unknown>;

  const kos = async (...args: string[]) =>
    execute(process.execPath, [...NODE_ARGS, KOS, '--config', config, ...args], { cwd: root, timeout: 60_000 }).then(
      ({ stdout, stderr }) => ({ code: 0, stdout, stderr }),
      (error: { code: number; stdout: string; stderr: string }) => error,
    );
  const writeConfig = (extra: object) => writeFile(config, JSON.stringify({ ...original, ...extra }));
  const primaryOf = async (kid: string) =>
    (
      JSON.parse((await kos('--json', 'status')).stdout).keys as Array<{ kid: string; primary: number; due: boolean }>
    ).find((key) => key.kid === kid);

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'kos-schedule-'));
    config = join(dir, '.kos', 'kos.config.json');
    await execute(process.execPath, [...NODE_ARGS, KOS, '--dir', join(dir, '.kos'), 'init'], { cwd: root });
    original = JSON.parse(await readFile(config, 'utf8'));
  }, 60_000);

  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('without rotationPeriodMs a key is never due by age', { timeout: 30_000 }, async () => {
    expect((await kos('rotate', '--create', 'cron-key')).code).toBe(0);
    // Old enough for the period of the next case, which a key made during that case is not.
    await sleep(PERIOD_MS + 200);
    expect(await primaryOf('cron-key')).toMatchObject({ primary: 1, due: false });
  });

  it('with rotationPeriodMs, kos status shows a key past it as due and kos rotate --due rotates only that', async () => {
    await writeConfig({ rotationPeriodMs: PERIOD_MS });
    expect(await primaryOf('cron-key')).toMatchObject({ primary: 1, due: true });
    expect((await kos('status')).stdout).toMatch(/cron-key: primary v1, min decrypt v1, DUE for rotation/);
    expect((await kos('rotate', '--create', 'fresh-key')).code).toBe(0);
    const rotated = await kos('--json', 'rotate', '--due');
    expect(rotated.code, rotated.stderr).toBe(0);
    // The key made a moment ago is not yet due.
    expect(JSON.parse(rotated.stdout).rotated).toEqual(['cron-key']);
    expect(await primaryOf('cron-key')).toMatchObject({ primary: 2, due: false });
    expect(await primaryOf('fresh-key')).toMatchObject({ primary: 1 });
  });

  it('refuses a bad value with the field named, before touching anything', async () => {
    for (const value of [-5, 0, 999, '90d', 1.5]) {
      await writeConfig({ rotationPeriodMs: value });
      const result = await kos('status');
      expect(result.code, String(value)).toBe(1);
      expect(result.stderr).toMatch(
        /^kos: ERR_INVALID_OPTIONS: KOS configuration: rotationPeriodMs must be an integer/,
      );
    }
    await writeConfig({ rotationPeriodMs: 1000, rotationCheckIntervalMs: 500 });
    expect((await kos('status')).stderr).toMatch(
      /rotationCheckIntervalMs must be an integer number of milliseconds, 1000–86400000/,
    );
  });

  it('with rotationCheckIntervalMs an instance rotates due keys itself, logs it, and stops when closed', {
    timeout: 30_000,
  }, async () => {
    await writeConfig({ rotationPeriodMs: 1000, rotationCheckIntervalMs: 1000 });
    const logged: Array<{ object: object; message: string | undefined }> = [];
    const logger = {
      info: (object: object, message?: string) => logged.push({ object, message }),
      warn: (object: object, message?: string) => logged.push({ object, message }),
      error: () => {},
      debug: () => {},
    };
    const before = (await primaryOf('fresh-key'))?.primary as number;
    const runtime = await createKosRuntime({ config: loadKosConfigFile(config), env: {}, logger });
    try {
      const deadline = Date.now() + 15_000;
      while ((await runtime.kos.keys.getKey('fresh-key')).primaryVersion === before) {
        if (Date.now() > deadline) throw new Error('the scheduler did not rotate fresh-key');
        await sleep(200);
      }
      expect(logged).toContainEqual({
        object: { kids: expect.arrayContaining(['fresh-key']) },
        message: 'kos: scheduled rotation',
      });
    } finally {
      await runtime.close();
    }
    // Closed: no more rotations from it.
    const after = (await primaryOf('fresh-key'))?.primary as number;
    await sleep(2500);
    expect((await primaryOf('fresh-key'))?.primary).toBe(after);
    await writeConfig({});
  });
});
