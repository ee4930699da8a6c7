import { describe, expect, it } from 'vitest';
import { SftpObserver } from './sftp-observer.ts';

let nextId = 1;

function encode(type: number, id: number, fields: (string | number | Buffer)[]): Buffer {
  const parts = fields.map((f) => {
    if (typeof f === 'number') {
      const b = Buffer.alloc(4);
      b.writeUInt32BE(f);
      return b;
    }
    const bytes = typeof f === 'string' ? Buffer.from(f, 'utf8') : f;
    const length = Buffer.alloc(4);
    length.writeUInt32BE(bytes.length);
    return Buffer.concat([length, bytes]);
  });
  const idBytes = Buffer.alloc(4);
  idBytes.writeUInt32BE(id);
  const body = Buffer.concat([Buffer.from([type]), idBytes, ...parts]);
  const length = Buffer.alloc(4);
  length.writeUInt32BE(body.length);
  return Buffer.concat([length, body]);
}

/** One SFTP request as a client sends it: length, type, request id (a new one each), then the fields. */
function packet(type: number, ...fields: (string | number | Buffer)[]): Buffer {
  return encode(type, nextId++, fields);
}

/** The id of a request made by `packet`. */
const idOf = (request: Buffer) => request.readUInt32BE(5);
/** The server's answers: STATUS with a code (0: done), or a HANDLE for an open. */
const status = (request: Buffer, code = 0) => encode(101, idOf(request), [code, 'message', 'en']);
const handle = (request: Buffer) => encode(102, idOf(request), ['h1']);

/** Feeds the requests, then a success answer to every one of them (unless answers are given). */
function observe(...chunks: Buffer[]) {
  return observeWith(chunks, null);
}

function observeWith(requests: Buffer[], answers: Buffer[] | null) {
  const written: string[] = [];
  const removed: string[] = [];
  const observer = new SftpObserver({ written: (p) => written.push(p), removed: (p) => removed.push(p) });
  for (const chunk of requests) observer.push(chunk);
  const ids = new Set<number>();
  const all = Buffer.concat(requests);
  // every request id in the stream (a chunk may be a byte of one): answered OK
  for (let offset = 0; offset + 9 <= all.length;) {
    const length = all.readUInt32BE(offset);
    ids.add(all.readUInt32BE(offset + 5));
    offset += 4 + length;
  }
  for (const answer of answers ?? [...ids].map((id) => encode(101, id, [0, 'ok', 'en']))) observer.pushReply(answer);
  return { written, removed };
}

const ATTRS_NONE = 0;
const WRITE = 0x02;
const CREAT_TRUNC = 0x08 | 0x10;
const READ = 0x01;

describe('SftpObserver', () => {
  it('reports files opened for writing, removed, renamed (v3 and posix-rename), and directories removed', () => {
    const stream = Buffer.concat([
      packet(3, '/data/model.pt', WRITE | CREAT_TRUNC, ATTRS_NONE),
      packet(3, '/data/read-only.txt', READ, ATTRS_NONE),
      packet(13, '/data/old.ckpt'),
      packet(15, '/data/empty-dir'),
      packet(18, '/data/a', '/data/b'),
      packet(200, 'posix-rename@openssh.com', '/data/c', '/data/d'),
      packet(200, 'statvfs@openssh.com', '/data'),
    ]);
    expect(observe(stream)).toEqual({
      written: ['/data/model.pt', '/data/b', '/data/d'],
      removed: ['/data/old.ckpt', '/data/empty-dir', '/data/a', '/data/c'],
    });
  });

  it('reads requests split anywhere across chunks, one byte at a time included', () => {
    const stream = Buffer.concat([packet(3, '/data/数据集.tar', WRITE, ATTRS_NONE), packet(13, '/tmp/x')]);
    const bytes = [...stream].map((b) => Buffer.from([b]));
    expect(observe(...bytes)).toEqual({ written: ['/data/数据集.tar'], removed: ['/tmp/x'] });
  });

  it('skips WRITE payloads without reading them, and survives malformed requests', () => {
    const write = packet(6, Buffer.from('handle'), 0, 0, Buffer.alloc(200_000, 0x41));
    const truncated = packet(13, '/x').subarray(0, 12);
    // A REMOVE whose string claims more bytes than the packet has: ignored, the next one read.
    const bogus = Buffer.from([0, 0, 0, 9, 13, 0, 0, 0, 1, 0, 0, 0, 200]);
    const { written, removed } = observe(write, bogus, packet(13, '/after'));
    expect(written).toEqual([]);
    expect(removed).toEqual(['/after']);
    expect(observe(truncated)).toEqual({ written: [], removed: [] });
  });

  it('sees every change that leaves a trace: an OPEN padded past 64 KiB, truncation by SETSTAT, symlinks and hard links', () => {
    // attributes padded with a huge extension: the path comes first and is still read
    const extended = 0x80000000;
    const padded = packet(3, '/data/hidden.bin', WRITE | CREAT_TRUNC, extended, 1, 'x@evil', Buffer.alloc(80 * 1024, 0x61));
    const SIZE = 0x1;
    const truncate = packet(9, '/data/log.txt', SIZE, Buffer.alloc(8));
    const chmodOnly = packet(9, '/data/run.sh', 0x4, 0o755);
    // OpenSSH sends the link's target first, then the new link's name
    const symlink = packet(20, '/etc/passwd', '/data/link');
    const hardlink = packet(200, 'hardlink@openssh.com', '/data/a', '/data/b');
    expect(observe(padded, truncate, chmodOnly, symlink, hardlink, packet(13, '/after'))).toEqual({
      written: ['/data/hidden.bin', '/data/log.txt', '/data/link', '/data/b'],
      removed: ['/after'],
    });
  });

  it('counts only what the server did: a refused open or a failed remove leaves no trace; answers split and interleaved with data', () => {
    const refused = packet(3, '/proc/forbidden', WRITE | CREAT_TRUNC, ATTRS_NONE);
    const opened = packet(3, '/data/ok.bin', WRITE | CREAT_TRUNC, ATTRS_NONE);
    const failedRemove = packet(13, '/data/missing');
    const removedOk = packet(13, '/data/old');
    const data = encode(103, 999, [Buffer.alloc(100_000, 0x42)]);
    const answers = Buffer.concat([status(refused, 3), data, handle(opened), status(failedRemove, 2), status(removedOk)]);
    const bytes = [...answers].map((b) => Buffer.from([b]));
    expect(observeWith([refused, opened, failedRemove, removedOk], bytes)).toEqual({ written: ['/data/ok.bin'], removed: ['/data/old'] });
    // no answer yet: nothing counted
    expect(observeWith([packet(13, '/data/later')], [])).toEqual({ written: [], removed: [] });
  });
});
