import { once } from 'node:events';
import { createServer, type Server, type Socket } from 'node:net';
import type { Duplex} from 'node:stream';
import { PassThrough, Readable } from 'node:stream';
import { afterEach, describe, expect, it } from 'vitest';
import { AnswerReader, ChunkedEncoder, MAX_HEAD_BYTES, UpstreamPool, UpstreamProtocolError, type UpstreamHead } from './upstream-http.ts';

/** What a reader gave its sink. */
function recorder() {
  const seen = { heads: [] as UpstreamHead[], chunks: [] as Buffer[], ends: [] as boolean[] };
  return {
    seen,
    sink: {
      head: (h: UpstreamHead) => seen.heads.push(h),
      body: (c: Buffer) => seen.chunks.push(c),
      end: (reusable: boolean) => seen.ends.push(reusable),
    },
    body: () => Buffer.concat(seen.chunks).toString('latin1'),
  };
}

/** Feeds `bytes` to a fresh reader in pieces cut at `cuts`, then the close where asked. */
function read(method: string, bytes: string | Buffer, cuts: number[] = [], close = false) {
  const r = recorder();
  const reader = new AnswerReader(method, r.sink);
  const data = Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes, 'latin1');
  let at = 0;
  for (const cut of [...cuts, data.length]) {
    reader.push(data.subarray(at, cut));
    at = cut;
  }
  if (close) reader.close();
  return r;
}

const everyCut = (length: number) => Array.from({ length: length - 1 }, (_, i) => [i + 1]);

