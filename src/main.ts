import { App } from './app.ts';
import { ConfigError, loadConfig } from './config.ts';
import { FileHelperBuilds } from './adapters/helper/file.helper-builds.ts';
import { createLogger } from './logger.ts';
import { describeProblems, preflight } from './preflight.ts';
import { ForeignReadModelsError } from './projections/log-identity.ts';

let config;
try {
  config = loadConfig();
} catch (err) {
  if (err instanceof ConfigError) {
    console.error(err.message);
    process.exit(2);
  }
  throw err;
}
const logger = createLogger(config.logLevel);
// What is missing is said now, in plain words, not found out by the first instance.
const problems = await preflight(config, new FileHelperBuilds(config.helperDir));
if (problems.length > 0) {
  console.error(`\nTianQi (天启) found something missing:${describeProblems(problems)}`);
  for (const p of problems) logger[p.fatal ? 'fatal' : 'warn']({ code: p.code }, p.text);
  if (problems.some((p) => p.fatal)) process.exit(1);
}
const app = new App(config, logger);

let stopping = false;
async function shutdown(signal: string) {
  if (stopping) return;
  stopping = true;
  logger.info({ signal }, 'shutting down');
  const force = setTimeout(() => {
    logger.error('shutdown took longer than 15 s; exiting');
    process.exit(1);
  }, 15_000).unref();
  try {
    await app.stop();
    clearTimeout(force);
    logger.info('stopped');
    process.exit(0);
  } catch (err) {
    logger.error({ err }, 'shutdown failed');
    process.exit(1);
  }
}
process.on('SIGTERM', () => void shutdown('SIGTERM'));
process.on('SIGINT', () => void shutdown('SIGINT'));

try {
  await app.start();
} catch (err) {
  logger.fatal({ err }, 'start failed');
  // Says what to do, so it is also printed as it is, not only inside a JSON log line.
  if (err instanceof ForeignReadModelsError) console.error(`\n${err.message}\n`);
  await app.stop().catch(() => undefined);
  process.exit(1);
}
