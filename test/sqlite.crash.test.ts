import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { SqliteEventStore } from '../src/adapters/eventstore/sqlite.event-store.ts';

const dir = mkdtempSync(join(tmpdir(), 'tianqi-crash-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Runs the append loop in a child, kills it with SIGKILL once `acks` appends were acknowledged. */
function appendUntilKilled(file: string, acks: number): Promise<string[]> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', join(import.meta.dirname, 'support/append-loop.ts'), file], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const lines: string[] = [];
    let buffer = '';
    let stderr = '';
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    child.stdout.on('data', (chunk: Buffer) => {
      buffer += chunk.toString();
      const parts = buffer.split('\n');
      buffer = parts.pop()!;
      lines.push(...parts);
      if (lines.length >= acks && !child.killed) child.kill('SIGKILL');
    });
    child.on('exit', (_code, signal) => {
      if (signal === 'SIGKILL') resolve(lines);
      else reject(new Error(`append loop exited on its own: ${stderr}`));
    });
  });
}

describe('SQLite event store durability', () => {
  it('keeps every acknowledged append after kill -9 of the appending process, three times over', async () => {
    const file = join(dir, 'events.db');
    for (let round = 0; round < 3; round++) {
      const acked = await appendUntilKilled(file, 2_000 + Math.floor(Math.random() * 2_000));
      const store = new SqliteEventStore(file);
      try {
        for (const line of acked) {
          const [stream, revision, position] = line.split(' ');
          const events = await store.readStream(stream!, { fromRevision: Number(revision) });
          expect(events[0], `acknowledged ${line} is missing after the kill`).toBeDefined();
          expect(events[0]!.position).toBe(Number(position));
        }
        // No torn or duplicated event: revisions and positions are dense and increasing.
        const all = await store.readAll({ limit: 1_000_000 });
        const byStream = new Map<string, typeof all>();
        for (const e of all) {
          if (!byStream.has(e.stream)) byStream.set(e.stream, []);
          byStream.get(e.stream)!.push(e);
        }
        for (const events of byStream.values()) {
          expect(events.map((e) => e.revision)).toEqual(events.map((_, i) => i));
          expect(events.map((e) => (e.data as { i: number }).i)).toEqual(events.map((_, i) => i));
        }
      } finally {
        await store.close();
      }
    }
  }, 120_000);
});
