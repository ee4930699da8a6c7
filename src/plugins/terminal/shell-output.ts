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

/**
 * The shell's output on its way to the browser. Decoded as a stream, so that a character whose
 * bytes arrive in two chunks goes out whole. Held back while the browser is behind: each piece
 * goes out with an acknowledgement, and with more than the high-water mark unacknowledged the
 * exec stream is paused, so the engine's connection fills, then the TTY, and the process blocks
 * on its writes; nothing is buffered here beyond the marks.
 */
export class ShellOutput {
  private readonly decoder = new StringDecoder('utf8');
  private unacknowledged = 0;
  private held = false;

  constructor(
    private readonly source: Pausable,
    private readonly highWater = HIGH_WATER_BYTES,
    private readonly lowWater = LOW_WATER_BYTES,
  ) {}

  /** Decodes `chunk` and passes its text to `send` with the callback the browser's acknowledgement runs. */
  forward(chunk: Buffer, send: (text: string, acknowledge: () => void) => void): void {
    const text = this.decoder.write(chunk);
    // Only the start of a character: it goes out with the next chunk.
    if (text.length === 0) return;
    const bytes = chunk.length;
    this.unacknowledged += bytes;
    if (!this.held && this.unacknowledged > this.highWater) {
      this.held = true;
      this.source.pause();
    }
    send(text, () => this.acknowledge(bytes));
  }

  /** What is left once the output is over: an incomplete character as U+FFFD, or ''. */
  flush(): string {
    return this.decoder.end();
  }

  private acknowledge(bytes: number): void {
    this.unacknowledged -= bytes;
    if (this.held && this.unacknowledged <= this.lowWater) {
      this.held = false;
      this.source.resume();
    }
  }
}
