import { StringDecoder } from 'node:string_decoder';

/** Above this many bytes sent and not yet acknowledged by the browser, the shell's output waits. */
export const HIGH_WATER_BYTES = 256 * 1024;
/** …until the browser has caught up to this many. */
export const LOW_WATER_BYTES = 64 * 1024;

/** The exec stream as far as flow control goes. */
export interface Pausable {
  pause(): unknown;
  resume(): unknown;
}

/** Sends one piece of text to the browser; `acknowledge` runs once the browser has taken it. */
export type SendText = (text: string, acknowledge: () => void) => void;

/**
 * The shell's output on its way to the browser. Decoded as a stream, so that a character whose
 * bytes arrive in two chunks goes out whole. What the engine delivers in one turn of the event
 * loop (a bulk output arrives as many small reads) goes out as one message: one frame, one
 * acknowledgement, instead of one per read. Held back while the browser is behind: with more than
 * the high-water mark unacknowledged the exec stream is paused, so the engine's connection fills,
 * then the TTY, and the process blocks on its writes; nothing is buffered here beyond the marks.
 */
export class ShellOutput {
  private readonly decoder = new StringDecoder('utf8');
  private unacknowledged = 0;
  private held = false;
  private pending: string[] = [];
  private pendingBytes = 0;
  private scheduled: NodeJS.Immediate | null = null;

  constructor(
    private readonly source: Pausable,
    private readonly send: SendText,
    private readonly highWater = HIGH_WATER_BYTES,
    private readonly lowWater = LOW_WATER_BYTES,
  ) {}

  /** Takes a chunk of the shell's output; its text goes out at the end of this turn. */
  write(chunk: Buffer): void {
    const text = this.decoder.write(chunk);
    this.pendingBytes += chunk.length;
    this.unacknowledged += chunk.length;
    if (!this.held && this.unacknowledged > this.highWater) {
      this.held = true;
      this.source.pause();
    }
    // Only the start of a character: it goes out with the next chunk (its bytes are counted now).
    if (text.length === 0) return;
    this.pending.push(text);
    this.scheduled ??= setImmediate(() => this.flush());
  }

  /** Sends what has been written and not sent yet, now. */
  flush(): void {
    if (this.scheduled) clearImmediate(this.scheduled);
    this.scheduled = null;
    if (this.pending.length === 0) return;
    const text = this.pending.length === 1 ? this.pending[0]! : this.pending.join('');
    const bytes = this.pendingBytes;
    this.pending = [];
    this.pendingBytes = 0;
    this.send(text, () => this.acknowledge(bytes));
  }

  /** Once the output is over: sends what is left, an incomplete character as U+FFFD. */
  end(): void {
    const rest = this.decoder.end();
    if (rest) this.pending.push(rest);
    this.flush();
  }

  private acknowledge(bytes: number): void {
    this.unacknowledged -= bytes;
    if (this.held && this.unacknowledged <= this.lowWater) {
      this.held = false;
      this.source.resume();
    }
  }
}
