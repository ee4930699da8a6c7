// `npm run rebuild`: drops every read model and replays the event log into them.
import { hostname } from 'node:os';
import { openEventStore, openLeaseStore, openReadStore, projections } from '../app.ts';
import { loadConfig } from '../config.ts';
import { createLogger } from '../logger.ts';
import { LeaseKeeper } from '../ports/lease.port.ts';
import { PROJECTIONS_LEASE } from '../projections/leased-projection-runner.ts';
import { rebuildReadModels } from '../projections/rebuild.ts';

const config = loadConfig();
const logger = createLogger(config.logLevel);
if (!config.mongoUrl) {
  console.log('Read models are in memory (no TIANQI_MONGO_URL): they are rebuilt from the log at every start; nothing to do.');
  process.exit(0);
}
const events = await openEventStore(config);
const store = await openReadStore(config);
const leases = await openLeaseStore(config);
// Holding the projections lease keeps replicas that start meanwhile from projecting into the same database.
const keeper = new LeaseKeeper(leases, PROJECTIONS_LEASE, `rebuild@${hostname()}-${process.pid}`, config.lease, logger);
try {
  if (!(await keeper.start())) {
    const holder = (await leases.holderOf(PROJECTIONS_LEASE))?.holder;
    console.error(`Replica ${holder ?? '(unknown)'} is running the projections into this database: stop every replica before rebuilding.`);
    process.exitCode = 1;
  } else {
    const { events: position, ms } = await rebuildReadModels(events, store, projections, logger);
    console.log(`Rebuilt ${projections.length} projections up to position ${position} in ${Math.round(ms)} ms.`);
  }
} finally {
  await keeper.stop();
  await leases.close();
  await store.close();
  await events.close();
}
