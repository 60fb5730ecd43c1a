import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');

/** Every module reachable from `entry` through relative imports. */
function reachable(entry: string, seen = new Set<string>()): Set<string> {
  if (seen.has(entry)) return seen;
  seen.add(entry);
  const source = readFileSync(entry, 'utf8');
  // Type-only imports are erased at build time and do not count.
  for (const [, typeOnly, specifier] of source.matchAll(/(?:import|export)\s+(type\s+)?[^;]*?from '(\.[^']+)'/g)) {
    if (!typeOnly) reachable(resolve(dirname(entry), (specifier as string).replace(/\.js$/, '.ts')), seen);
  }
  return seen;
}

describe('package surfaces', () => {
  it.each(['web', 'client'])('@kos/core/%s reaches no Node built-in (it must run in browsers)', (entry) => {
    const files = reachable(join(root, `packages/core/src/${entry}.ts`));
    expect(files.size).toBeGreaterThan(5);
    for (const file of files) {
      expect(readFileSync(file, 'utf8'), file).not.toMatch(/from 'node:|require\(|\bBuffer\.(alloc|concat)/);
    }
  });

  it('the built packages load without the source condition and ship types', () => {
    for (const pkg of ['core', 'kms-adapters']) {
      expect(existsSync(join(root, `packages/${pkg}/dist/index.d.ts`)), `run npm run build first (${pkg})`).toBe(true);
    }
    const script = `
      const core = await import('@kos/core');
      const web = await import('@kos/core/web');
      const client = await import('@kos/core/client');
      const adapters = await import('@kos/kms-adapters');
      console.log(JSON.stringify([typeof core.KeyManager, typeof web.openWithKey, typeof client.createOpener, typeof adapters.createFileShareStore]));
    `;
    const out = execFileSync(process.execPath, ['--input-type=module', '-e', script], { cwd: root, encoding: 'utf8' });
    expect(JSON.parse(out)).toEqual(['function', 'function', 'function', 'function']);
  });
});
