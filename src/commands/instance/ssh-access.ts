import { z } from 'zod';

export const SshAccessSchema = z.object({
  /** `ssh -p <port> <user>@<host>`: a shell in the instance. */
  command: z.string(),
  host: z.string(),
  port: z.number(),
  user: z.string(),
  /** `sftp -P …`: an SFTP session (also what FileZilla/WinSCP take: host, port, user). */
  sftp: z.string(),
  /** `scp -P … <file> <user>@<host>:/data/`: a copy into the data volume. */
  scp: z.string(),
  /** `rsync -e 'ssh -p …' …`: needs rsync in the image. */
  rsync: z.string(),
  /** `ssh -N -L 8888:127.0.0.1:8888 …`: JupyterLab's port on this machine. */
  forward: z.string(),
  /** Host alias for VS Code Remote-SSH (and plain `ssh <alias>`). */
  alias: z.string(),
  /** The `~/.ssh/config` block for that alias. */
  sshConfig: z.string(),
});

export type SshAccess = z.infer<typeof SshAccessSchema>;

/** The commands a user copies to reach one instance through the jump host. Pure. */
export function sshAccess(input: { host: string; port: number; user: string; instanceName: string }): SshAccess {
  const { host, port, user, instanceName } = input;
  const target = `${user}@${host}`;
  const alias = `tianqi-${instanceName}`;
  return {
    command: `ssh -p ${port} ${target}`,
    host,
    port,
    user,
    sftp: `sftp -P ${port} ${target}`,
    scp: `scp -P ${port} ./model.pt ${target}:/data/`,
    rsync: `rsync -av -e 'ssh -p ${port}' ./dataset/ ${target}:/data/dataset/`,
    forward: `ssh -N -L 8888:127.0.0.1:8888 -p ${port} ${target}`,
    alias,
    sshConfig: [
      `Host ${alias}`,
      `    HostName ${host}`,
      `    Port ${port}`,
      `    User ${user}`,
      '    ServerAliveInterval 30',
      '',
    ].join('\n'),
  };
}
