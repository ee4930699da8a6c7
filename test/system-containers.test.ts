import Docker from 'dockerode';
import { afterAll, expect, it } from 'vitest';
import { ensureSystemContainer } from '../src/adapters/docker/docker-networks.ts';
import { tarOf } from '../src/commands/instance/tar.ts';
import { describeWithService } from './support/services.ts';
import { ensureTestImage } from './support/test-image.ts';

const socket = process.env.TIANQI_TEST_DOCKER_SOCKET;

/**
 * A new build of a system container (the node guard after a helper update) supersedes the old one
 * on an engine that many nodes share (50 in the load suite; a lab that registers one engine under
 * several names): every node ensures it at once, and all of them must succeed, not one.
 */
describeWithService('Docker engine', Boolean(socket), 'start dockerd (see .ci/run) and set TIANQI_TEST_DOCKER_SOCKET', 'system containers superseded under concurrency', () => {
  const docker = new Docker({ socketPath: socket });
  const role = `test-supersede-${Date.now()}`;

  afterAll(async () => {
    for (const c of await docker.listContainers({ all: true, filters: { label: [`tianqi.role=${role}`] } })) {
      await docker.getContainer(c.Id).remove({ force: true }).catch(() => undefined);
    }
  });

  it('lets 8 concurrent ensures of the new version through while the old one is being removed', async () => {
    const image = ensureTestImage(socket);
    const spec = (name: string) => ({
      name, image, labels: { 'tianqi.role': role }, capAdd: [], cmd: ['sh', '-c', 'trap "exit 0" TERM; while :; do sleep 1; done'],
      rootfs: () => tarOf([]), supersedes: { 'tianqi.role': role },
    });
    await ensureSystemContainer(docker, spec(`${role}-old`));
    const results = await Promise.allSettled(Array.from({ length: 8 }, () => ensureSystemContainer(docker, spec(`${role}-new`))));
    expect(results.filter((r) => r.status === 'rejected').map((r) => String((r as PromiseRejectedResult).reason))).toEqual([]);
    const left = await docker.listContainers({ all: true, filters: { label: [`tianqi.role=${role}`] } });
    expect(left.map((c) => c.Names[0])).toEqual([`/${role}-new`]);
  }, 60_000);
});
