import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { SqliteEventStore } from '../src/adapters/eventstore/sqlite.event-store.ts';
import { MemoryReadStore } from '../src/adapters/readstore/memory.read-store.ts';
import { projections } from '../src/app.ts';
import { createLogger } from '../src/logger.ts';
import { ProjectionRunner } from '../src/projections/projection-runner.ts';
import { percentile } from './stats.ts';
import { freePort } from '../test/support/ports.ts';
import { keepAliveClient } from '../test/support/http-client.ts';

const silent = createLogger('silent');
const meta = () => ({ time: new Date().toISOString(), userId: 'bench' });

/** Single-event appends to the SQLite event store, next to raw better-sqlite3 single-row transactions. */
async function appends(dir: string, count: number) {
  const raw = new Database(join(dir, 'raw.db'));
  raw.pragma('journal_mode = WAL');
  raw.pragma('synchronous = NORMAL');
  raw.exec('CREATE TABLE t (position INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE, stream TEXT, revision INTEGER, type TEXT, data TEXT, metadata TEXT, UNIQUE(stream, revision))');
  const insert = raw.prepare('INSERT INTO t (id, stream, revision, type, data, metadata) VALUES (?, ?, ?, ?, ?, ?)');
  const tx = raw.transaction((i: number) => insert.run(`id-${i}`, `s-${i % 1000}`, Math.floor(i / 1000), 'T', '{"n":1}', '{"time":"x"}'));
  let started = performance.now();
  for (let i = 0; i < count; i++) tx.immediate(i);
  const rawPerSec = count / ((performance.now() - started) / 1000);
  raw.close();

  const store = new SqliteEventStore(join(dir, 'events.db'));
  const revisions = new Map<string, number>();
  started = performance.now();
  for (let i = 0; i < count; i++) {
    const stream = `bench-${i % 1000}`;
    const r = await store.append(stream, [{ type: 'Ticked', data: { n: i }, metadata: meta() }], revisions.get(stream) ?? 'no-stream');
    revisions.set(stream, r.nextExpectedRevision);
  }
  const perSec = count / ((performance.now() - started) / 1000);
  await store.close();
  return { appendPerSec: Math.round(perSec), rawSqliteTxPerSec: Math.round(rawPerSec) };
}

/** A log of account events replayed into fresh in-memory read models. */
async function replay(dir: string, count: number) {
  const store = new SqliteEventStore(join(dir, 'replay.db'));
  const users = 1_000;
  for (let u = 0; u < users; u++) {
    await store.append(`user-u${u}`, [{
      type: 'UserRegistered',
      data: { userId: `u${u}`, username: `user${u}`, role: 'user', displayName: `user ${u}`, passwordHash: 'x', registeredAt: new Date().toISOString() },
      metadata: meta(),
    }], 'no-stream');
  }
  const revisions = new Map<number, number>();
  for (let i = users; i < count; i += 100) {
    // batches of 100 single-event streams' appends keep the setup quick
    for (let j = 0; j < 100 && i + j < count; j++) {
      const u = (i + j) % users;
      const r = await store.append(`user-u${u}`, [{ type: 'UserDisplayNameChanged', data: { displayName: `name ${i + j}` }, metadata: meta() }], revisions.get(u) ?? 0);
      revisions.set(u, r.nextExpectedRevision);
    }
  }
  const runner = new ProjectionRunner(store, new MemoryReadStore(), projections, silent);
  const started = performance.now();
  await runner.start();
  const seconds = (performance.now() - started) / 1000;
  await runner.stop();
  await store.close();
  return { replayPerSec: Math.round(count / seconds), replayedEvents: count };
}

