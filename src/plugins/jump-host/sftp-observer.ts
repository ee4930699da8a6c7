/** What a client's SFTP requests do to files, for the audit record. */
export interface FileActions {
  written(path: string): void;
  removed(path: string): void;
}

const OPEN = 3;
const SETSTAT = 9;
const REMOVE = 13;
const RMDIR = 15;
const RENAME = 18;
const SYMLINK = 20;
const EXTENDED = 200;
/** SETSTAT's attribute flag for a new size (a truncation). */
const ATTR_SIZE = 0x1;
/** Open flags that change a file (SSH_FXF_WRITE, _APPEND, _CREAT, _TRUNC). */
const CHANGING_FLAGS = 0x02 | 0x04 | 0x08 | 0x10;
const INTERESTING: ReadonlySet<number> = new Set([OPEN, SETSTAT, REMOVE, RMDIR, RENAME, SYMLINK, EXTENDED]);
/**
 * How much of a request is kept: the paths come first, so a request padded past this (huge
 * attribute extensions) is still read from its start; the rest is skipped, never buffered.
 */
const MAX_KEPT_PACKET = 64 * 1024;

/**
 * Cuts one direction of an SFTP session into packets as it passes, keeping (at most the first
 * MAX_KEPT_PACKET bytes of) the packets of the types asked for and skipping the rest unread.
 */
class PacketFramer {
  private header = Buffer.alloc(0);
  private packet: Buffer[] | null = null;
  private needed = 0;
  private skipping = 0;
  /** What is left of a kept packet beyond MAX_KEPT_PACKET, skipped once its start is read. */
  private after = 0;

  constructor(private readonly kept: ReadonlySet<number>, private readonly onPacket: (body: Buffer) => void) {}

  push(chunk: Buffer): void {
    let offset = 0;
    while (offset < chunk.length) {
      if (this.skipping > 0) {
        const n = Math.min(this.skipping, chunk.length - offset);
        this.skipping -= n;
        offset += n;
        continue;
      }
      if (this.packet) {
        const n = Math.min(this.needed, chunk.length - offset);
        this.packet.push(chunk.subarray(offset, offset + n));
        this.needed -= n;
        offset += n;
        if (this.needed === 0) {
          const body = Buffer.concat(this.packet);
          this.packet = null;
          this.skipping = this.after;
          this.after = 0;
          this.onPacket(body);
        }
        continue;
      }
      const n = Math.min(5 - this.header.length, chunk.length - offset);
      this.header = Buffer.concat([this.header, chunk.subarray(offset, offset + n)]);
      offset += n;
      if (this.header.length < 5) continue;
      const length = this.header.readUInt32BE(0);
      const type = this.header[4]!;
      this.header = Buffer.alloc(0);
      const rest = Math.max(0, length - 1);
      if (this.kept.has(type) && rest > 0) {
        this.packet = [Buffer.from([type])];
        this.needed = Math.min(rest, MAX_KEPT_PACKET);
        this.after = rest - this.needed;
      } else {
        this.skipping = rest;
      }
    }
  }
}

const STATUS = 101;
const HANDLE = 102;
/** Requests waiting for their answer, at most (a client that never reads its answers holds no more). */
const MAX_PENDING = 1_024;

type Action = { kind: 'written' | 'removed'; path: string };

/**
 * Reads both sides of an SFTP session (version 3, as OpenSSH, WinSCP and FileZilla speak it) as
 * they pass, and reports the files written (opened for writing, truncated, created as links, the
 * target of a rename) and removed — each once the server has answered that it did it: a refused
 * open or a failed remove leaves no trace. It copies only the few packets it reads: file data is
 * skipped over, never buffered. Pure.
 */
export class SftpObserver {
  private readonly requests = new PacketFramer(INTERESTING, (body) => this.readRequest(body));
  private readonly replies = new PacketFramer(new Set([STATUS, HANDLE]), (body) => this.readReply(body));
  /** What each request in flight will have done, by request id, once it succeeds. */
  private readonly pending = new Map<number, Action[]>();

  constructor(private readonly actions: FileActions) {}

  /** The client's bytes (requests). */
  push(chunk: Buffer): void {
    this.requests.push(chunk);
  }

  /** The server's bytes (answers). */
  pushReply(chunk: Buffer): void {
    this.replies.push(chunk);
  }

  private readReply(body: Buffer): void {
    if (body.length < 5) return;
    const type = body[0]!;
    const id = body.readUInt32BE(1);
    const actions = this.pending.get(id);
    if (!actions) return;
    this.pending.delete(id);
    const ok = type === HANDLE || (type === STATUS && body.length >= 9 && body.readUInt32BE(5) === 0);
    if (!ok) return;
    for (const action of actions) {
      if (action.kind === 'written') this.actions.written(action.path);
      else this.actions.removed(action.path);
    }
  }

  private readRequest(body: Buffer): void {
    if (body.length < 5) return;
    const id = body.readUInt32BE(1);
    const actions = this.actionsOf(body);
    if (actions.length === 0) return;
    if (this.pending.size >= MAX_PENDING) this.pending.delete(this.pending.keys().next().value!);
    this.pending.set(id, actions);
  }

  private actionsOf(body: Buffer): Action[] {
    const type = body[0]!;
    // Type, then the request id.
    const fields = new FieldReader(body, 5);
    const written = (path: string): Action => ({ kind: 'written', path });
    const removed = (path: string): Action => ({ kind: 'removed', path });
    try {
      switch (type) {
        case OPEN: {
          const path = fields.string();
          return fields.uint32() & CHANGING_FLAGS ? [written(path)] : [];
        }
        case SETSTAT: {
          const path = fields.string();
          return fields.uint32() & ATTR_SIZE ? [written(path)] : [];
        }
        case SYMLINK: {
          // OpenSSH (and so everyone) sends the target first, then the new link's name.
          fields.string();
          return [written(fields.string())];
        }
        case REMOVE:
        case RMDIR:
          return [removed(fields.string())];
        case RENAME: {
          const from = fields.string();
          return [removed(from), written(fields.string())];
        }
        case EXTENDED: {
          const name = fields.string();
          if (name === 'posix-rename@openssh.com') {
            const from = fields.string();
            return [removed(from), written(fields.string())];
          }
          if (name === 'hardlink@openssh.com') {
            fields.string();
            return [written(fields.string())];
          }
          return [];
        }
      }
    } catch {
      // A malformed request: the server answers it; the audit has nothing to add.
    }
    return [];
  }
}

class FieldReader {
  constructor(private readonly buffer: Buffer, private offset: number) {}

  uint32(): number {
    if (this.offset + 4 > this.buffer.length) throw new RangeError('short packet');
    const value = this.buffer.readUInt32BE(this.offset);
    this.offset += 4;
    return value;
  }

  string(): string {
    const length = this.uint32();
    if (this.offset + length > this.buffer.length) throw new RangeError('short packet');
    const value = this.buffer.toString('utf8', this.offset, this.offset + length);
    this.offset += length;
    return value;
  }
}
