// `npm run rebuild`: drops every read model and replays the event log into them.
import { openEventStore, openReadStore, projections } from '../app.ts';
import { loadConfig } from '../config.ts';
import { createLogger } from '../logger.ts';
import { rebuildReadModels } from '../projections/rebuild.ts';

const config = loadConfig();
const logger = createLogger(config.logLevel);
if (!config.mongoUrl) {
  console.log('Read models are in memory (no TIANQI_MONGO_URL): they are rebuilt from the log at every start; nothing to do.');
  process.exit(0);
}
const events = await openEventStore(config);
const store = await openReadStore(config);
try {
  const { events: position, ms } = await rebuildReadModels(events, store, projections, logger);
  console.log(`Rebuilt ${projections.length} projections up to position ${position} in ${Math.round(ms)} ms.`);
} finally {
  await store.close();
  await events.close();
}
