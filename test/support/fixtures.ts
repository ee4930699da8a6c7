import type { TestApp } from './app.ts';
import { ADMIN_PASSWORD } from './app.ts';
import { ensureServiceImage } from './test-image.ts';

export interface Lab {
  admin: string;
  tokens: Record<string, string>;
  imageId: string;
  specId: string;
  nodeId: string;
}

/** Users, the busybox service image, a 1-core CPU spec and a node on the local dockerd. */
export async function setUpLab(t: TestApp, socket: string, users: string[] = ['alice', 'bob']): Promise<Lab> {
  const address = ensureServiceImage(socket);
  const admin = await t.login('admin', ADMIN_PASSWORD);
  const tokens: Record<string, string> = {};
  for (const name of users) {
    await t.api('POST', '/api/v1/users', { token: admin, body: { username: name, password: `${name}-password` } });
    tokens[name] = await t.login(name, `${name}-password`);
  }
  const image = await t.api<{ id: string }>('POST', '/api/v1/images', { token: admin, body: { name: 'busybox', address } });
  const spec = await t.api<{ id: string }>('POST', '/api/v1/specs', { token: admin, body: { name: 'cpu-1c', cpuCores: 1, memoryGb: 1, pricePerHour: 0.5 } });
  const node = await t.api<{ id: string; dockerStatus: string }>('POST', '/api/v1/nodes', {
    token: admin,
    body: { name: 'local', publicIp: '127.0.0.1', privateIp: '127.0.0.1', dockerEndpoint: `unix://${socket}`, cpuCores: 64, memoryGb: 64 },
  });
  if (node.body.dockerStatus !== 'connected') throw new Error(`local node is ${node.body.dockerStatus}`);
  return { admin, tokens, imageId: image.body.id, specId: spec.body.id, nodeId: node.body.id };
}

export async function waitFor<T>(read: () => Promise<T>, ok: (value: T) => boolean, ms = 20_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await read();
    if (ok(value)) return value;
    if (Date.now() > deadline) throw new Error(`timed out; last value ${JSON.stringify(value)}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Creates an instance and waits until it leaves `creating`. */
export async function runningInstance(t: TestApp, token: string, lab: Lab, name: string): Promise<{ id: string; containerId: string; status: string }> {
  const created = await t.api<{ id: string }>('POST', '/api/v1/instances', { token, body: { name, imageId: lab.imageId, specId: lab.specId } });
  if (created.status !== 201) throw new Error(`create failed: ${JSON.stringify(created.body)}`);
  return waitFor(
    () => t.api<{ id: string; containerId: string; status: string }>('GET', `/api/v1/instances/${created.body.id}`, { token }).then((r) => r.body),
    (i) => i.status !== 'creating',
  );
}

/**
 * Removes the containers and data volumes of this app's instances, and only those: test files run
 * in parallel against one engine, so a cleanup must never touch another file's containers.
 */
export async function removeContainersOf(t: TestApp | undefined, socketPath: string | undefined): Promise<void> {
  if (!t || !socketPath) return;
  const { default: Dockerode } = await import('dockerode');
  const docker = new Dockerode({ socketPath });
  const requested = await t.app.eventStore.readAll({ limit: 1_000_000 }).catch(() => []);
  const ids = requested.filter((e) => e.type === 'InstanceRequested').map((e) => (e.data as { instanceId: string }).instanceId);
  for (const id of ids) {
    for (const c of await docker.listContainers({ all: true, filters: { label: [`tianqi.instance=${id}`] } })) {
      await docker.getContainer(c.Id).remove({ force: true, v: true }).catch(() => undefined);
    }
  }
  for (const v of (await docker.listVolumes({ filters: { label: ['managed-by=tianqi'] } })).Volumes ?? []) {
    if (ids.some((id) => v.Name.includes(id))) await docker.getVolume(v.Name).remove().catch(() => undefined);
  }
  // Each user's network on the node: an engine has room for a few dozen bridges only.
  const owners = new Set(requested.filter((e) => e.type === 'UserRegistered').map((e) => (e.data as { userId: string }).userId));
  for (const network of await docker.listNetworks({ filters: { label: ['managed-by=tianqi'] } })) {
    if (owners.has(network.Labels?.['tianqi.owner'] ?? '')) await docker.getNetwork(network.Id).remove().catch(() => undefined);
  }
}
