import { execFile } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import type { EnvelopeJson } from '@kos/core';
import { createKosRuntime, type KosRuntime, loadKosConfigFile } from '@kos/kms-adapters';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const execute = promisify(execFile);
const NODE_ARGS = ['--conditions=kos-source', '--import', 'tsx'];
const KOS = join(root, 'packages/kms-adapters/src/cli/kos.ts');

/**
 * `kos keys retire` / `kos keys reinstate` as an operator runs them, as separate processes
 * against a KOS made by `kos init` (file metadata, five file-backed nodes): the data sealed
 * under each version is opened by a runtime of its own after every step.
 */
describe('kos keys retire and reinstate', () => {
  let dir: string;
  let config: string;
  const sealed = new Map<number, EnvelopeJson>();

  const kos = async (...args: string[]) => {
    try {
      const { stdout, stderr } = await execute(process.execPath, [...NODE_ARGS, KOS, '--config', config, ...args], {
        cwd: root,
        timeout: 60_000,
      });
      return { code: 0, stdout, stderr };
    } catch (error) {
      const failed = error as { code: number; stdout: string; stderr: string };
      return { code: failed.code, stdout: failed.stdout, stderr: failed.stderr };
    }
  };
  const json = async (...args: string[]) => {
    const result = await kos('--json', ...args);
    expect(result.code, result.stderr).toBe(0);
    return JSON.parse(result.stdout);
  };

  /** Opens the record sealed under each version, with a runtime of its own (what an app instance sees). */
  async function openEach(): Promise<Record<number, string>> {
    const runtime = await createKosRuntime({ config: loadKosConfigFile(config), env: {} });
    try {
      const outcome: Record<number, string> = {};
      for (const [version, envelope] of sealed) {
        outcome[version] = await runtime.kos.keys.open(envelope, { dataId: `r${version}` }).then(
          (bytes) => JSON.parse(new TextDecoder().decode(bytes)) as string,
          (error: { code?: string }) => error.code ?? 'error',
        );
      }
      return outcome;
    } finally {
      await runtime.close();
    }
  }

  async function shareFiles(): Promise<number> {
    let count = 0;
    for (let i = 1; i <= 5; i++) {
      count += (await readdir(join(dir, '.kos', 'nodes', `node-${i}`, 'shares')).catch(() => [])).length;
    }
    return count;
  }

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'kos-keys-'));
    config = join(dir, '.kos', 'kos.config.json');
    await execute(process.execPath, [...NODE_ARGS, KOS, '--dir', join(dir, '.kos'), 'init'], { cwd: root });
    expect((await kos('rotate', '--create', 'records', 'other')).code).toBe(0);
    // Data under versions 1, 2 and 3 of "records".
    const runtime: KosRuntime = await createKosRuntime({ config: loadKosConfigFile(config), env: {} });
    try {
      for (let version = 1; version <= 3; version++) {
        if (version > 1) await runtime.kos.keys.rotate('records');
        sealed.set(version, await runtime.kos.seal('records', `v${version}`, { dataId: `r${version}` }));
      }
    } finally {
      await runtime.close();
    }
  }, 120_000);

  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('--help explains the command, its options and the order of things', async () => {
    const help = await kos('keys', 'retire', '--help');
    expect(help.code).toBe(0);
    expect(help.stdout).toContain('Usage: kos keys retire [options] [kid] [version]');
    for (const option of ['--old', '--all', '--destroy', '--dry-run']) expect(help.stdout).toContain(option);
    expect(help.stdout).toMatch(/Rewrap the data first/);
    expect((await kos('keys', '--help')).stdout).toMatch(/retire[\s\S]*reinstate/);
    expect((await kos('--help')).stdout).toMatch(/keys/);
  });

  it('refuses to retire the primary version, saying what to do instead; nothing changes', async () => {
    const refused = await kos('keys', 'retire', 'records', '3');
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(
      /^kos: ERR_KEY_VERSION_STATE: records v3 is the primary version .* rotate first \(kos rotate records\), rewrap the data \(kos rewrap\), then retire v3/,
    );
    expect(await openEach()).toEqual({ 1: 'v1', 2: 'v2', 3: 'v3' });
  });

  it('refuses bad input with typed codes', async () => {
    const cases: Array<[string[], RegExp]> = [
      [['keys', 'retire', 'records', 'two'], /ERR_INVALID_ARGUMENT: version must be a positive integer/],
      [['keys', 'retire', 'records', '0'], /ERR_INVALID_ARGUMENT/],
      [['keys', 'retire', 'records', '9'], /ERR_KEY_VERSION_NOT_FOUND: records has no version 9/],
      [['keys', 'retire', 'nope', '1'], /ERR_KEY_NOT_FOUND/],
      [['keys', 'retire', 'records'], /ERR_INVALID_ARGUMENT: name the newest version to retire, or --old/],
      [['keys', 'retire', 'records', '1', '--old'], /ERR_INVALID_ARGUMENT: give a version or --old/],
      [['keys', 'retire', '--all'], /ERR_INVALID_ARGUMENT: --all goes with --old/],
      [['keys', 'retire', 'records', '--all', '--old'], /ERR_INVALID_ARGUMENT: give a key id or --all/],
    ];
    for (const [args, message] of cases) {
      const result = await kos(...args);
      expect(result.code, args.join(' ')).toBe(1);
      expect(result.stderr, args.join(' ')).toMatch(message);
    }
  });

  it('--dry-run shows what would change and changes nothing', async () => {
    const result = await json('keys', 'retire', 'records', '--old', '--destroy', '--dry-run');
    expect(result).toMatchObject({
      dryRun: true,
      keys: [{ kid: 'records', primary: 3, minDecryptVersion: 3, retired: [1, 2], destroyed: [1, 2] }],
    });
    expect(await openEach()).toEqual({ 1: 'v1', 2: 'v2', 3: 'v3' });
  });

  it('retires a version and every older one: they stop decrypting, newer ones go on', async () => {
    const result = await json('keys', 'retire', 'records', '1');
    expect(result).toEqual({
      dryRun: false,
      failed: [],
      keys: [
        {
          kid: 'records',
          primary: 3,
          minDecryptVersionBefore: 1,
          minDecryptVersion: 2,
          retired: [1],
          destroyed: [],
          versions: [
            { version: 1, state: 'retired' },
            { version: 2, state: 'decrypt-only' },
            { version: 3, state: 'active' },
          ],
        },
      ],
    });
    expect(await openEach()).toEqual({ 1: 'ERR_KEY_VERSION_RETIRED', 2: 'v2', 3: 'v3' });
    // Again: nothing new, and never a lower minimum.
    const again = await kos('keys', 'retire', 'records', '1');
    expect(again.stdout).toMatch(/retired records: nothing new \(primary v3, min decrypt v2 → v2\)/);
    const status = JSON.parse((await kos('--json', 'status')).stdout);
    expect(status.keys.find((key: { kid: string }) => key.kid === 'records').minDecryptVersion).toBe(2);
  });

  it('reinstate makes a retired version decrypt again', async () => {
    const result = await json('keys', 'reinstate', 'records', '1');
    expect(result).toMatchObject({ minDecryptVersionBefore: 2, minDecryptVersion: 1 });
    expect(await openEach()).toEqual({ 1: 'v1', 2: 'v2', 3: 'v3' });
  });

  it('--old --destroy retires and destroys all but the primary: shares deleted on every node, for good', async () => {
    const before = await shareFiles();
    const text = await kos('keys', 'retire', 'records', '--old', '--destroy');
    expect(text.code, text.stderr).toBe(0);
    expect(text.stdout).toMatch(/^retired records: v1, v2; destroyed v1, v2 \(primary v3, min decrypt v1 → v3\)/);
    // Two versions' system sets (n = 5, one share per node each) are gone.
    expect(await shareFiles()).toBe(before - 10);
    expect(await openEach()).toEqual({ 1: 'ERR_KEY_VERSION_DESTROYED', 2: 'ERR_KEY_VERSION_DESTROYED', 3: 'v3' });
    const back = await kos('keys', 'reinstate', 'records', '2');
    expect(back.code).toBe(1);
    expect(back.stderr).toMatch(/ERR_KEY_VERSION_DESTROYED: records v2 was destroyed and cannot come back/);
    // The audit trail (one file per kos process) recorded both steps.
    const audit = join(dir, '.kos', 'audit');
    const records = (
      await Promise.all(
        (await readdir(audit)).filter((f) => f.endsWith('.jsonl')).map((f) => readFile(join(audit, f), 'utf8')),
      )
    )
      .join('\n')
      .split('\n')
      .filter((line) => line.startsWith('{'))
      .map((line) => (JSON.parse(line) as { record?: { type: string; kid?: string; version?: number } }).record)
      .filter((record) => record !== undefined);
    expect(records).toContainEqual(
      expect.objectContaining({ type: 'key.versions-retired', kid: 'records', version: 3 }),
    );
    expect(records).toContainEqual(
      expect.objectContaining({ type: 'key.version-destroyed', kid: 'records', version: 1 }),
    );
    expect(records).toContainEqual(
      expect.objectContaining({ type: 'key.version-destroyed', kid: 'records', version: 2 }),
    );
    const status = JSON.parse((await kos('--json', 'status')).stdout);
    expect(status.keys.find((key: { kid: string }) => key.kid === 'records').versions).toEqual([
      expect.objectContaining({ version: 1, state: 'destroyed' }),
      expect.objectContaining({ version: 2, state: 'destroyed' }),
      expect.objectContaining({ version: 3, state: 'active' }),
    ]);
  });

  it('--all --old goes through every key; a key with only its primary is left alone', async () => {
    await kos('rotate', 'other');
    const result = await json('keys', 'retire', '--all', '--old');
    expect(result.failed).toEqual([]);
    expect(result.keys.map((key: { kid: string; retired: number[] }) => [key.kid, key.retired])).toEqual([
      ['other', [1]],
      ['records', []],
    ]);
  });
});
