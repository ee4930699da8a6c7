import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from './config.ts';

describe('lease settings', () => {
  it('default to a 15 s lease renewed every 5 s, under a generated replica name', () => {
    const config = loadConfig({});
    expect(config.lease).toEqual({ ttlMs: 15_000, renewEveryMs: 5_000 });
    expect(config.replicaId).toBeUndefined();
  });

  it('take a replica name and other timings', () => {
    const config = loadConfig({ TIANQI_LEASE_TTL_MS: '3000', TIANQI_LEASE_RENEW_MS: '1000', TIANQI_REPLICA_ID: 'tianqi-1.lab' });
    expect(config.lease).toEqual({ ttlMs: 3_000, renewEveryMs: 1_000 });
    expect(config.replicaId).toBe('tianqi-1.lab');
  });

  it('refuse a renewal period that leaves no second try before the lease runs out, and odd replica names', () => {
    expect(() => loadConfig({ TIANQI_LEASE_TTL_MS: '10000', TIANQI_LEASE_RENEW_MS: '5000' })).toThrow(/TIANQI_LEASE_RENEW_MS: must be less than half/);
    expect(() => loadConfig({ TIANQI_REPLICA_ID: 'a b' })).toThrow(ConfigError);
    expect(() => loadConfig({ TIANQI_LEASE_TTL_MS: '500' })).toThrow(/TIANQI_LEASE_TTL_MS/);
  });
});