describe('reading a service\'s answer (HTTP/1.1 framing)', () => {
  const fixed = 'HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 11\r\nSet-Cookie: a=1\r\nX-Two: 1\r\nX-Two: 2\r\n\r\nhello world';

  it('reads a head and a body of a given length, cut anywhere, and lets the connection be used again', () => {
    for (const cuts of [[], ...everyCut(fixed.length)]) {
      const r = read('GET', fixed, cuts);
      expect(r.seen.heads).toHaveLength(1);
      expect(r.seen.heads[0]).toEqual({
        statusCode: 200, statusMessage: 'OK', framing: 'length',
        headers: { 'content-type': 'text/plain', 'content-length': '11', 'set-cookie': ['a=1'], 'x-two': ['1', '2'] },
      });
      expect(r.body()).toBe('hello world');
      expect(r.seen.ends).toEqual([true]);
    }
  });

  it('passes the body on as slices of what the socket read, never copies', () => {
    const head = Buffer.from('HTTP/1.1 200 OK\r\nContent-Length: 300000\r\n\r\n');
    const first = Buffer.concat([head, Buffer.alloc(100_000, 1)]);
    const second = Buffer.alloc(200_000, 2);
    const r = recorder();
    const reader = new AnswerReader('GET', r.sink);
    reader.push(first);
    reader.push(second);
    expect(r.seen.chunks.map((c) => c.length)).toEqual([100_000, 200_000]);
    expect(r.seen.chunks[0]!.buffer).toBe(first.buffer);
    expect(r.seen.chunks[1]!.buffer).toBe(second.buffer);
    const chunked = Buffer.from('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n');
    const c = recorder();
    new AnswerReader('GET', c.sink).push(chunked);
    expect(c.seen.chunks.every((chunk) => chunk.buffer === chunked.buffer)).toBe(true);
  });

  it('reads chunked coding with extensions and trailers, cut anywhere', () => {
    const answer = 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;name=value\r\nhello\r\nA \r\n, chunked!\r\n0\r\nX-Checksum: 1\r\n\r\n';
    for (const cuts of [[], ...everyCut(answer.length)]) {
      const r = read('GET', answer, cuts);
      expect(r.seen.heads[0]!.framing).toBe('chunked');
      expect(r.body()).toBe('hello, chunked!');
      expect(r.seen.ends).toEqual([true]);
    }
  });

  it('skips 100 Continue and 103 Early Hints, and reads the answer after them', () => {
    const r = read('POST', 'HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok');
    expect(r.seen.heads.map((h) => h.statusCode)).toEqual([201]);
    expect(r.body()).toBe('ok');
  });

  it('knows the answers without a body: to HEAD, 204, 304, and a length of 0', () => {
    for (const [method, answer] of [
      ['HEAD', 'HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n'],
      ['GET', 'HTTP/1.1 204 No Content\r\n\r\n'],
      ['GET', 'HTTP/1.1 304 Not Modified\r\nContent-Length: 1000\r\n\r\n'],
      ['GET', 'HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n'],
    ] as const) {
      const r = read(method, answer);
      expect(r.seen.heads[0]!.framing, answer).toBe('none');
      expect(r.seen.ends, answer).toEqual([true]);
    }
  });

  it('reads a body without a length to the close, and never uses that connection again', () => {
    const r = read('GET', 'HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\ndata: 1\n\ndata: 2\n\n', [], false);
    expect(r.seen.ends).toEqual([]);
    const closed = read('GET', 'HTTP/1.1 200 OK\r\n\r\nall of it', [20], true);
    expect(closed.body()).toBe('all of it');
    expect(closed.seen.ends).toEqual([false]);
    // a coding other than chunked last is framed by the close too
    expect(read('GET', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nzz', [], true).seen.ends).toEqual([false]);
  });

  it('does not use a connection again that the service will close, or that sent more than the answer', () => {
    expect(read('GET', 'HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\nx').seen.ends).toEqual([false]);
    expect(read('GET', 'HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nx').seen.ends).toEqual([false]);
    expect(read('GET', 'HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nxHTTP/1.1 200 OK\r\n').seen.ends).toEqual([false]);
    // a length beside chunked coding: the coding frames it, and the connection goes (RFC 9112 §6.3)
    const both = read('GET', 'HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n');
    expect([both.body(), both.seen.ends]).toEqual(['x', [false]]);
  });

  it('refuses what is not an HTTP/1.x answer, and says an answer was cut', () => {
    const refused = (bytes: string, close = false) => () => read('GET', bytes, [], close);
    expect(refused('SSH-2.0-OpenSSH_9.2\r\n\r\n')).toThrow(UpstreamProtocolError);
    expect(refused('HTTP/2 200\r\n\r\n')).toThrow(/status line/);
    expect(refused('HTTP/1.1 200 OK\r\nX-A: 1\r\n folded\r\n\r\n')).toThrow(/folded/);
    expect(refused('HTTP/1.1 200 OK\r\nBad Name: 1\r\n\r\n')).toThrow(/header name/);
    expect(refused('HTTP/1.1 200 OK\r\nX-A: a\0b\r\n\r\n')).toThrow(/header value/);
    expect(refused('HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n')).toThrow(/Content-Length/);
    expect(refused('HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n')).toThrow(/Content-Length/);
    expect(refused('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n')).toThrow(/chunk size/);
    expect(refused('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nxy\r\n')).toThrow(/line end/);
    expect(refused('HTTP/1.1 101 Switching Protocols\r\n\r\n')).toThrow(/switched/);
    expect(refused(`HTTP/1.1 200 OK\r\nX-Big: ${'a'.repeat(MAX_HEAD_BYTES)}`)).toThrow(/64 KB/);
    expect(refused('HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort', true)).toThrow(/middle of the answer/);
    expect(refused('HTTP/1.1 200', true)).toThrow(/before an answer/);
    // the two lengths a proxy in front sometimes joins are one length
    expect(read('GET', 'HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\nok').body()).toBe('ok');
  });
});

describe('a request body of unknown length', () => {
  it('goes in chunked coding, the data not copied', async () => {
    const data = [Buffer.from('hello'), Buffer.alloc(0), Buffer.from(', world')];
    const out: Buffer[] = [];
    const encoder = Readable.from(data).pipe(new ChunkedEncoder());
    for await (const chunk of encoder) out.push(chunk as Buffer);
    expect(Buffer.concat(out).toString()).toBe('5\r\nhello\r\n7\r\n, world\r\n0\r\n\r\n');
    expect(out.some((chunk) => chunk.buffer === data[0]!.buffer)).toBe(true);
  });
});

describe('kept-alive connections to services', () => {
  let server: Server | undefined;
  const accepted: Socket[] = [];
  afterEach(() => {
    for (const s of accepted.splice(0)) s.destroy();
    server?.close();
  });

  async function listen(): Promise<number> {
    server = createServer((s) => accepted.push(s));
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    return (server.address() as { port: number }).port;
  }

  const connect = async (port: number): Promise<Duplex> => {
    const { connect: dial } = await import('node:net');
    const socket = dial({ port, host: '127.0.0.1' });
    await once(socket, 'connect');
    return socket;
  };

  /** A pool of connections to a fresh listener, and how many it dialled. */
  const poolOn = async (options: ConstructorParameters<typeof UpstreamPool<string>>[2] = {}) => {
    const port = await listen();
    const counted = { dials: 0 };
    const pool = new UpstreamPool<string>(async () => {
      counted.dials++;
      return connect(port);
    }, (k) => k, options);
    return { pool, counted };
  };

  it('gives a released connection to the next request of the same service only', async () => {
    const { pool, counted } = await poolOn();
    const first = await pool.acquire('a');
    expect(first.reused).toBe(false);
    pool.done('a', first.socket, true);
    expect(pool.idleConnections).toBe(1);
    const other = await pool.acquire('b');
    expect(other.reused).toBe(false);
    const again = await pool.acquire('a');
    expect(again).toEqual({ socket: first.socket, reused: true });
    expect(counted.dials).toBe(2);
    pool.close();
    first.socket.destroy();
    other.socket.destroy();
  });

  it('drops a waiting connection that the service closes or sends anything on', async () => {
    const { pool } = await poolOn();
    const a = await pool.acquire('a');
    const b = await pool.acquire('a');
    pool.done('a', a.socket, true);
    pool.done('a', b.socket, true);
    expect(pool.idleConnections).toBe(2);
    accepted[0]!.end();
    await once(a.socket, 'close');
    accepted[1]!.write('HTTP/1.1 200 OK\r\n\r\n');
    await once(b.socket, 'close');
    expect(pool.idleConnections).toBe(0);
    expect((await pool.acquire('a')).reused).toBe(false);
    pool.close();
  });

  it('drops a connection idle for longer than its limit, and keeps no more than its number', async () => {
    const { pool } = await poolOn({ maxIdle: 1, idleMs: 10 });
    const a = await pool.acquire('a');
    const b = await pool.acquire('a');
    pool.done('a', a.socket, true);
    pool.done('a', b.socket, true);
    expect(b.socket.destroyed).toBe(true);
    await once(a.socket, 'close');
    expect(pool.idleConnections).toBe(0);
    pool.close();
  });

  it('lets no more than its number of connections carry requests to one service at once: the next waits for one to be over', async () => {
    const { pool, counted } = await poolOn({ maxActive: 2 });
    const a = await pool.acquire('a');
    const b = await pool.acquire('a');
    let third: { socket: Duplex; reused: boolean } | undefined;
    const waiting = pool.acquire('a').then((got) => (third = got));
    // another service is not held up
    const other = await pool.acquire('b');
    await new Promise((resolve) => setImmediate(resolve));
    expect(third).toBeUndefined();
    pool.done('a', a.socket, true);
    await waiting;
    expect(third).toEqual({ socket: a.socket, reused: true });
    // a connection closed, not kept, frees its place too
    const fourth = pool.acquire('a');
    pool.done('a', b.socket, false);
    expect((await fourth).reused).toBe(false);
    expect(counted.dials).toBe(4);
    pool.close();
    for (const s of [a.socket, other.socket]) s.destroy();
  });

  it('holds a stream that is not a socket too (the engine\'s exec stream)', async () => {
    const stream = new PassThrough();
    const pool = new UpstreamPool<string>(async () => stream, (k) => k);
    const got = await pool.acquire('a');
    pool.done('a', got.socket, true);
    expect((await pool.acquire('a')).reused).toBe(true);
    pool.close();
  });
});
