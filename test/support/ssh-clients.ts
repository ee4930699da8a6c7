import { spawn } from 'node:child_process';

export interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs a real client (ssh, sshpass, sftp) to completion with `input` on its stdin. */
export function run(command: string, args: string[], input = '', timeoutMs = 20_000): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
    child.stdin.end(input);
  });
}

/**
 * OpenSSH client options for a test that signs in with its own key only: no config file, no
 * agent, the jump host's key accepted and remembered in `knownHosts`.
 */
export function keyOptions(key: string, knownHosts: string): string[] {
  return ['-F', '/dev/null', '-o', 'StrictHostKeyChecking=no', '-o', `UserKnownHostsFile=${knownHosts}`, '-o', 'LogLevel=ERROR',
    '-i', key, '-o', 'IdentitiesOnly=yes', '-o', 'IdentityAgent=none'];
}
