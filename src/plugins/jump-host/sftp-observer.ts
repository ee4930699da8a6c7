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
 * Reads the client's side of an SFTP session (version 3, as OpenSSH, WinSCP and FileZilla speak
 * it) as it passes, and reports files opened for writing, removed and renamed. It copies only the
 * few requests it reads: the payload of a WRITE is skipped over, never buffered. Pure.
 */
export class SftpObserver {
  private header = Buffer.alloc(0);
  private packet: Buffer[] | null = null;
  private needed = 0;
  private skipping = 0;
  /** What is left of a kept request beyond MAX_KEPT_PACKET, skipped once its start is read. */
  private after = 0;

  constructor(private readonly actions: FileActions) {}

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
          this.read(body);
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
      if (INTERESTING.has(type) && rest > 0) {
        this.packet = [Buffer.from([type])];
        this.needed = Math.min(rest, MAX_KEPT_PACKET);
        this.after = rest - this.needed;
      } else {
        this.skipping = rest;
      }
    }
  }

  private read(body: Buffer): void {
    const type = body[0]!;
    // Type, then the request id.
    const fields = new FieldReader(body, 5);
    try {
      switch (type) {
        case OPEN: {
          const path = fields.string();
          const flags = fields.uint32();
          if (flags & CHANGING_FLAGS) this.actions.written(path);
          return;
        }
        case SETSTAT: {
          const path = fields.string();
          if (fields.uint32() & ATTR_SIZE) this.actions.written(path);
          return;
        }
        case SYMLINK: {
          // OpenSSH (and so everyone) sends the target first, then the new link's name.
          fields.string();
          this.actions.written(fields.string());
          return;
        }
        case REMOVE:
        case RMDIR:
          this.actions.removed(fields.string());
          return;
        case RENAME: {
          const from = fields.string();
          this.actions.removed(from);
          this.actions.written(fields.string());
          return;
        }
        case EXTENDED: {
          const name = fields.string();
          if (name === 'posix-rename@openssh.com') {
            this.actions.removed(fields.string());
            this.actions.written(fields.string());
          } else if (name === 'hardlink@openssh.com') {
            fields.string();
            this.actions.written(fields.string());
          }
          return;
        }
      }
    } catch {
      // A malformed request: the server answers it; the audit has nothing to add.
    }
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
