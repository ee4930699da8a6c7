import { randomBytes } from 'node:crypto';
import { accessSync, constants, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { join } from 'node:path';
import type { Config } from './config.ts';
import type { HelperBuilds } from './ports/helper-builds.port.ts';

/** Something the platform needs that is not there: one paragraph saying what, and what to run. */
export interface PreflightProblem {
  readonly code: 'DATA_DIR_NOT_WRITABLE' | 'HELPER_MISSING' | 'DOCKER_UNREACHABLE';
  /** Fatal problems stop the start; the others leave the platform up, saying what will not work. */
  readonly fatal: boolean;
  readonly text: string;
}

const LOCAL_DOCKER = '/var/run/docker.sock';

/**
 * What `npm start` checks before it says it is ready, so that the first instance never finds
 * out instead: the data directory is writable, tianqi-helper is there for the architectures
 * nodes use, and a Docker engine answers on this machine (the quick start's node).
 */
export async function preflight(config: Config, helpers: HelperBuilds, dockerSocket = LOCAL_DOCKER): Promise<PreflightProblem[]> {
  const problems: PreflightProblem[] = [];
  const dataDir = config.dataDir;
  try {
    mkdirSync(dataDir, { recursive: true });
    const probe = join(dataDir, `.write-test-${randomBytes(4).toString('hex')}`);
    writeFileSync(probe, '');
    rmSync(probe);
  } catch (err) {
    problems.push({
      code: 'DATA_DIR_NOT_WRITABLE', fatal: true,
      text: `The data directory ${dataDir} cannot be written (${(err as NodeJS.ErrnoException).code ?? String(err)}): the event log, the master key and the SSH host key live there. `
        + `Run  sudo mkdir -p ${dataDir} && sudo chown "$(id -un)" ${dataDir}  or set TIANQI_DATA_DIR to a directory this user owns.`,
    });
  }
  const missing = ['amd64', 'arm64'].filter((arch) => helpers.forArch(arch) === null);
  if (missing.length > 0) {
    problems.push({
      code: 'HELPER_MISSING', fatal: false,
      text: `tianqi-helper is missing for linux/${missing.join(' and linux/')} in ${config.helperDir}: instances cannot be placed on such nodes (the node guard runs it), and SFTP, scp and port forwarding into them do not work. `
        + 'Run  npm run build:helper  (unpacks the build shipped in helper/prebuilt/, or builds it with Go 1.23+ when helper/ was changed), or point TIANQI_HELPER_DIR at a directory with linux-<arch>/tianqi-helper.',
    });
  }
  if (!(await dockerAnswers(dockerSocket))) {
    let access = '';
    try {
      accessSync(dockerSocket, constants.R_OK | constants.W_OK);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EACCES') access = ` This user may not use ${dockerSocket}: add it to the docker group (sudo usermod -aG docker "$(id -un)", then sign in again) or run the platform as root.`;
    }
    problems.push({
      code: 'DOCKER_UNREACHABLE', fatal: false,
      text: `No Docker engine answers on unix://${dockerSocket}, so this machine cannot be its own node (the quick start's).${access || ` Install and start one: sudo apt-get install -y docker.io && sudo systemctl enable --now docker.`} `
        + 'Nodes on other machines can still be added (节点管理 → 添加节点, Docker over TLS).',
    });
  }
  return problems;
}

function dockerAnswers(socketPath: string): Promise<boolean> {
  return new Promise((resolve) => {
    const req = request({ socketPath, path: '/_ping', timeout: 3_000 }, (res) => {
      res.resume();
      resolve(res.statusCode === 200);
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(false));
    req.end();
  });
}

/** The problems as the console of `npm start` shows them: a paragraph each, plain text. */
export function describeProblems(problems: readonly PreflightProblem[]): string {
  return problems.map((p) => `\n  ${p.fatal ? '✗' : '!'} ${p.text}\n`).join('');
}
