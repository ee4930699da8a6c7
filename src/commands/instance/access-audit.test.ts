import { describe, expect, it } from 'vitest';
import { SqliteEventStore } from '../../adapters/eventstore/sqlite.event-store.ts';
import { instanceStream } from '../../domain/instance/instance.decider.ts';
import { CommandBus } from '../command-bus.ts';
import { AccessAudit, AccessRecord } from './access-audit.ts';

const request = {
  instanceId: 'i1', ownerId: 'u1', ownerName: 'alice', name: 'train', imageId: 'img', imageAddress: 'pytorch:2', specId: 's1',
  spec: { name: 'cpu', gpuModel: '', gpuCount: 0, gpuMemoryGb: 0, vgpu: false, cpuCores: 1, memoryGb: 1, systemDiskGb: 0, dataDiskGb: 0, pricePerHour: 0 },
  remark: '', requestedAt: '2026-01-01T00:00:00.000Z',
};
const running = [
  { type: 'InstanceRequested', data: request },
  { type: 'InstancePlaced', data: { nodeId: 'n1', nodeName: 'gpu-1', gpus: [], containerName: 'train-i1-1', dataVolume: null } },
  { type: 'ContainerCreated', data: { containerId: 'c1', storageOptApplied: false } },
  { type: 'InstanceStateObserved', data: { status: 'running', reason: 'running', exitCode: null, oomKilled: false, source: 'provisioning' } },
].map((e) => ({ ...e, metadata: { time: '2026-01-01T00:00:00.000Z' } }));
const actor = { id: 'u1', username: 'alice', role: 'user' as const };

describe('the access audit under load', () => {
  it('writes every open and exactly one close when 266 ways into one instance open and end together, on two replicas', async () => {
    const store = new SqliteEventStore(':memory:');
    await store.append(instanceStream('i1'), running, 'no-stream');
    // two replicas: two buses over one event log, each with its own jump host
    const replicas = [new AccessAudit(new CommandBus(store)), new AccessAudit(new CommandBus(store))];
    const opened = await Promise.all(Array.from({ length: 266 }, (_, i) => replicas[i % 2]!.open('i1', {
      actor, clientAddress: '10.0.0.9', via: 'ssh', kind: i < 10 ? 'shell' : 'forward', command: i < 10 ? '/bin/bash' : `127.0.0.1:${9000 + i}`,
    })));
    expect(opened.every((r) => r instanceof AccessRecord)).toBe(true);
    const lost: unknown[] = [];
    await Promise.all((opened as AccessRecord[]).map((r) => r.close('the client left', 0, (err) => lost.push(err))));
    // a second close of the same record writes nothing more
    await Promise.all((opened as AccessRecord[]).slice(0, 20).map((r) => r.close('again', 0, (err) => lost.push(err))));
    expect(lost).toEqual([]);
    const events = await store.readStream(instanceStream('i1'));
    const opens = events.filter((e) => e.type === 'TerminalSessionOpened').map((e) => (e.data as { sessionId: string }).sessionId);
    const closes = events.filter((e) => e.type === 'TerminalSessionClosed').map((e) => (e.data as { sessionId: string }).sessionId);
    expect(opens).toHaveLength(266);
    expect(closes).toHaveLength(266);
    expect(new Set(closes)).toEqual(new Set(opens));
  }, 60_000);
});
