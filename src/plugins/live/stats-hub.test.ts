import { Subject, type Observable } from 'rxjs';
import { describe, expect, it } from 'vitest';
import type { ContainerRuntime, NodeTarget, StatsSample } from '../../ports/container-runtime.port.ts';
import { StatsHub } from './stats-hub.ts';

const target: NodeTarget = { nodeId: 'n1', settings: { endpoint: 'unix:///x', tls: false } };

describe('stats hub', () => {
  it('opens one Docker stats stream per container for all watchers and closes it after the last leaves', async () => {
    let opened = 0;
    const samples = new Subject<StatsSample>();
    const runtime = { stats: (): Observable<StatsSample> => { opened++; return samples; } } as unknown as ContainerRuntime;
    const hub = new StatsHub(runtime, 20);
    const a = hub.watch(target, 'c1').subscribe();
    const b = hub.watch(target, 'c1').subscribe();
    expect(opened).toBe(1);
    expect(hub.open).toBe(1);
    a.unsubscribe();
    expect(hub.open).toBe(1);
    b.unsubscribe();
    await new Promise((r) => setTimeout(r, 50));
    expect(hub.open).toBe(0);
    hub.watch(target, 'c1').subscribe().unsubscribe();
    expect(opened).toBe(2);
  });
});
