import { createServer, request as httpRequest, type IncomingHttpHeaders } from 'node:http';
import type { AddressInfo } from 'node:net';
import { describe, expect, it } from 'vitest';
import { mergeVary, plainHeaders, setNodeHeaders } from '../src/index.js';

describe('mergeVary', () => {
  it.each([
    [undefined, 'Authorization'],
    [null, 'Authorization'],
    ['', 'Authorization'],
    ['  ', 'Authorization'],
    ['Authorization', 'Authorization'],
    ['Origin', 'Origin, Authorization'],
    ['Origin, Accept-Encoding', 'Origin, Accept-Encoding, Authorization'],
    ['origin, authorization', 'origin, authorization'],
    ['*', '*'],
    [' Origin ,, Accept ', 'Origin, Accept, Authorization'],
  ])('Vary %j gains Authorization once: %j', (existing, merged) => {
    expect(mergeVary(existing)).toBe(merged);
  });
});

describe('plainHeaders', () => {
  it('uses Node request headers as they are when every value is a string', () => {
    const headers: IncomingHttpHeaders = { authorization: 'Bearer x', host: 'a' };
    expect(plainHeaders(headers)).toBe(headers);
  });

  it('joins the one header Node keeps as an array (set-cookie) in a copy', () => {
    const headers: IncomingHttpHeaders = { 'set-cookie': ['a=1', 'b=2'], host: 'a' };
    const plain = plainHeaders(headers);
    expect(plain).toEqual({ 'set-cookie': 'a=1, b=2', host: 'a' });
    expect(headers['set-cookie']).toEqual(['a=1', 'b=2']);
  });
});

describe('setNodeHeaders', () => {
  it("replaces the route's headers except Vary, which keeps the route's values and gains KOS's", async () => {
    const server = createServer((_req, res) => {
      res.setHeader('cache-control', 'public, max-age=60');
      res.setHeader('vary', ['Origin', 'Accept']);
      res.setHeader('x-route', 'kept');
      setNodeHeaders(res, { 'cache-control': 'no-store', vary: 'Authorization', 'kos-tier': 'high' });
      res.end('ok');
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const headers = await new Promise<IncomingHttpHeaders>((resolve, reject) => {
        httpRequest({ host: '127.0.0.1', port: (server.address() as AddressInfo).port }, (res) => {
          res.resume();
          resolve(res.headers);
        })
          .on('error', reject)
          .end();
      });
      expect(headers['cache-control']).toBe('no-store');
      expect(headers.vary).toBe('Origin, Accept, Authorization');
      expect(headers['x-route']).toBe('kept');
      expect(headers['kos-tier']).toBe('high');
    } finally {
      await new Promise((resolve) => server.close(resolve));
    }
  });
});
