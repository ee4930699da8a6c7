import { describe, expect, it } from 'vitest';
import { describeExit } from './instance.decider.ts';
import { engineFailure, exitWords, progressWords, reasonWords, stoppedReason } from './words.ts';

describe('words for the console', () => {
  it('gives every status reason the platform writes a code, with its parameters', () => {
    for (const [exitCode, oom] of [[0, false], [137, false], [143, false], [1, false], [null, false], [137, true]] as const) {
      // The sentence the projection stores and the code the console shows say the same thing.
      expect(reasonWords(describeExit(exitCode, oom))).toEqual(exitWords(exitCode, oom));
    }
    expect(reasonWords('exited with code 2')).toEqual({ code: 'EXITED_CODE', params: { exitCode: 2 } });
    expect(reasonWords(stoppedReason('user', 'zhangsan'))).toEqual({ code: 'STOPPED_BY', params: { user: 'zhangsan' } });
    expect(reasonWords(stoppedReason('scheduled', undefined)).code).toBe('STOPPED_SCHEDULED');
    expect(reasonWords(stoppedReason('idle', undefined)).code).toBe('STOPPED_IDLE');
    expect(reasonWords(stoppedReason('arrears', undefined)).code).toBe('STOPPED_ARREARS');
    expect(reasonWords('GPU 1, 3 no longer seen on the node')).toEqual({ code: 'GPU_LOST', params: { cards: '1, 3' } });
    for (const reason of ['running', 'requested', 'placed; preparing the container', 'retrying: preparing the container', 'the container is gone from the node']) {
      expect(reasonWords(reason).code, reason).not.toBe('ENGINE_FAILED');
    }
  });

  it('reads the pull progress the provisioner records', () => {
    expect(progressWords('pulling pytorch/pytorch:2.4 — 3/9 layers, 120.5 MB of 2.1 GB')).toEqual({
      code: 'PULLING_BYTES', params: { image: 'pytorch/pytorch:2.4', done: 3, layers: 9, downloaded: '120.5 MB', size: '2.1 GB' },
    });
    expect(progressWords('pulling busybox — 0/1 layers').code).toBe('PULLING_LAYERS');
    expect(progressWords('pulling busybox')).toEqual({ code: 'PULLING', params: { image: 'busybox' } });
    expect(progressWords('creating the container').code).toBe('CREATING_CONTAINER');
  });

  it('turns engine errors into plain reasons, the raw text kept as the detail', () => {
    const cases: [string, string][] = [
      ['(HTTP code 500) server error - could not select device driver "nvidia" with capabilities: [[gpu]]', 'NO_GPU_DRIVER'],
      ['(HTTP code 404) no such image - No such image: pytorch:nope', 'IMAGE_NOT_FOUND'],
      ['pull access denied for private/x, repository does not exist or may require \'docker login\'', 'IMAGE_NOT_FOUND'],
      ['Bind for 0.0.0.0:30001 failed: port is already allocated', 'PORT_IN_USE'],
      ['write /var/lib/docker/tmp/x: no space left on device', 'DISK_FULL'],
      ['connect ECONNREFUSED 10.0.0.5:2376', 'ENGINE_UNREACHABLE'],
      ['connection refused at tcp://127.0.0.1:9376', 'ENGINE_UNREACHABLE'],
      ['connecting to tcp://10.0.0.9:2376 timed out', 'ENGINE_UNREACHABLE'],
      ['TLS certificate rejected: self signed certificate (check the CA certificate)', 'ENGINE_TLS'],
      ['no Docker socket at unix:///var/run/docker.sock', 'ENGINE_SOCKET'],
      ['toomanyrequests: You have reached your pull rate limit', 'REGISTRY_RATE_LIMIT'],
      ['OCI runtime create failed: something new', 'ENGINE_FAILED'],
    ];
    for (const [raw, code] of cases) expect(engineFailure(raw), raw).toEqual({ code, params: {}, detail: raw });
    expect(reasonWords('creation failed: (HTTP code 404) no such image - No such image: x').code).toBe('IMAGE_NOT_FOUND');
  });
});
