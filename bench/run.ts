// `npm run bench -- <suite>` prints the suite's figures as JSON on its last line;
// `npm run bench` runs every suite and also writes bench/results.json.
import { writeFileSync } from 'node:fs';
import { cpus, totalmem } from 'node:os';
import { accessBench } from './access.bench.ts';
import { coreBench } from './core.bench.ts';
import { instancesBench } from './instances.bench.ts';
import { loadBench } from './load.bench.ts';
import { scheduleBench } from './schedule.bench.ts';
import { servicesBench } from './services.bench.ts';
import { sshdBench } from './sshd.bench.ts';

const suites: Record<string, () => Promise<Record<string, number>>> = {
  core: coreBench,
  instances: instancesBench,
  load: loadBench,
  access: accessBench,
  services: servicesBench,
  sshd: sshdBench,
  schedule: scheduleBench,
};

const requested = process.argv.slice(2).filter((a) => a !== '--');
const unknown = requested.filter((s) => !(s in suites));
if (unknown.length > 0) {
  console.error(`unknown suite(s): ${unknown.join(', ')}; known: ${Object.keys(suites).join(', ')}`);
  process.exit(2);
}
const names = requested.length > 0 ? requested : Object.keys(suites);
const results: Record<string, Record<string, number>> = {};
for (const name of names) {
  console.error(`running ${name}…`);
  results[name] = await suites[name]!();
}
const machine = { cpu: cpus()[0]?.model ?? 'unknown', cores: cpus().length, memoryGiB: Math.round(totalmem() / 2 ** 30), node: process.version };
if (requested.length === 0) {
  writeFileSync(new URL('./results.json', import.meta.url), `${JSON.stringify({ machine, at: new Date().toISOString(), results }, null, 2)}\n`);
}
console.log(JSON.stringify(names.length === 1 ? results[names[0]!] : { machine, ...results }));
process.exit(0);
