import { type ChildProcess, spawn } from 'node:child_process';
import { dirname, join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const CLI = join(root, 'packages/kms-adapters/src/kms-node/cli.ts');

export interface KmsNodeProcessOptions {
  readonly nodeId: string;
  readonly issuer: string;
  readonly jwksPath: string;
  readonly store: 'file' | 'redis' | 'memory';
  readonly dir?: string;
  readonly redisUrl?: string;
  readonly port?: number;
  readonly tls?: { readonly certPath: string; readonly keyPath: string; readonly clientCaPath?: string };
  readonly corsOrigins?: readonly string[];
  /** More flags, after the others (e.g. `['--redis-sentinel', '127.0.0.1:26379', '--redis-master-name', 'm']`). */
  readonly extraArgs?: readonly string[];
  /** More environment variables for the process (e.g. `KOS_REDIS_PASSWORD`). */
  readonly env?: Readonly<Record<string, string>>;
}

/** A real `kos-kms` process on loopback. */
export interface KmsNodeProcess {
  readonly nodeId: string;
  readonly url: string;
  readonly port: number;
  readonly child: ChildProcess;
  /** Lines the process wrote to stderr (for assertions that nothing secret is logged). */
  readonly stderr: string[];
  /** SIGTERM and wait. */
  stop(): Promise<void>;
  /** SIGKILL and wait (a crash). */
  kill(): Promise<void>;
}

function args(options: KmsNodeProcessOptions): string[] {
  const out = [
    '--conditions=kos-source',
    '--import',
    'tsx',
    CLI,
    '--node-id',
    options.nodeId,
    '--issuer',
    options.issuer,
    '--trusted-keys',
    options.jwksPath,
    '--store',
    options.store,
    '--port',
    String(options.port ?? 0),
  ];
  if (options.dir) out.push('--dir', options.dir);
  if (options.redisUrl) out.push('--redis-url', options.redisUrl);
  if (options.tls) {
    out.push('--tls-cert', options.tls.certPath, '--tls-key', options.tls.keyPath);
    if (options.tls.clientCaPath) out.push('--client-ca', options.tls.clientCaPath);
  }
  if (options.corsOrigins?.length) out.push('--cors-origin', ...options.corsOrigins);
  if (options.extraArgs?.length) out.push(...options.extraArgs);
  return out;
}

/** Starts `kos-kms` and resolves once it prints its listening line. */
export function startKmsProcess(options: KmsNodeProcessOptions): Promise<KmsNodeProcess> {
  const child = spawn(process.execPath, args(options), {
    cwd: root,
    stdio: ['ignore', 'pipe', 'pipe'],
    ...(options.env ? { env: { ...process.env, ...options.env } } : {}),
  });
  const stderr: string[] = [];
  createInterface({ input: child.stderr! }).on('line', (line) => stderr.push(line));
  const exited = new Promise<void>((resolveExit) => child.once('exit', () => resolveExit()));
  const stopWith = async (signal: NodeJS.Signals) => {
    if (child.exitCode === null && child.signalCode === null) child.kill(signal);
    await exited;
  };
  return new Promise((resolveStart, rejectStart) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      rejectStart(new Error(`kos-kms ${options.nodeId} did not start in time: ${stderr.join('\n')}`));
    }, 20_000);
    child.once('exit', (code) => {
      clearTimeout(timer);
      rejectStart(new Error(`kos-kms ${options.nodeId} exited with ${code}: ${stderr.join('\n')}`));
    });
    createInterface({ input: child.stdout! }).on('line', (line) => {
      let event: { event?: string; url?: string };
      try {
        event = JSON.parse(line);
      } catch {
        return;
      }
      if (event.event === 'listening' && event.url) {
        clearTimeout(timer);
        const url = event.url;
        resolveStart({
          nodeId: options.nodeId,
          url,
          port: Number(new URL(url).port),
          child,
          stderr,
          stop: () => stopWith('SIGTERM'),
          kill: () => stopWith('SIGKILL'),
        });
      }
    });
  });
}
