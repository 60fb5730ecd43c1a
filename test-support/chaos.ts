import { type ChildProcess, spawn } from 'node:child_process';
import {
  type ClientRequest,
  createServer,
  request as httpRequest,
  type IncomingMessage,
  type ServerResponse,
} from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { dirname, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { isKosError } from '@kos/core';

/**
 * Helpers for the fault (chaos) suites in `tests/chaos/`: bounded waits, a seeded random
 * source (a failing run can be replayed from its seed), a slow proxy in front of a real KMS
 * node, and a line-JSON child process for KOS instances in separate OS processes.
 */

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');

export function sleep(ms: number): Promise<void> {
  return new Promise((resolveSleep) => setTimeout(resolveSleep, ms));
}

/** How a promise ended within a deadline. */
export type Settled<T> =
  | { readonly status: 'resolved'; readonly value: T; readonly ms: number }
  | { readonly status: 'rejected'; readonly error: unknown; readonly ms: number }
  | { readonly status: 'timeout'; readonly ms: number };

/** Waits for `promise` at most `timeoutMs`; never rejects. */
export function settleWithin<T>(promise: Promise<T>, timeoutMs: number): Promise<Settled<T>> {
  const started = performance.now();
  const elapsed = () => Math.round(performance.now() - started);
  return new Promise((resolveSettled) => {
    const timer = setTimeout(() => resolveSettled({ status: 'timeout', ms: elapsed() }), timeoutMs);
    promise.then(
      (value) => {
        clearTimeout(timer);
        resolveSettled({ status: 'resolved', value, ms: elapsed() });
      },
      (error: unknown) => {
        clearTimeout(timer);
        resolveSettled({ status: 'rejected', error, ms: elapsed() });
      },
    );
  });
}

/** The KosError code of `error`, or `untyped:<name>: <message>` for anything else. */
export function errorCode(error: unknown): string {
  if (isKosError(error)) return error.code;
  const name = error instanceof Error ? error.name : typeof error;
  const message = error instanceof Error ? error.message : String(error);
  return `untyped:${name}: ${message.slice(0, 120)}`;
}

/** A small seeded PRNG (mulberry32): the same seed gives the same fault schedule. */
export function seededRandom(seed: number): {
  readonly seed: number;
  next(): number;
  int(min: number, max: number): number;
  pick<T>(items: readonly T[]): T;
} {
  let state = seed >>> 0;
  const next = (): number => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return {
    seed,
    next,
    int: (min, max) => min + Math.floor(next() * (max - min + 1)),
    pick: (items) => {
      if (items.length === 0) throw new Error('pick from an empty list');
      return items[Math.floor(next() * items.length)] as (typeof items)[number];
    },
  };
}

/** Seed from `KOS_CHAOS_SEED` (to replay a run), else a fresh one; tests print it on failure. */
export function chaosSeed(): number {
  // biome-ignore lint/suspicious/noUndeclaredEnvVars: a test-only replay seed, never a build input
  const fromEnv = Number(process.env.KOS_CHAOS_SEED);
  return Number.isInteger(fromEnv) && fromEnv > 0 ? fromEnv : Math.floor(Math.random() * 2 ** 31) + 1;
}

/** A transparent HTTP proxy in front of one KMS node that holds every request before forwarding it. */
export interface SlowProxy {
  /** `http://127.0.0.1:<port>`. */
  readonly url: string;
  /** Requests received. */
  readonly requests: number;
  /** Requests whose response was sent in full. */
  readonly answered: number;
  /** Requests the client gave up on (closed the connection) before the answer was sent. */
  readonly abandoned: number;
  close(): Promise<void>;
}

/**
 * Starts a proxy that waits `delayMs()` before forwarding each request to `target` (a real
 * node), then relays the node's answer unchanged. When the client closes the connection
 * first, the upstream request is cancelled and the request counts as abandoned.
 */
export async function startSlowProxy(target: string, delayMs: () => number): Promise<SlowProxy> {
  const upstream = new URL(target);
  const sockets = new Set<Socket>();
  let requests = 0;
  let answered = 0;
  let abandoned = 0;
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    requests += 1;
    const chunks: Buffer[] = [];
    let forwarded: ClientRequest | undefined;
    let timer: ReturnType<typeof setTimeout> | undefined;
    res.on('error', () => undefined);
    res.once('close', () => {
      if (res.writableFinished) return;
      abandoned += 1;
      if (timer) clearTimeout(timer);
      forwarded?.destroy();
    });
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.once('end', () => {
      timer = setTimeout(() => {
        timer = undefined;
        if (res.destroyed) return;
        forwarded = httpRequest(
          {
            host: upstream.hostname,
            port: upstream.port,
            method: req.method,
            path: req.url,
            headers: { ...req.headers, host: upstream.host },
            agent: false,
          },
          (answer) => {
            res.writeHead(answer.statusCode ?? 502, answer.headers);
            answer.pipe(res);
            answer.once('end', () => {
              answered += 1;
            });
          },
        );
        forwarded.on('error', () => {
          if (!res.headersSent) res.writeHead(502, { 'content-type': 'application/json' });
          res.end('{"error":{"code":"ERR_KMS_UNREACHABLE","message":"proxy upstream failed"}}');
        });
        forwarded.end(Buffer.concat(chunks));
      }, delayMs());
    });
  });
  server.on('connection', (socket: Socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
  });
  await new Promise<void>((resolveListen, rejectListen) => {
    server.once('error', rejectListen);
    server.listen(0, '127.0.0.1', () => resolveListen());
  });
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    get requests() {
      return requests;
    },
    get answered() {
      return answered;
    },
    get abandoned() {
      return abandoned;
    },
    async close() {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolveClose) => server.close(() => resolveClose()));
    },
  };
}

