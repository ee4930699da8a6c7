import { randomBytes, randomUUID } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { projections } from '../../src/app.ts';
import { MemoryReadStore } from '../../src/adapters/readstore/memory.read-store.ts';
import { createLogger } from '../../src/logger.ts';
import { rebuildReadModels, snapshotReadModels } from '../../src/projections/rebuild.ts';
import { ADMIN_PASSWORD, startTestApp } from '../support/app.ts';
import { describeWithService } from '../support/services.ts';

async function makeHistory(t: Awaited<ReturnType<typeof startTestApp>>, admin: string) {
  for (let i = 0; i < 5; i++) {
    const u = await t.api<{ id: string }>('POST', '/api/v1/users', { token: admin, body: { username: `user${i}`, password: `password-${i}` } });
    await t.api('PATCH', `/api/v1/users/${u.body.id}`, { token: admin, body: { displayName: `用户 ${i}`, disabled: i % 2 === 0 } });
    if (i === 3) await t.api('DELETE', `/api/v1/users/${u.body.id}`, { token: admin });
  }
}

describe('restart', () => {
  it('keeps accounts and tokens across a restart (same data dir and master key)', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'tianqi-restart-'));
    const env = { TIANQI_MASTER_KEY: randomBytes(32).toString('base64') };
    const first = await startTestApp(env, { dataDir });
    const admin = await first.login('admin', ADMIN_PASSWORD);
    await makeHistory(first, admin);
    const before = await snapshotReadModels(first.app.readStore, projections);
    await first.stop();

    const second = await startTestApp(env, { dataDir });
    try {
      expect((await second.api('GET', '/api/v1/auth/me', { token: admin })).status).toBe(200);
      await second.login('user1', 'password-1');
      // the in-memory read models were rebuilt by replay at start and equal the ones before
      expect(await snapshotReadModels(second.app.readStore, projections)).toEqual(before);
    } finally {
      await second.stop();
    }
  });
});

describe('rebuild (memory)', () => {
  it('gives exactly the documents the live projections gave', async () => {
    const t = await startTestApp();
    try {
      await makeHistory(t, await t.login('admin', ADMIN_PASSWORD));
      const live = await snapshotReadModels(t.app.readStore, projections);
      const fresh = new MemoryReadStore();
      await rebuildReadModels(t.app.eventStore, fresh, projections, createLogger('silent'));
      expect(await snapshotReadModels(fresh, projections)).toEqual(live);
      expect(live.users!.length).toBe(5);
    } finally {
      await t.stop();
    }
  });
});

const mongoUrl = process.env.TIANQI_MONGO_URL;
describeWithService('MongoDB', Boolean(mongoUrl), 'set TIANQI_MONGO_URL (e.g. mongodb://127.0.0.1:27017/)', 'read models in MongoDB', () => {
  it('resumes from checkpoints after a restart and rebuilds to the same documents', async () => {
    const { MongoClient } = await import('mongodb');
    const database = `tianqi_test_${randomUUID().slice(0, 8)}`;
    const url = new URL(mongoUrl!);
    url.pathname = `/${database}`;
    const env = { TIANQI_MONGO_URL: url.toString(), TIANQI_MASTER_KEY: randomBytes(32).toString('base64') };
    const dataDir = mkdtempSync(join(tmpdir(), 'tianqi-mongo-'));
    try {
      const first = await startTestApp(env, { dataDir });
      await makeHistory(first, await first.login('admin', ADMIN_PASSWORD));
      const live = await snapshotReadModels(first.app.readStore, projections);
      const head = await first.app.eventStore.headPosition();
      await first.stop();
      expect(first.app.readStore.durable).toBe(true);

      const second = await startTestApp(env, { dataDir });
      try {
        // resumed, not replayed: the checkpoint is the head and the documents are the same
        expect(await second.app.readStore.getCheckpoint('users')).toBe(head);
        expect(await snapshotReadModels(second.app.readStore, projections)).toEqual(live);
        await rebuildReadModels(second.app.eventStore, second.app.readStore, projections, createLogger('silent'));
        expect(await snapshotReadModels(second.app.readStore, projections)).toEqual(live);
        await second.login('user1', 'password-1');
      } finally {
        await second.stop();
      }
    } finally {
      const client = await MongoClient.connect(mongoUrl!);
      await client.db(database).dropDatabase();
      await client.close();
    }
  });
});
