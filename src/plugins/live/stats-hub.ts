import { Observable, finalize, share, timer } from 'rxjs';
import type { ContainerRuntime, NodeTarget, StatsSample } from '../../ports/container-runtime.port.ts';

/**
 * One Docker stats stream per container, shared by every watcher and closed shortly after the
 * last one leaves (a short grace period lets a page reload keep the stream).
 */
export class StatsHub {
  private readonly streams = new Map<string, Observable<StatsSample>>();
  /** Docker stats streams open right now. */
  open = 0;

  constructor(private readonly runtime: ContainerRuntime, private readonly graceMs = 2_000) {}

  watch(target: NodeTarget, containerId: string): Observable<StatsSample> {
    const key = `${target.nodeId}/${containerId}`;
    let stream = this.streams.get(key);
    if (!stream) {
      const upstream = new Observable<StatsSample>((subscriber) => {
        this.open += 1;
        const sub = this.runtime.stats(target, containerId).subscribe(subscriber);
        return () => {
          this.open -= 1;
          sub.unsubscribe();
        };
      });
      stream = upstream.pipe(
        finalize(() => this.streams.delete(key)),
        share({ resetOnRefCountZero: () => timer(this.graceMs), resetOnError: true, resetOnComplete: true }),
      );
      this.streams.set(key, stream);
    }
    return stream;
  }
}
