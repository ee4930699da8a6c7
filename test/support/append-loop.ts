// Child process for the kill -9 test: appends forever and prints each acknowledged append.
import { SqliteEventStore } from '../../src/adapters/eventstore/sqlite.event-store.ts';

const [file] = process.argv.slice(2);
if (!file) throw new Error('usage: append-loop.ts <db file>');
const store = new SqliteEventStore(file);
const stream = `crash-${process.pid}`;
let expected: number | 'no-stream' = 'no-stream';
for (let i = 0; ; i++) {
  const result = await store.append(
    stream,
    [{ type: 'Tick', data: { i }, metadata: { time: new Date().toISOString() } }],
    expected,
  );
  expected = result.nextExpectedRevision;
  process.stdout.write(`${stream} ${result.nextExpectedRevision} ${result.position}\n`);
}
