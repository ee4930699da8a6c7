/** What a batch of keystrokes did: the echo, and a completed line (with the bytes after it) or leaving. */
export interface EditResult {
  readonly echo: Buffer;
  /** The line ended by Enter, or null while it goes on. */
  readonly line: string | null;
  /** Input after the line's Enter, not looked at: it belongs to whatever reads next. */
  readonly rest: Buffer;
  /** Ctrl-C, or Ctrl-D on an empty line. */
  readonly interrupted: boolean;
}

const CR = 0x0d;
const LF = 0x0a;
const ESC = 0x1b;
const BACKSPACE = 0x08;
const DEL = 0x7f;
const CTRL_C = 0x03;
const CTRL_D = 0x04;
const CTRL_U = 0x15;
const ERASE = Buffer.from('\b \b');
const NONE = Buffer.alloc(0);

/**
 * Line input for the container menu. On a PTY the client's terminal is in raw mode, so the jump
 * host echoes and edits itself (backspace, Ctrl-U; arrow keys and other escape sequences are
 * ignored); without one the client sends whole lines and expects no echo. Works on bytes, so
 * that the input after a line goes on unchanged to the container's shell.
 */
export class LineEditor {
  private line: number[] = [];
  private escape: 'none' | 'start' | 'sequence' = 'none';
  private lastWasCr = false;

  constructor(private readonly pty: boolean) {}

  feed(chunk: Buffer): EditResult {
    const echo: number[] = [];
    const result = (line: string | null, rest: Buffer, interrupted = false): EditResult => ({
      echo: this.pty ? Buffer.from(echo) : NONE,
      line,
      rest,
      interrupted,
    });
    for (let i = 0; i < chunk.length; i += 1) {
      const byte = chunk[i]!;
      const wasCr = this.lastWasCr;
      this.lastWasCr = byte === CR;
      if (this.escape !== 'none') {
        this.skipEscape(byte);
      } else if (byte === ESC) {
        this.escape = 'start';
      } else if (byte === CR || byte === LF) {
        // \r\n from a client that sends both is one Enter.
        if (byte === LF && wasCr) continue;
        const line = Buffer.from(this.line).toString('utf8');
        this.line = [];
        echo.push(CR, LF);
        return result(line, chunk.subarray(i + 1));
      } else if (byte === DEL || byte === BACKSPACE) {
        if (this.eraseChar()) echo.push(...ERASE);
      } else if (byte === CTRL_C || (byte === CTRL_D && this.line.length === 0)) {
        echo.push(...Buffer.from('^C\r\n'));
        return result(null, NONE, true);
      } else if (byte === CTRL_U) {
        while (this.eraseChar()) echo.push(...ERASE);
      } else if (byte >= 0x20) {
        // UTF-8 sequences go through byte by byte; the client's terminal puts them together.
        this.line.push(byte);
        echo.push(byte);
      }
    }
    return result(null, NONE);
  }

  /** Drops the last character, all its UTF-8 bytes. */
  private eraseChar(): boolean {
    if (this.line.length === 0) return false;
    let byte = this.line.pop()!;
    while ((byte & 0xc0) === 0x80 && this.line.length > 0) byte = this.line.pop()!;
    return true;
  }

  /** ESC [ … final byte (CSI), ESC O x (SS3), or ESC x: swallowed whole. */
  private skipEscape(byte: number): void {
    if (this.escape === 'start') {
      this.escape = byte === 0x5b || byte === 0x4f ? 'sequence' : 'none';
      return;
    }
    if (byte >= 0x40 && byte <= 0x7e) this.escape = 'none';
  }
}
