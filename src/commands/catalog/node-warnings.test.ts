import { describe, expect, it } from 'vitest';
import { nodeWarnings } from './node.routes.ts';

const engine = (architecture: string) => ({ architecture }) as unknown as NonNullable<Parameters<typeof nodeWarnings>[0]['engine']>;
const node = { dockerEndpoint: 'unix:///var/run/docker.sock', dockerTls: false };

describe('node warnings', () => {
  it('warns of a node whose architecture has no helper build, in docker info\'s words or Go\'s', () => {
    const amd64Only = (arch: string) => arch === 'amd64';
    expect(nodeWarnings({ ...node, engine: engine('x86_64') }, amd64Only)).toEqual([]);
    expect(nodeWarnings({ ...node, engine: engine('amd64') }, amd64Only)).toEqual([]);
    expect(nodeWarnings({ ...node, engine: engine('aarch64') }, amd64Only).map((w) => w.code)).toEqual(['HELPER_MISSING']);
    expect(nodeWarnings({ ...node, engine: engine('aarch64') }, amd64Only)[0]!.message).toMatch(/arm64.*npm run build:helper/);
    // not yet connected: nothing known, nothing said
    expect(nodeWarnings({ ...node, engine: null }, amd64Only)).toEqual([]);
  });

  it('warns of a TCP engine without TLS', () => {
    expect(nodeWarnings({ dockerEndpoint: 'tcp://10.0.0.5:2375', dockerTls: false }).map((w) => w.code)).toEqual(['DOCKER_WITHOUT_TLS']);
  });
});
