// The jump host next to what a user would run instead: OpenSSH's own sshd on this machine, with
// `internal-sftp`, a throwaway user and key, in the same run and with the same OpenSSH clients.
// Each round moves the same bytes both ways, one after the other: a 100 MB download and upload
// (`sftp -b -`), 1,000 small files up and down (`put -r`, `get -r`) and a 100 MB read through
// `ssh -N -L` from a service that sends a file (busybox nc, in the container and on this host).
// The jump host's files live in the instance's data volume, reached through the node's engine
// (tianqi-helper over a docker exec stream, as on every node); sshd's in a folder of this host.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, chownSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { promisify } from 'node:util';
import { startTestApp, type TestApp } from '../test/support/app.ts';
import { removeContainersOf, runningInstance, setUpLab } from '../test/support/fixtures.ts';
import { freePort } from '../test/support/ports.ts';
import { catDirect } from './access.bench.ts';
import { openForward, SftpBatch } from './openssh.ts';
import { percentile } from './stats.ts';

const dockerSocket = process.env.TIANQI_TEST_DOCKER_SOCKET ?? '/var/run/docker.sock';
const run = promisify(execFile);
const round = (n: number) => Math.round(n * 100) / 100;

const BIG_BYTES = 100 * 1_000_000;
const SMALL_FILES = 1_000;
const ROUNDS = 3;
/** The container's service that sends the big file to a client that sends a line. */
const SERVICE_PORT = 7001;

/** Where the figures of one kind of transfer go: each path's seconds per round. */
type Side = 'jump' | 'sshd';
type Measure = 'download' | 'upload' | 'smallUp' | 'smallDown' | 'forward';

/** OpenSSH's sshd on 127.0.0.1 for one user and key, `internal-sftp`, until `stop`. */
async function startSshd(work: string, publicKey: string): Promise<{ port: number; user: string; home: string; stop(): Promise<void> }> {
  const sshd = ['/usr/sbin/sshd', '/usr/bin/sshd'].find((p) => existsSync(p));
  if (!sshd) throw new Error('the sshd bench needs OpenSSH\'s server (apt-get install openssh-server); it is not started as a service, only for the run');
  const dir = join(work, 'sshd');
  const home = join(work, 'home');
  mkdirSync(dir);
  mkdirSync(home);
  const root = process.getuid?.() === 0;
  // As root: a throwaway user, removed at the end. Otherwise sshd runs as, and admits, this user.
  const user = root ? `tqbench${randomBytes(3).toString('hex')}` : (process.env.USER ?? 'root');
  if (root) {
    // '*': no password to sign in with, but not a locked account, which sshd without PAM refuses.
    await run('useradd', ['--no-create-home', '--home-dir', home, '--shell', '/bin/sh', '--password', '*', user]);
    const { stdout } = await run('id', ['-u', user]);
    const uid = Number(stdout.trim());
    chownSync(home, uid, Number((await run('id', ['-g', user])).stdout.trim()));
    mkdirSync('/run/sshd', { recursive: true });
  }
  await run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', join(dir, 'host_ed25519')]);
  writeFileSync(join(dir, 'authorized_keys'), publicKey);
  const port = await freePort();
  writeFileSync(join(dir, 'sshd_config'), [
    `Port ${port}`, 'ListenAddress 127.0.0.1', `HostKey ${join(dir, 'host_ed25519')}`, `PidFile ${join(dir, 'sshd.pid')}`,
    `AuthorizedKeysFile ${join(dir, 'authorized_keys')}`, 'PasswordAuthentication no', 'KbdInteractiveAuthentication no',
    'UsePAM no', 'StrictModes no', `AllowUsers ${user}`, 'AllowTcpForwarding yes', 'Subsystem sftp internal-sftp', '',
  ].join('\n'));
  const child = spawn(sshd, ['-D', '-e', '-f', join(dir, 'sshd_config')], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (text: string) => (stderr = (stderr + text).slice(-4_096)));
  const stop = async () => {
    child.kill();
    await new Promise((resolve) => (child.exitCode !== null ? resolve(null) : child.once('exit', resolve)));
    if (root) await run('userdel', [user]).catch(() => undefined);
  };
  for (const deadline = Date.now() + 10_000; ; await delay(100)) {
    if (child.exitCode !== null) throw new Error(`sshd exited: ${stderr.trim()}`);
    if (existsSync(join(dir, 'sshd.pid'))) break;
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`sshd did not start: ${stderr.trim()}`);
    }
  }
  return { port, user, home, stop };
}