/** Append-to-visible: how long after an append returns its event is in the read model. */
async function projectionLag(dir: string, count: number) {
  const store = new SqliteEventStore(join(dir, 'lag.db'));
  const runner = new ProjectionRunner(store, new MemoryReadStore(), projections, silent);
  await runner.start();
  await store.append('user-lag', [{
    type: 'UserRegistered',
    data: { userId: 'lag', username: 'lag', role: 'user', displayName: 'lag', passwordHash: 'x', registeredAt: new Date().toISOString() },
    metadata: meta(),
  }], 'no-stream');
  const lags: number[] = [];
  let revision = 0;
  for (let i = 0; i < count; i++) {
    const started = performance.now();
    const r = await store.append('user-lag', [{ type: 'UserDisplayNameChanged', data: { displayName: `n${i}` }, metadata: meta() }], revision);
    revision = r.nextExpectedRevision;
    await runner.waitFor(r.position);
    lags.push(performance.now() - started);
  }
  await runner.stop();
  await store.close();
  return { projectionLagP50Ms: round(percentile(lags, 50)), projectionLagP99Ms: round(percentile(lags, 99)) };
}

/** HTTP commands with read-your-writes against `npm start` in a child process, over keep-alive. */
async function commands(dir: string, total: number, concurrency: number) {
  const port = await freePort();
  const password = 'bench-admin-password';
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/main.ts'], {
    // Only what this run sets: an inherited TIANQI_MONGO_URL would point at someone else's read models.
    env: {
      PATH: process.env.PATH,
      HOME: process.env.HOME,
      TIANQI_DATA_DIR: join(dir, 'server'),
      TIANQI_HTTP_PORT: String(port),
      TIANQI_HOST: '127.0.0.1',
      TIANQI_SSH_PORT: '0',
      TIANQI_ADMIN_PASSWORD: password,
      TIANQI_MASTER_KEY: randomBytes(32).toString('base64'),
      TIANQI_LOG_LEVEL: 'warn',
    },
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  try {
    const { call, close } = keepAliveClient(port, concurrency);
    const deadline = Date.now() + 30_000;
    for (;;) {
      const ok = await call('GET', '/api/health').then((r) => r.status === 200, () => false);
      if (ok) break;
      if (Date.now() > deadline) throw new Error('server did not start');
      await new Promise((r) => setTimeout(r, 100));
    }
    const login = await call('POST', '/api/v1/auth/login', { username: 'admin', password });
    if (login.status !== 200) throw new Error(`admin login failed: ${login.status} ${login.body}`);
    const token = (JSON.parse(login.body) as { token: string }).token;
    const ids: string[] = [];
    for (let i = 0; i < concurrency; i++) {
      const r = await call('POST', '/api/v1/users', { username: `bench${i}`, password: 'bench-password' }, token);
      ids.push((JSON.parse(r.body) as { id: string }).id);
    }
    let next = 0;
    let failures = 0;
    const latencies: number[] = [];
    const started = performance.now();
    await Promise.all(ids.map(async (id) => {
      while (next < total) {
        const n = next++;
        const t0 = performance.now();
        const r = await call('PATCH', `/api/v1/users/${id}`, { displayName: `名字 ${n}` }, token);
        latencies.push(performance.now() - t0);
        if (r.status !== 200 && failures++ === 0) console.error(`first failed command: ${r.status} ${r.body}`);
      }
    }));
    const seconds = (performance.now() - started) / 1000;
    close();
    if (failures > 0) throw new Error(`${failures} commands failed`);
    return { commandsPerSec: Math.round(total / seconds), commandLatencyP99Ms: round(percentile(latencies, 99)) };
  } finally {
    child.kill('SIGTERM');
  }
}

const round = (n: number) => Math.round(n * 100) / 100;

export async function coreBench(): Promise<Record<string, number>> {
  const dir = mkdtempSync(join(tmpdir(), 'tianqi-bench-'));
  try {
    return {
      ...(await appends(dir, 50_000)),
      ...(await replay(dir, 200_000)),
      ...(await commands(dir, 10_000, 32)),
      ...(await projectionLag(dir, 2_000)),
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
