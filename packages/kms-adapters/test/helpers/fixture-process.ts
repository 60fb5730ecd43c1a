import { type ChildProcess, spawn } from 'node:child_process';
import { join, resolve } from 'node:path';

const REPO_ROOT = resolve(import.meta.dirname, '../../../..');
const FIXTURES = resolve(import.meta.dirname, '../fixtures');

export interface FixtureProcess {
  readonly child: ChildProcess;
  /** Resolves once the child has printed `line` on stdout (rejects if it exits first). */
  waitForLine(line: string, timeoutMs?: number): Promise<void>;
  /** Resolves when the child has exited, with everything it printed. */
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }>;
}

/**
 * Runs `test/fixtures/<name>.ts` in a separate Node process, from TypeScript source the way
 * the repo runs everything (`node --conditions=kos-source --import tsx`).
 */
export function spawnFixture(name: string, args: readonly string[]): FixtureProcess {
  const child = spawn(
    process.execPath,
    ['--conditions=kos-source', '--import', 'tsx', join(FIXTURES, `${name}.ts`), ...args],
    { cwd: REPO_ROOT, stdio: ['pipe', 'pipe', 'pipe'] },
  );
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
    stdout += chunk;
  });
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
    stderr += chunk;
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }>(
    (resolveExit) => {
      child.on('close', (code, signal) => resolveExit({ code, signal, stdout, stderr }));
    },
  );

  function waitForLine(line: string, timeoutMs = 20_000): Promise<void> {
    return new Promise((resolveLine, rejectLine) => {
      const timer = setTimeout(() => {
        cleanup();
        rejectLine(new Error(`${name} did not print ${line} within ${timeoutMs} ms; stderr: ${stderr}`));
      }, timeoutMs);
      const check = (): void => {
        if (stdout.split('\n').includes(line)) {
          cleanup();
          resolveLine();
        }
      };
      const onClose = (): void => {
        cleanup();
        rejectLine(new Error(`${name} exited before printing ${line}; stderr: ${stderr}`));
      };
      function cleanup(): void {
        clearTimeout(timer);
        child.stdout?.off('data', check);
        child.off('close', onClose);
      }
      child.stdout?.on('data', check);
      child.on('close', onClose);
      check();
    });
  }

  return { child, waitForLine, exited };
}