/** Reads a forwarded port to its end in a process of its own (as a local client would): seconds and bytes. */
async function readPort(port: number): Promise<{ seconds: number; bytes: number }> {
  const script = `const s=require('net').connect(${port},'127.0.0.1',()=>s.write('\\n'));let n=0;const t=process.hrtime.bigint();`
    + `s.on('data',(c)=>{n+=c.length});s.on('end',()=>{console.log(JSON.stringify({seconds:Number(process.hrtime.bigint()-t)/1e9,bytes:n}))});`
    + `s.on('error',(e)=>{console.error(e.message);process.exit(1)})`;
  const { stdout } = await run(process.execPath, ['-e', script], { maxBuffer: 1 << 20 });
  return JSON.parse(stdout) as { seconds: number; bytes: number };
}

/**
 * CPU time in ms so far of this host's processes by name (their user and system ticks, from
 * /proc): the helper's (in the container, a process of this host like any other) and sshd's,
 * whose session processes keep the name `sshd` whatever their title says.
 */
function cpuMsOf(name: string): number {
  const tick = 1000 / 100;
  let ms = 0;
  for (const pid of readdirSync('/proc')) {
    if (!/^\d+$/.test(pid)) continue;
    let stat: string;
    try {
      stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    } catch {
      continue;
    }
    const open = stat.indexOf('(');
    const close = stat.lastIndexOf(')');
    if (stat.slice(open + 1, close) !== name) continue;
    const fields = stat.slice(close + 2).split(' ');
    ms += (Number(fields[11]) + Number(fields[12])) * tick;
  }
  return ms;
}

/** The small files: 1,000 of 1–8 KiB, random, in `dir`. */
function writeSmallFiles(dir: string): number {
  mkdirSync(dir);
  let bytes = 0;
  for (let i = 0; i < SMALL_FILES; i++) {
    const size = 1_024 * (1 + (i % 8));
    writeFileSync(join(dir, `f${String(i).padStart(4, '0')}.bin`), randomBytes(size));
    bytes += size;
  }
  return bytes;
}

