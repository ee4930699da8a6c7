import { describe, expect, it } from 'vitest';
import { SshAccessSchema, sshAccess } from './ssh-access.ts';

describe('sshAccess', () => {
  it('gives the shell, sftp, scp, rsync, -L and ~/.ssh/config forms for user+instance', () => {
    const access = sshAccess({ host: 'gpu.lab', port: 2026, user: 'zhangsan+train-1', instanceName: 'train-1' });
    expect(SshAccessSchema.parse(access)).toEqual(access);
    expect(access.command).toBe('ssh -p 2026 zhangsan+train-1@gpu.lab');
    expect(access.sftp).toBe('sftp -P 2026 zhangsan+train-1@gpu.lab');
    expect(access.scp).toBe('scp -P 2026 ./model.pt zhangsan+train-1@gpu.lab:/data/');
    expect(access.rsync).toBe("rsync -av -e 'ssh -p 2026' ./dataset/ zhangsan+train-1@gpu.lab:/data/dataset/");
    expect(access.forward).toBe('ssh -N -L 8888:127.0.0.1:8888 -p 2026 zhangsan+train-1@gpu.lab');
    expect(access.sshConfig).toBe('Host tianqi-train-1\n    HostName gpu.lab\n    Port 2026\n    User zhangsan+train-1\n    ServerAliveInterval 30\n');
  });
});
