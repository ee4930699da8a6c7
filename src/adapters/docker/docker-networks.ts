import { Readable } from 'node:stream';
import type Docker from 'dockerode';
import type { NetworkPlan, SystemContainer } from '../../ports/container-runtime.port.ts';
import { statPath } from './docker-archive.ts';

const NOT_FOUND = 404;
const CONFLICT = 409;
const FORBIDDEN = 403;

const statusOf = (error: unknown) => (error as { statusCode?: number } | null)?.statusCode;

/**
 * A bridge network with the plan's bridge name and labels, created unless the engine has one of
 * that name. Containers on it talk to each other (ICC on); Docker keeps bridges apart from each
 * other, and the node guard keeps them off the node.
 */
export async function ensureNetwork(docker: Docker, network: NetworkPlan): Promise<void> {
  try {
    await docker.getNetwork(network.name).inspect();
    return;
  } catch (error) {
    if (statusOf(error) !== NOT_FOUND) throw error;
  }
  try {
    await docker.createNetwork({
      Name: network.name,
      Driver: 'bridge',
      CheckDuplicate: true,
      ...(network.internal ? { Internal: true } : {}),
      Labels: { ...network.labels },
      Options: {
        'com.docker.network.bridge.name': network.bridgeName,
        'com.docker.network.bridge.enable_icc': 'true',
        'com.docker.network.bridge.enable_ip_masquerade': 'true',
      },
    });
  } catch (error) {
    // Two creates raced (the engine answers 409, or 403/500 "same bridge name"): the other one made it.
    const made = await docker.getNetwork(network.name).inspect().then(() => true, () => false);
    if (!made) throw error;
  }
}

export async function removeNetworkIfUnused(docker: Docker, name: string): Promise<boolean> {
  const network = docker.getNetwork(name);
  try {
    // The network's own list has running containers only; a stopped one still needs it to start.
    const users = await docker.listContainers({ all: true, filters: { network: [name] } });
    if (users.length > 0) return false;
    await network.remove();
    return true;
  } catch (error) {
    const status = statusOf(error);
    if (status === NOT_FOUND) return true;
    // "has active endpoints": a container joined meanwhile.
    if (status === FORBIDDEN || status === CONFLICT) return false;
    throw error;
  }
}

/** Running, restarted by the engine always, in the host's network with only the capabilities asked for. */
export async function ensureSystemContainer(docker: Docker, spec: SystemContainer): Promise<void> {
  const container = docker.getContainer(spec.name);
  try {
    const info = await container.inspect();
    if (!info.State.Running) await container.start();
    return;
  } catch (error) {
    if (statusOf(error) !== NOT_FOUND) throw error;
  }
  await importUnlessPresent(docker, spec);
  if (spec.supersedes) {
    const label = Object.entries(spec.supersedes).map(([k, v]) => `${k}=${v}`);
    for (const older of await docker.listContainers({ all: true, filters: { label } })) {
      if (older.Names.some((n) => n === `/${spec.name}`)) continue;
      // Gone, or being removed by a node that shares this engine and got there first.
      await docker.getContainer(older.Id).remove({ force: true }).catch((error: unknown) => {
        if (statusOf(error) !== NOT_FOUND && statusOf(error) !== CONFLICT) throw error;
      });
    }
  }
  try {
    await docker.createContainer(systemContainerOptions(spec, {
      RestartPolicy: { Name: 'always' },
      LogConfig: { Type: 'json-file', Config: { 'max-size': '1m', 'max-file': '2' } },
    }));
  } catch (error) {
    if (statusOf(error) !== CONFLICT) throw error;
    // Another caller holds the name: its container is there once its create is through.
    await untilPresent(container);
  }
  await container.start().catch((error: unknown) => {
    // Started by whoever won a race to create it.
    if (statusOf(error) !== 304) throw error;
  });
  // A program that fails at once (no nftables on the node) is restarted by the engine for ever:
  // say why instead of reporting it running.
  await new Promise((resolve) => setTimeout(resolve, SETTLE_MS));
  const info = await container.inspect();
  if (!info.State.Running || info.RestartCount > 0) {
    const output = (await container.logs({ stdout: true, stderr: true, tail: 5 })) as unknown as Buffer;
    throw new Error(`${spec.name} does not stay up: ${printable(output) || `exit code ${info.State.ExitCode}`}`);
  }
}

