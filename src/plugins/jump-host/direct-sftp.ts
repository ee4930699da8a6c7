import type { ServiceDialer } from '../../commands/instance/service-dialer.ts';
import type { ContainerRuntime, ExecSession, NodeTarget } from '../../ports/container-runtime.port.ts';

/** How long the helper may take to start listening and say where. */
const LISTEN_LINE_MS = 10_000;

/**
 * The helper's SFTP server reached over the container's own address instead of the engine's exec
 * stream, where this host reaches that address (a local node): `tianqi-helper sftp --listen`
 * says `listen <port> <token>` on the exec's stdout, and the session's bytes go over a plain TCP
 * connection that sends the token first. The exec stays as the server's lifeline: its stderr and
 * exit status are the session's, and closing it ends the server (an upload cut off commits
 * nothing, as over the exec stream). Null where it cannot be had; the caller then runs `cmd` over
 * the exec stream as before.
 */
export async function directSftp(
  runtime: ContainerRuntime,
  dialer: ServiceDialer,
  target: NodeTarget,
  containerId: string,
  cmd: readonly string[],
): Promise<ExecSession | null> {
  if (!dialer.reachesDirectly(target) || cmd[1] !== 'sftp') return null;
  const exec = await runtime.exec(target, containerId, { cmd: [cmd[0]!, 'sftp', '--listen', ...cmd.slice(2)], tty: false });
  const listening = await firstLine(exec);
  const match = listening ? /^listen (\d{1,5}) ([0-9a-f]{32})$/.exec(listening) : null;
  const socket = match ? await dialer.dialContainer(target, containerId, Number(match[1])) : null;
  if (!match || !socket) {
    exec.close();
    return null;
  }
  socket.write(`${match[2]}\n`);
  // Nothing more comes on stdout; stderr and the exit status are the server's.
  exec.stream.resume();
  exec.stream.on('error', () => undefined);
  return {
    stream: socket,
    ...(exec.stderr ? { stderr: exec.stderr } : {}),
    resize: async () => undefined,
    exited: () => exec.exited(),
    close: () => {
      socket.destroy();
      exec.close();
    },
  };
}

/** The exec's first line on stdout, or null when none comes in time. */
function firstLine(exec: ExecSession): Promise<string | null> {
  return new Promise((resolve) => {
    let text = '';
    const done = (line: string | null) => {
      clearTimeout(timer);
      exec.stream.off('data', onData);
      exec.stream.off('close', onClose);
      exec.stream.pause();
      resolve(line);
    };
    const onData = (chunk: Buffer) => {
      text += chunk.toString('latin1');
      const end = text.indexOf('\n');
      if (end >= 0) done(text.slice(0, end));
      else if (text.length > 200) done(null);
    };
    const onClose = () => done(null);
    const timer = setTimeout(() => done(null), LISTEN_LINE_MS);
    exec.stream.on('data', onData);
    exec.stream.on('close', onClose);
  });
}
