import { describe, expect, it } from 'vitest';
import type { DockerConnectionSettings } from '../../ports/docker.port.ts';
import { DockerPool } from './docker-pool.ts';

const settings: DockerConnectionSettings = {
  endpoint: 'tcp://10.0.0.5:2376',
  tls: true,
  ca: 'CA PEM',
  cert: 'CERT PEM',
  key: 'KEY PEM',
};

describe('DockerPool', () => {
  it('keeps one client per node while its settings stay the same', async () => {
    const pool = new DockerPool();
    const first = pool.client('node-1', settings);
    expect(pool.client('node-1', { ...settings })).toBe(first);
    expect(pool.client('node-2', settings)).not.toBe(first);
    await pool.close();
  });

  it('builds a new client when any part of the settings changes', async () => {
    const pool = new DockerPool();
    let previous = pool.client('node-1', settings);
    for (const changed of [{ endpoint: 'tcp://10.0.0.6:2376' }, { ca: 'CA2' }, { cert: 'CERT2' }, { key: 'KEY2' }, { tls: false }]) {
      const next = pool.client('node-1', { ...settings, ...changed });
      expect(next, JSON.stringify(changed)).not.toBe(previous);
      previous = next;
    }
    await pool.close();
  });

  it('forgets a node, and starts afresh after close', async () => {
    const pool = new DockerPool();
    const first = pool.client('node-1', settings);
    pool.forget('node-1');
    const second = pool.client('node-1', settings);
    expect(second).not.toBe(first);
    pool.forget('unknown-node');
    await pool.close();
    expect(pool.client('node-1', settings)).not.toBe(second);
    await pool.close();
  });

  it('bounds each request and rejects a bad endpoint without caching it', async () => {
    const pool = new DockerPool({ requestTimeoutMs: 7_000 });
    expect(pool.client('node-1', settings).modem).toMatchObject({ connectionTimeout: 7_000 });
    expect(() => pool.client('node-2', { endpoint: 'http://10.0.0.5', tls: false })).toThrow(/unsupported Docker endpoint/);
    await pool.close();
  });
});