/** Waits (up to 10 s) for a container whose name another caller reserved to exist. */
async function untilPresent(container: Docker.Container): Promise<void> {
  for (let attempt = 0; ; attempt++) {
    try {
      await container.inspect();
      return;
    } catch (error) {
      if (statusOf(error) !== NOT_FOUND || attempt >= 100) throw error;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }
}

/** A system container as the engine takes it: host network, every capability dropped but those asked for, read-only. */
function systemContainerOptions(spec: SystemContainer, host: Docker.HostConfig = {}): Docker.ContainerCreateOptions {
  return {
    name: spec.name,
    Image: spec.image,
    Cmd: [...spec.cmd],
    Labels: { ...spec.labels },
    HostConfig: {
      NetworkMode: 'host',
      Binds: [...(spec.binds ?? [])],
      CapDrop: ['ALL'],
      CapAdd: [...spec.capAdd],
      SecurityOpt: ['no-new-privileges:true'],
      ReadonlyRootfs: true,
      ...host,
    },
  };
}

/** Removes every container with these labels, running or not; how many there were. */
export async function removeSystemContainers(docker: Docker, labels: Readonly<Record<string, string>>): Promise<number> {
  const label = Object.entries(labels).map(([k, v]) => `${k}=${v}`);
  const found = await docker.listContainers({ all: true, filters: { label } });
  for (const c of found) {
    await docker.getContainer(c.Id).remove({ force: true }).catch((error: unknown) => {
      if (statusOf(error) !== NOT_FOUND) throw error;
    });
  }
  return found.length;
}

/**
 * Runs the system container's command once (host network, only the capabilities asked for, no
 * restart) and removes it: its exit code and the last lines it wrote.
 */
export async function runSystemTask(docker: Docker, spec: SystemContainer): Promise<{ exitCode: number; output: string }> {
  await importUnlessPresent(docker, spec);
  await docker.getContainer(spec.name).remove({ force: true }).catch((error: unknown) => {
    if (statusOf(error) !== NOT_FOUND) throw error;
  });
  const container = await docker.createContainer(systemContainerOptions(spec));
  try {
    await container.start();
    const { StatusCode } = (await container.wait()) as { StatusCode: number };
    const output = (await container.logs({ stdout: true, stderr: true, tail: 5 })) as unknown as Buffer;
    return { exitCode: StatusCode, output: printable(output) };
  } finally {
    await container.remove({ force: true }).catch(() => undefined);
  }
}

/** How long nvidia-smi may take in the probe container (a wedged driver makes it hang). */
const GPU_QUERY_TIMEOUT_MS = 20_000;

/**
 * Runs `nvidia-smi <args>` once in a container of `image` given every card (`--gpus all`, with the
 * `utility` capability: the NVIDIA container toolkit mounts nvidia-smi into it), no network; its
 * stdout. `null` when the engine has no NVIDIA device driver (not a GPU node).
 */
export async function runGpuQuery(docker: Docker, image: SystemContainer, args: readonly string[]): Promise<{ stdout: string } | { error: string } | null> {
  await importUnlessPresent(docker, image);
  let container: Docker.Container;
  try {
    container = await docker.createContainer({
      Image: image.image,
      Entrypoint: ['nvidia-smi'],
      Cmd: [...args],
      Env: ['NVIDIA_DRIVER_CAPABILITIES=utility', 'NVIDIA_VISIBLE_DEVICES=all'],
      Labels: { ...image.labels },
      HostConfig: {
        NetworkMode: 'none',
        CapDrop: ['ALL'],
        SecurityOpt: ['no-new-privileges:true'],
        ReadonlyRootfs: true,
        DeviceRequests: [{ Driver: 'nvidia', Count: -1, Capabilities: [['gpu', 'utility']] }],
      },
    });
  } catch (error) {
    if (/could not select device driver/i.test(String((error as Error).message))) return null;
    throw error;
  }
  try {
    try {
      await container.start();
    } catch (error) {
      // dockerd registers its NVIDIA driver only where the NVIDIA container toolkit is installed.
      if (/could not select device driver/i.test(String((error as Error).message))) return null;
      return { error: `the probe container did not start: ${(error as Error).message}` };
    }
    const waited = await Promise.race([
      container.wait() as Promise<{ StatusCode: number }>,
      new Promise<null>((resolve) => setTimeout(() => resolve(null), GPU_QUERY_TIMEOUT_MS).unref()),
    ]);
    const raw = (await container.logs({ stdout: true, stderr: true })) as unknown as Buffer;
    const output = demultiplex(raw);
    if (waited === null) return { error: `nvidia-smi did not answer within ${GPU_QUERY_TIMEOUT_MS / 1000} s (a wedged driver?)` };
    if (waited.StatusCode !== 0) return { error: output.trim().split('\n').slice(-2).join(' / ') || `nvidia-smi exited with ${waited.StatusCode}` };
    return { stdout: output };
  } finally {
    await container.remove({ force: true }).catch(() => undefined);
  }
}

/**
 * Whether `file` is in the node's directory `hostDir`: a container of `image` is made (not started)
 * with the directory bound read-only, and the archive API is asked about the file. A directory
 * that is not there is not created (a bind mount of type bind refuses a missing source).
 */
export async function hostFileExists(docker: Docker, image: SystemContainer, hostDir: string, file: string): Promise<boolean> {
  await importUnlessPresent(docker, image);
  let container: Docker.Container;
  try {
    container = await docker.createContainer({
      Image: image.image,
      Cmd: ['/tianqi-helper'],
      Labels: { ...image.labels },
      HostConfig: { NetworkMode: 'none', Mounts: [{ Type: 'bind', Source: hostDir, Target: '/probe', ReadOnly: true }] },
    });
  } catch (error) {
    if (/bind source path does not exist|invalid mount config/i.test(String((error as Error).message))) return false;
    throw error;
  }
  try {
    return (await statPath(docker, container.id, `/probe/${file}`)) !== null;
  } finally {
    await container.remove({ force: true }).catch(() => undefined);
  }
}

/** The text of a multiplexed log, frame headers taken out. */
function demultiplex(buffer: Buffer): string {
  let text = '';
  for (let offset = 0; offset + 8 <= buffer.length;) {
    const length = buffer.readUInt32BE(offset + 4);
    text += buffer.toString('utf8', offset + 8, Math.min(buffer.length, offset + 8 + length));
    offset += 8 + length;
  }
  return text;
}

/** How long a new system container must stay up before it counts as running. */
const SETTLE_MS = 500;

/** The text of a multiplexed log excerpt, without its frame headers. */
function printable(buffer: Buffer): string {
  return demultiplex(buffer).trim().split('\n').slice(-2).join(' / ');
}

async function importUnlessPresent(docker: Docker, spec: SystemContainer): Promise<void> {
  try {
    await docker.getImage(spec.image).inspect();
    return;
  } catch (error) {
    if (statusOf(error) !== NOT_FOUND) throw error;
  }
  const [repo, tag] = splitImage(spec.image);
  const stream = await docker.importImage(Readable.from([spec.rootfs()]) as unknown as NodeJS.ReadableStream, { repo, tag });
  let failure: string | undefined;
  await new Promise<void>((resolve, reject) => {
    docker.modem.followProgress(
      stream,
      (error: Error | null) => (error ? reject(error) : failure ? reject(new Error(failure)) : resolve()),
      (event: { error?: string }) => (failure ??= event.error),
    );
  });
}

function splitImage(image: string): [string, string] {
  const colon = image.lastIndexOf(':');
  return colon > image.lastIndexOf('/') ? [image.slice(0, colon), image.slice(colon + 1)] : [image, 'latest'];
}
