import { afterEach, describe, expect, it } from 'vitest';
import { describeAddress, openDockerClient, parseEndpoint } from './docker-client.ts';

describe('parseEndpoint', () => {
  it('reads unix sockets and tcp host:port, with Docker\'s default ports', () => {
    expect(parseEndpoint('unix:///var/run/docker.sock', false)).toEqual({ transport: 'unix', socketPath: '/var/run/docker.sock' });
    expect(parseEndpoint(' tcp://10.0.0.5:2376 ', true)).toEqual({ transport: 'tcp', host: '10.0.0.5', port: 2376 });
    expect(parseEndpoint('tcp://gpu-7', false)).toEqual({ transport: 'tcp', host: 'gpu-7', port: 2375 });
    expect(parseEndpoint('tcp://gpu-7', true)).toEqual({ transport: 'tcp', host: 'gpu-7', port: 2376 });
    expect(parseEndpoint('tcp://[::1]:2376', true)).toEqual({ transport: 'tcp', host: '::1', port: 2376 });
  });

  it('rejects what it cannot use, saying what it expects', () => {
    expect(() => parseEndpoint('http://10.0.0.5:2375', false)).toThrow(/unsupported Docker endpoint.*tcp:\/\/host:port/);
    expect(() => parseEndpoint('10.0.0.5:2375', false)).toThrow(/unsupported Docker endpoint/);
    expect(() => parseEndpoint('ssh://root@gpu-7', false)).toThrow(/unsupported Docker endpoint/);
    expect(() => parseEndpoint('unix://docker.sock', false)).toThrow(/absolute socket path/);
    expect(() => parseEndpoint('unix:///var/run/docker.sock', true)).toThrow(/TLS applies only to tcp/);
    expect(() => parseEndpoint('tcp://10.0.0.5:2376/v1.41', true)).toThrow(/just a host and a port/);
    expect(() => parseEndpoint('tcp://admin:pw@10.0.0.5:2376', true)).toThrow(/just a host and a port/);
    expect(() => parseEndpoint('tcp://10.0.0.5:99999', true)).toThrow(/not a valid tcp endpoint/);
  });

  it('describes an address the way people write it', () => {
    expect(describeAddress({ transport: 'unix', socketPath: '/run/docker.sock' })).toBe('/run/docker.sock');
    expect(describeAddress({ transport: 'tcp', host: '10.0.0.5', port: 2376 })).toBe('10.0.0.5:2376');
    expect(describeAddress({ transport: 'tcp', host: '::1', port: 2376 })).toBe('[::1]:2376');
  });
});

describe('openDockerClient', () => {
  const names = ['DOCKER_HOST', 'DOCKER_TLS_VERIFY', 'DOCKER_CLIENT_TIMEOUT'] as const;
  const saved = names.map((name) => process.env[name]);
  afterEach(() => {
    names.forEach((name, i) => {
      if (saved[i] === undefined) delete process.env[name];
      else process.env[name] = saved[i];
    });
  });

  it('takes nothing from DOCKER_HOST and friends of this process', () => {
    process.env.DOCKER_HOST = 'tcp://10.9.9.9:2376';
    process.env.DOCKER_TLS_VERIFY = '1';
    process.env.DOCKER_CLIENT_TIMEOUT = '1';
    const client = openDockerClient({ endpoint: 'unix:///run/docker.sock', tls: false }, { keepAlive: false });
    const modem = client.docker.modem as unknown as Record<string, unknown>;
    expect(modem).toMatchObject({ socketPath: '/run/docker.sock', host: undefined, protocol: 'http', timeout: undefined });
    client.close();
  });

  it('hands the TLS material to the client only when TLS is on', () => {
    const material = { ca: 'CA PEM', cert: 'CERT PEM', key: 'KEY PEM' };
    const secure = openDockerClient({ endpoint: 'tcp://10.0.0.5:2376', tls: true, ...material }, { keepAlive: true });
    expect(secure.docker.modem).toMatchObject({ host: '10.0.0.5', port: 2376, protocol: 'https', ...material });
    const plain = openDockerClient({ endpoint: 'tcp://10.0.0.5:2375', tls: false, ...material }, { keepAlive: true });
    expect(plain.docker.modem).toMatchObject({ protocol: 'http', ca: undefined, cert: undefined, key: undefined });
    secure.close();
    plain.close();
  });
});