export async function sshdBench(): Promise<Record<string, number>> {
  const work = mkdtempSync(join(tmpdir(), 'tianqi-bench-sshd-'));
  chmodSync(work, 0o755);
  let t: TestApp | undefined;
  let sshd: Awaited<ReturnType<typeof startSshd>> | undefined;
  const closing: (() => void)[] = [];
  const servers: ChildProcess[] = [];
  try {
    await run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'bench@sshd', '-f', join(work, 'id_ed25519')]);
    const publicKey = readFileSync(join(work, 'id_ed25519.pub'), 'utf8');
    sshd = await startSshd(work, publicKey);

    const sshPort = await freePort();
    t = await startTestApp({ TIANQI_LOG_LEVEL: 'warn', TIANQI_POLL_INTERVAL_MS: '60000', TIANQI_SSH_PORT: String(sshPort) });
    const lab = await setUpLab(t, dockerSocket, ['bencher']);
    const token = lab.tokens.bencher!;
    await t.api('POST', '/api/v1/users/me/ssh-keys', { token, body: { name: 'bench', publicKey } });
    const instance = await runningInstance(t, token, lab, 'sshd-bench');
    if (instance.status !== 'running') throw new Error(`the bench instance is ${instance.status}`);
    const inContainer = (command: string) => run('docker', ['exec', instance.containerId, '/bin/sh', '-c', command], { env: { ...process.env, DOCKER_HOST: `unix://${dockerSocket}` } });

    // The same 100 MB on both sides, and the small files here to upload.
    const big = join(work, 'big.bin');
    writeFileSync(big, randomBytes(BIG_BYTES));
    await run('cp', [big, join(sshd.home, 'big.bin')]);
    await inContainer(`head -c ${BIG_BYTES} /dev/urandom > /data/big.bin`);
    const smallBytes = writeSmallFiles(join(work, 'small'));

    // A service on each side that sends the big file once a client has sent a line.
    await inContainer(`(nc -ll -p ${SERVICE_PORT} -e /bin/sh -c 'read -r _ && exec cat /data/big.bin' &) >/dev/null 2>&1`);
    const hostService = await freePort();
    const server = spawn('busybox', ['nc', '-ll', '-p', String(hostService), '-e', '/bin/sh', '-c', `read -r _ && exec cat ${join(sshd.home, 'big.bin')}`], { stdio: 'ignore' });
    servers.push(server);

    const login: Record<Side, { port: number; user: string; dir: string; service: number }> = {
      jump: { port: sshPort, user: 'bencher+sshd-bench', dir: '/data', service: SERVICE_PORT },
      sshd: { port: sshd.port, user: sshd.user, dir: sshd.home, service: hostService },
    };
    const sftp = {} as Record<Side, SftpBatch>;
    const forward = {} as Record<Side, Awaited<ReturnType<typeof openForward>>>;
    for (const side of ['jump', 'sshd'] as const) {
      sftp[side] = await SftpBatch.open(work, login[side].port, login[side].user);
      closing.push(() => sftp[side].close());
      forward[side] = await openForward(work, login[side].port, login[side].user, login[side].service);
      closing.push(() => forward[side].close());
    }

    const seconds: Record<Side, Record<Measure, number[]>> = {
      jump: { download: [], upload: [], smallUp: [], smallDown: [], forward: [] },
      sshd: { download: [], upload: [], smallUp: [], smallDown: [], forward: [] },
    };
    const once = async (side: Side, measure: Measure, r: number) => {
      const { dir } = login[side];
      const local = join(work, `${side}-${measure}-${r}`);
      let ms: number;
      const before = { platform: process.cpuUsage(), helper: cpuMsOf('tianqi-helper'), sshd: cpuMsOf('sshd') };
      const perMB = (used: number) => used / (BIG_BYTES / 1e6);
      const spent = (kind: 'download' | 'upload') => {
        if (side === 'jump') {
          const used = process.cpuUsage(before.platform);
          cpu.platform[kind].push(perMB((used.user + used.system) / 1000));
          cpu.helper[kind].push(perMB(cpuMsOf('tianqi-helper') - before.helper));
        } else {
          cpu.sshd[kind].push(perMB(cpuMsOf('sshd') - before.sshd));
        }
      };
      switch (measure) {
        case 'download':
          ms = await sftp[side].run(`get ${dir}/big.bin ${local}`);
          spent('download');
          if (statSync(local).size !== BIG_BYTES) throw new Error(`${side}: the download is ${statSync(local).size} bytes`);
          rmSync(local);
          break;
        case 'upload':
          ms = await sftp[side].run(`put ${big} ${dir}/up-${r}.bin`);
          spent('upload');
          break;
        case 'smallUp':
          ms = await sftp[side].run(`put -r ${join(work, 'small')} ${dir}/small-${r}`);
          break;
        case 'smallDown':
          ms = await sftp[side].run(`get -r ${dir}/small-${r} ${local}`);
          rmSync(local, { recursive: true });
          break;
        case 'forward': {
          const read = await readPort(forward[side].local);
          if (read.bytes !== BIG_BYTES) throw new Error(`${side}: ${read.bytes} bytes came through the forward; ssh says ${forward[side].stderr()}`);
          ms = read.seconds * 1000;
          break;
        }
      }
      seconds[side][measure].push(ms / 1000);
    };
    const measures: Measure[] = ['download', 'upload', 'smallUp', 'smallDown', 'forward'];
    /** The engine's exec stream alone (`docker exec cat` through dockerode): the ceiling of the jump host's path on this machine. */
    const execStream: number[] = [];
    /**
     * CPU ms per MB of the server side of each bulk transfer: the platform (this process: the
     * clients are others) and the helper in the container, or sshd (its sftp is in-process).
     */
    const cpu = { platform: { download: [] as number[], upload: [] as number[] }, helper: { download: [] as number[], upload: [] as number[] }, sshd: { download: [] as number[], upload: [] as number[] } };
    // One untimed round warms both up (the helper is copied into the container on first use).
    for (const side of ['jump', 'sshd'] as const) {
      await sftp[side].run(`get ${login[side].dir}/big.bin /dev/null`);
      await readPort(forward[side].local);
    }
    for (let r = 0; r < ROUNDS; r++) {
      for (const measure of measures) {
        // Alternating which side goes first, so neither always gets the warmer page cache.
        const order: Side[] = r % 2 === 0 ? ['jump', 'sshd'] : ['sshd', 'jump'];
        for (const side of order) await once(side, measure, r);
      }
      const direct = await catDirect({ dockerSocket, containerId: instance.containerId }, '/data/big.bin');
      if (direct.bytes !== BIG_BYTES) throw new Error(`docker exec cat sent ${direct.bytes} bytes`);
      execStream.push(BIG_BYTES / 1e6 / (direct.ms / 1000));
    }
    // The uploads arrived whole on both sides (the last round's).
    const uploaded = (await inContainer(`wc -c < /data/up-${ROUNDS - 1}.bin; ls /data/small-${ROUNDS - 1} | wc -l`)).stdout.trim().split(/\s+/).map(Number);
    if (uploaded[0] !== BIG_BYTES || uploaded[1] !== SMALL_FILES) throw new Error(`the container holds ${uploaded.join(' and ')} after the uploads`);
    if (statSync(join(sshd.home, `up-${ROUNDS - 1}.bin`)).size !== BIG_BYTES) throw new Error('sshd\'s upload is incomplete');

    const figures: Record<string, number> = { bigFileBytes: BIG_BYTES, smallFiles: SMALL_FILES, smallFilesBytes: smallBytes, rounds: ROUNDS };
    for (const measure of measures) {
      const jump = percentile(seconds.jump[measure], 50);
      const open = percentile(seconds.sshd[measure], 50);
      const perSecond = measure === 'smallUp' || measure === 'smallDown' ? SMALL_FILES : BIG_BYTES / 1e6;
      const unit = measure === 'smallUp' || measure === 'smallDown' ? 'FilesPerSec' : 'MBps';
      figures[`${measure}JumpHost${unit}`] = round(perSecond / jump);
      figures[`${measure}Sshd${unit}`] = round(perSecond / open);
      // The jump host's rate as a share of sshd's (target: 0.7 or more).
      figures[`${measure}OfSshd`] = round(open / jump);
    }
    figures.execStreamMBps = round(percentile(execStream, 50));
    for (const kind of ['download', 'upload'] as const) {
      // Server-side CPU per MB: the platform and the helper next to sshd (the clients are the same).
      figures[`${kind}PlatformCpuMsPerMB`] = round(percentile(cpu.platform[kind], 50));
      figures[`${kind}HelperCpuMsPerMB`] = round(percentile(cpu.helper[kind], 50));
      figures[`${kind}SshdCpuMsPerMB`] = round(percentile(cpu.sshd[kind], 50));
    }
    return figures;
  } finally {
    for (const close of closing.reverse()) close();
    for (const server of servers) server.kill();
    await sshd?.stop();
    await removeContainersOf(t, dockerSocket);
    await t?.stop();
    rmSync(work, { recursive: true, force: true });
  }
}
