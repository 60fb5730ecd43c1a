import { isKosError } from '@kos/core';
import type { Command } from 'commander';
import { createKosRuntime, type KosRuntime, loadKosConfigFile } from '../runtime/kos-runtime.js';

/** Options every `kos` command shares. */
export interface GlobalOptions {
  readonly config?: string;
  readonly dir?: string;
  readonly json?: boolean;
}

export function globalOptions(command: Command): GlobalOptions {
  return command.optsWithGlobals<GlobalOptions>();
}

/** The running KOS a command works on: `--config` / `$KOS_CONFIG`, else the embedded folder (`--dir`, `$KOS_DIR`, `.kos`). */
export async function openRuntime(options: GlobalOptions): Promise<KosRuntime> {
  const configPath = options.config ?? process.env.KOS_CONFIG;
  if (configPath) {
    // A command is not a long-running instance: it never runs the in-process rotation scheduler
    // (`kos rotate --due` is how a command rotates due keys).
    const { rotationCheckIntervalMs: _scheduler, ...config } = loadKosConfigFile(configPath);
    return createKosRuntime({ config, env: {} });
  }
  return createKosRuntime({
    dir: options.dir ?? process.env.KOS_DIR ?? '.kos',
    env: { NODE_ENV: process.env.NODE_ENV },
  });
}

/** Runs a command body with a runtime, closing it afterwards and turning failures into exit code 1. */
export async function withRuntime(options: GlobalOptions, body: (runtime: KosRuntime) => Promise<void>): Promise<void> {
  const runtime = await openRuntime(options);
  try {
    await body(runtime);
  } finally {
    await runtime.close();
  }
}

/** Prints a result: JSON with `--json`, otherwise the text lines. */
export function print(options: GlobalOptions, json: unknown, text: () => string): void {
  console.log(options.json ? JSON.stringify(json) : text());
}

/** The one way a command fails: a message (and code) on stderr, exit code 1. */
export function fail(error: unknown): never {
  const code = isKosError(error) ? error.code : 'ERR_INTERNAL';
  console.error(`kos: ${code}: ${(error as Error)?.message ?? String(error)}`);
  process.exit(1);
}
