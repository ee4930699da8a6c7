import { createHash, randomBytes } from 'node:crypto';
import { request } from 'node:http';
import { connect, type Socket } from 'node:net';
import type { Readable } from 'node:stream';

export interface RawAnswer {
  readonly status: number;
  readonly headers: Record<string, string | string[] | undefined>;
  readonly body: Buffer;
}

/**
 * One HTTP request with every header as given (a Host of our choosing, cookies by hand), no
 * redirect followed: what a browser would get on the wire.
 */
export function raw(port: number, method: string, path: string, options: { headers?: Record<string, string>; body?: Buffer | string | Readable; timeoutMs?: number } = {}): Promise<RawAnswer> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, method, path, headers: options.headers ?? {}, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
      res.on('error', reject);
      res.on('aborted', () => reject(new Error('the answer was cut off')));
    });
    req.setTimeout(options.timeoutMs ?? 30_000, () => req.destroy(new Error('no answer in time')));
    req.on('error', reject);
    const body = options.body;
    if (body === undefined) req.end();
    else if (typeof body === 'string' || Buffer.isBuffer(body)) req.end(body);
    else body.pipe(req);
  });
}

export const json = <T = Record<string, unknown>>(answer: RawAnswer): T => JSON.parse(answer.body.toString('utf8')) as T;

/** A WebSocket client on a raw socket (Node 20 has none built in): handshake, masked frames out, frames in. */
export class RawWebSocket {
  private pending = Buffer.alloc(0);
  private readonly waiting: ((message: Buffer) => void)[] = [];
  private readonly messages: Buffer[] = [];

  private constructor(private readonly socket: Socket) {
    socket.on('data', (data: Buffer) => this.take(data));
  }

  /** Opens `path` with these headers; rejects with the status line and body when it is not a 101. */
  static open(port: number, path: string, headers: Record<string, string> = {}): Promise<RawWebSocket> {
    return new Promise((resolve, reject) => {
      // `dial`: the address to connect to (127.0.0.1 unless given), not sent as a header.
      const socket = connect(port, headers.dial ?? '127.0.0.1');
      const key = randomBytes(16).toString('base64');
      const lines = [`GET ${path} HTTP/1.1`, `Host: ${headers.host ?? `127.0.0.1:${port}`}`, 'Upgrade: websocket', 'Connection: Upgrade', `Sec-WebSocket-Key: ${key}`, 'Sec-WebSocket-Version: 13'];
      for (const [name, value] of Object.entries(headers)) if (!['host', 'dial'].includes(name.toLowerCase())) lines.push(`${name}: ${value}`);
      socket.write(`${lines.join('\r\n')}\r\n\r\n`);
      let head = Buffer.alloc(0);
      const onData = (data: Buffer) => {
        head = Buffer.concat([head, data]);
        const end = head.indexOf('\r\n\r\n');
        if (end === -1) return;
        socket.off('data', onData);
        const text = head.subarray(0, end).toString('utf8');
        if (!text.startsWith('HTTP/1.1 101')) {
          socket.destroy();
          return reject(new Error(`${text.split('\r\n')[0]} ${head.subarray(end + 4).toString('utf8')}`));
        }
        const expected = createHash('sha1').update(`${key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`).digest('base64');
        const lower = text.toLowerCase();
        if (!lower.includes('\r\nupgrade: websocket') || !lower.includes('\r\nconnection: upgrade')) return reject(new Error(`no Upgrade/Connection in ${text}`));
        const accept = /\r\nsec-websocket-accept:\s*(\S+)/i.exec(text)?.[1];
        if (accept !== expected) return reject(new Error(`bad accept in ${text}`));
        const ws = new RawWebSocket(socket);
        const rest = head.subarray(end + 4);
        if (rest.length > 0) ws.take(rest);
        resolve(ws);
      };
      socket.on('data', onData);
      socket.on('error', reject);
    });
  }

  send(message: string | Buffer): void {
    const payload = Buffer.isBuffer(message) ? message : Buffer.from(message);
    const opcode = Buffer.isBuffer(message) ? 2 : 1;
    const mask = randomBytes(4);
    const length = payload.length;
    const head = length < 126 ? Buffer.from([0x80 | opcode, 0x80 | length])
      : length < 65_536 ? Buffer.from([0x80 | opcode, 0x80 | 126, length >> 8, length & 0xff])
        : Buffer.concat([Buffer.from([0x80 | opcode, 0x80 | 127]), Buffer.from(BigInt(length).toString(16).padStart(16, '0'), 'hex')]);
    const masked = Buffer.from(payload);
    for (let i = 0; i < masked.length; i++) masked[i]! ^= mask[i % 4]!;
    this.socket.write(Buffer.concat([head, mask, masked]));
  }

  /** The next message from the server. */
  next(timeoutMs = 10_000): Promise<Buffer> {
    const ready = this.messages.shift();
    if (ready) return Promise.resolve(ready);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('no WebSocket message in time')), timeoutMs);
      this.waiting.push((m) => {
        clearTimeout(timer);
        resolve(m);
      });
    });
  }

  /** Resolves when the connection is closed (by either side). */
  closed(): Promise<void> {
    return new Promise((resolve) => (this.socket.destroyed ? resolve() : this.socket.once('close', () => resolve())));
  }

  close(): void {
    this.socket.destroy();
  }

  private take(data: Buffer): void {
    this.pending = Buffer.concat([this.pending, data]);
    for (;;) {
      if (this.pending.length < 2) return;
      let length = this.pending[1]! & 0x7f;
      let offset = 2;
      if (length === 126) {
        if (this.pending.length < 4) return;
        length = this.pending.readUInt16BE(2);
        offset = 4;
      } else if (length === 127) {
        if (this.pending.length < 10) return;
        length = Number(this.pending.readBigUInt64BE(2));
        offset = 10;
      }
      if (this.pending.length < offset + length) return;
      const message = Buffer.from(this.pending.subarray(offset, offset + length));
      this.pending = this.pending.subarray(offset + length);
      const waiter = this.waiting.shift();
      if (waiter) waiter(message);
      else this.messages.push(message);
    }
  }
}
