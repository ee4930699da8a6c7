// `npm run replay -- --instance <id> --at <ISO time>`: the instance as it was at that moment,
// folded from its event stream (time travel without the server).
import { parseArgs } from 'node:util';
import { openEventStore } from '../app.ts';
import { viewOf } from '../commands/instance/instances.ts';
import { loadConfig } from '../config.ts';
import { instanceDecider, instanceStream } from '../domain/instance/instance.decider.ts';
import { describeInstanceEvent } from '../commands/instance/history.ts';

const { values } = parseArgs({ options: { instance: { type: 'string' }, at: { type: 'string' } } });
if (!values.instance) {
  console.error('usage: npm run replay -- --instance <id> [--at <ISO time>]');
  process.exit(2);
}
const at = values.at ? new Date(values.at) : new Date();
if (Number.isNaN(at.getTime())) {
  console.error(`--at must be an ISO time such as 2026-11-26T10:00:00Z, not ${values.at}`);
  process.exit(2);
}
const store = await openEventStore(loadConfig());
try {
  const events = (await store.readStream(instanceStream(values.instance))).filter((e) => e.metadata.time <= at.toISOString());
  const state = events.reduce((s, e) => instanceDecider.evolve(s, e as never), instanceDecider.initialState());
  if (state.status === 'none' || state.status === 'requested') {
    console.error(`instance ${values.instance} did not exist at ${at.toISOString()}`);
    process.exit(1);
  }
  for (const e of events) console.log(`${e.metadata.time}  ${describeInstanceEvent(e)}`);
  console.log(JSON.stringify(viewOf(state, events.at(-1)!.metadata.time), null, 2));
} finally {
  await store.close();
}