/** A reply from a line-JSON child: `{ id, ok: true, ...result }` or `{ id, ok: false, code, message }`. */
export type JsonReply = {
  readonly id: number;
  readonly ok: boolean;
  readonly code?: string;
  readonly message?: string;
} & Record<string, unknown>;

/** A child process spoken to in JSON lines: one request per stdin line, one reply per stdout line (by `id`). */
export interface JsonProcess {
  readonly child: ChildProcess;
  /** Sends `message` (an `id` is added) and resolves its reply; rejects after `timeoutMs` or when the child exits. */
  request(message: Record<string, unknown>, timeoutMs?: number): Promise<JsonReply>;
  /** Everything the child wrote to stderr. */
  stderr(): string;
  /** Sends `signal` (default SIGKILL) and waits for the exit. */
  kill(signal?: NodeJS.Signals): Promise<void>;
  /** Closes stdin (the child exits on its own) and waits; SIGKILL after 5 s. */
  stop(): Promise<void>;
}

/**
 * Starts `node --conditions=kos-source --import tsx <script> ...args` from the repo root and
 * resolves once it prints `{"ready":true}`.
 */
export function startJsonProcess(
  script: string,
  args: readonly string[],
  startTimeoutMs = 20_000,
): Promise<JsonProcess> {
  const child = spawn(process.execPath, ['--conditions=kos-source', '--import', 'tsx', script, ...args], {
    cwd: root,
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr?.setEncoding('utf8').on('data', (chunk: string) => {
    stderr = (stderr + chunk).slice(-32_768);
  });
  const pending = new Map<number, { resolve: (reply: JsonReply) => void; reject: (error: Error) => void }>();
  let nextId = 1;
  let onReady: (() => void) | undefined;
  const exited = new Promise<void>((resolveExit) => {
    child.once('exit', () => {
      for (const waiter of pending.values()) waiter.reject(new Error(`${script} exited: ${stderr.slice(-2000)}`));
      pending.clear();
      resolveExit();
    });
  });
  createInterface({ input: child.stdout! }).on('line', (line) => {
    let reply: JsonReply & { ready?: boolean };
    try {
      reply = JSON.parse(line);
    } catch {
      return;
    }
    if (reply.ready === true) {
      onReady?.();
      return;
    }
    const waiter = pending.get(reply.id);
    if (waiter) {
      pending.delete(reply.id);
      waiter.resolve(reply);
    }
  });
  const running = () => child.exitCode === null && child.signalCode === null;
  const handle: JsonProcess = {
    child,
    request(message, timeoutMs = 30_000) {
      const id = nextId++;
      return new Promise((resolveReply, rejectReply) => {
        if (!running()) {
          rejectReply(new Error(`${script} is not running`));
          return;
        }
        const timer = setTimeout(() => {
          pending.delete(id);
          rejectReply(
            new Error(`${script} did not answer ${JSON.stringify(message).slice(0, 200)} in ${timeoutMs} ms`),
          );
        }, timeoutMs);
        pending.set(id, {
          resolve: (reply) => {
            clearTimeout(timer);
            resolveReply(reply);
          },
          reject: (error) => {
            clearTimeout(timer);
            rejectReply(error);
          },
        });
        child.stdin?.write(`${JSON.stringify({ ...message, id })}\n`);
      });
    },
    stderr: () => stderr,
    async kill(signal = 'SIGKILL') {
      if (running()) child.kill(signal);
      await exited;
    },
    async stop() {
      if (!running()) return;
      child.stdin?.end();
      const timer = setTimeout(() => child.kill('SIGKILL'), 5_000);
      await exited;
      clearTimeout(timer);
    },
  };
  return new Promise((resolveStart, rejectStart) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      rejectStart(new Error(`${script} did not get ready in ${startTimeoutMs} ms: ${stderr}`));
    }, startTimeoutMs);
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      rejectStart(new Error(`${script} exited (${code ?? signal}) before it was ready: ${stderr}`));
    });
    onReady = () => {
      clearTimeout(timer);
      resolveStart(handle);
    };
  });
}
