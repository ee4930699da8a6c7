import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from './config.ts';
import { describeProblems, preflight } from './preflight.ts';

describe('preflight: what npm start says before it is ready', () => {
  const dir = mkdtempSync(join(tmpdir(), 'tianqi-preflight-'));
  const socket = join(dir, 'docker.sock');
  let engine: Server;
  const builds = (archs: string[]) => ({ forArch: (arch: string) => (archs.includes(arch) ? { binary: Buffer.alloc(1), digest: 'x' } : null) });

  beforeAll(async () => {
    engine = createServer((req, res) => res.end(req.url === '/_ping' ? 'OK' : ''));
    await new Promise<void>((resolve) => engine.listen(socket, resolve));
  });
  afterAll(() => {
    engine.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('finds nothing missing on a machine with a writable data directory, both helper builds and Docker', async () => {
    const config = loadConfig({ TIANQI_DATA_DIR: join(dir, 'data') });
    expect(await preflight(config, builds(['amd64', 'arm64']), socket)).toEqual([]);
  });

  it('says, with what to run, that the data directory cannot be written (fatal), a helper build is missing and Docker does not answer', async () => {
    const file = join(dir, 'a-file');
    writeFileSync(file, '');
    const config = loadConfig({ TIANQI_DATA_DIR: join(file, 'data') });
    const problems = await preflight(config, builds(['amd64']), join(dir, 'no-docker.sock'));
    expect(problems.map((p) => [p.code, p.fatal])).toEqual([['DATA_DIR_NOT_WRITABLE', true], ['HELPER_MISSING', false], ['DOCKER_UNREACHABLE', false]]);
    expect(problems[0]!.text).toMatch(/TIANQI_DATA_DIR/);
    expect(problems[1]!.text).toMatch(/linux\/arm64.*npm run build:helper/s);
    expect(problems[2]!.text).toMatch(/apt-get install -y docker\.io/);
    expect(describeProblems(problems).split('\n').filter((l) => l.startsWith('  ')).length).toBe(3);
  });
});
