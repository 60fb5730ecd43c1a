import { createServer as createHttpServer, type ServerResponse } from 'node:http';
import { type AddressInfo, createServer as createNetServer, type Server, type Socket } from 'node:net';

/**
 * Stand-ins for a broken KMS node on 127.0.0.1, for fault tests: each ignores the path and
 * the credentials it is sent and misbehaves in one way.
 *
 * - `hang`: accepts the TCP connection and never writes a byte.
 * - `garbage`: 200 with a body that is not JSON.
 * - `huge`: 200 with a JSON-looking body of `bytes` (default 1 MiB), with or without
 *   `content-length` (without: chunked transfer encoding).
 * - `json`: 200 (or `status`) with the given JSON body (e.g. a well-formed but wrong share).
 */
export type Misbehavior =
  | { readonly kind: 'hang' }
  | { readonly kind: 'garbage' }
  | { readonly kind: 'huge'; readonly contentLength: boolean; readonly bytes?: number }
  | { readonly kind: 'json'; readonly body: unknown; readonly status?: number };

export interface MisbehavingNode {
  /** `http://127.0.0.1:<port>`. */
  readonly url: string;
  /** TCP connections accepted so far (a client may open spare ones it never uses). */
  readonly connections: number;
  /** Requests received (for `hang`: connections on which the client sent anything). */
  readonly requests: number;
  /** Connections still open (the peer has not closed them). */
  readonly openConnections: number;
  /** Resolves once no connection is open (immediately when none is). */
  allClosed(): Promise<void>;
  /** Closes the server and destroys every connection. */
  close(): Promise<void>;
}

const MIB = 1024 * 1024;

function respond(behavior: Exclude<Misbehavior, { kind: 'hang' }>, res: ServerResponse): void {
  res.on('error', () => undefined);
  switch (behavior.kind) {
    case 'garbage':
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end('<html>this is not JSON</html>');
      return;
    case 'json': {
      const body = JSON.stringify(behavior.body);
      res.writeHead(behavior.status ?? 200, {
        'content-type': 'application/json',
        'content-length': String(Buffer.byteLength(body)),
      });
      res.end(body);
      return;
    }
    case 'huge': {
      const total = behavior.bytes ?? MIB;
      res.writeHead(200, {
        'content-type': 'application/json',
        ...(behavior.contentLength ? { 'content-length': String(total) } : {}),
      });
      // Without content-length Node uses chunked encoding; write in pieces so the client
      // sees a stream that keeps growing rather than one declared size.
      const chunk = Buffer.alloc(64 * 1024, 0x61);
      let sent = 0;
      const pump = (): void => {
        while (sent < total && !res.destroyed) {
          const piece = chunk.subarray(0, Math.min(chunk.length, total - sent));
          sent += piece.length;
          if (!res.write(piece)) {
            res.once('drain', pump);
            return;
          }
        }
        if (!res.destroyed) res.end();
      };
      pump();
      return;
    }
  }
}

/** Starts one misbehaving node on a free loopback port. */
export async function startMisbehavingNode(behavior: Misbehavior): Promise<MisbehavingNode> {
  const sockets = new Set<Socket>();
  let connections = 0;
  let requests = 0;
  let waiters: Array<() => void> = [];
  const track = (socket: Socket): void => {
    connections += 1;
    sockets.add(socket);
    socket.on('error', () => undefined);
    socket.once('close', () => {
      sockets.delete(socket);
      if (sockets.size === 0) {
        const ready = waiters;
        waiters = [];
        for (const wake of ready) wake();
      }
    });
  };
  let server: Server;
  if (behavior.kind === 'hang') {
    server = createNetServer((socket) => {
      track(socket);
      // Read and discard the request; never answer.
      socket.once('data', () => {
        requests += 1;
      });
      socket.resume();
    });
  } else {
    const http = createHttpServer((req, res) => {
      requests += 1;
      req.resume();
      respond(behavior, res);
    });
    http.on('connection', track);
    // Long enough that only the client can close a connection within a test.
    http.keepAliveTimeout = 60_000;
    server = http;
  }
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    get connections() {
      return connections;
    },
    get requests() {
      return requests;
    },
    get openConnections() {
      return sockets.size;
    },
    allClosed() {
      if (sockets.size === 0) return Promise.resolve();
      return new Promise((resolve) => waiters.push(resolve));
    },
    async close() {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
