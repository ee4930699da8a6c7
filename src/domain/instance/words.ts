/**
 * What happened to an instance as a code and its parameters, for the console to put in the
 * reader's language (vue-i18n `words.<code>`); the English sentences stay for the API's readers.
 * `detail` is the engine's own text where there is one: shown behind a "details" toggle.
 */
export interface Words {
  readonly code: string;
  readonly params: Readonly<Record<string, string | number>>;
  readonly detail?: string;
}

/** Words with their parameters and, where there is one, the engine's text. */
export const words = (code: string, params: Record<string, string | number> = {}, detail?: string): Words => ({ code, params, ...(detail ? { detail } : {}) });

/** How a container ended. */
export function exitWords(exitCode: number | null, oomKilled: boolean): Words {
  if (oomKilled) return words('OOM_KILLED');
  if (exitCode === null) return words('STOPPED');
  if (exitCode === 0) return words('EXITED_OK');
  if (exitCode === 137) return words('KILLED');
  if (exitCode === 143) return words('TERMINATED');
  return words('EXITED_CODE', { exitCode });
}

/** Engine failures people meet, in plain words; the engine's text is the detail. */
const ENGINE_FAILURES: readonly [RegExp, string][] = [
  [/could not select device driver|nvidia-container-cli|unknown or invalid runtime name: nvidia/i, 'NO_GPU_DRIVER'],
  [/no such image|manifest unknown|pull access denied|repository does not exist|not found: manifest/i, 'IMAGE_NOT_FOUND'],
  [/port is already allocated|address already in use/i, 'PORT_IN_USE'],
  [/no space left on device/i, 'DISK_FULL'],
  [/cannot allocate memory|out of memory/i, 'OUT_OF_MEMORY'],
  [/no Docker socket at|is not a socket|permission denied on/i, 'ENGINE_SOCKET'],
  [/connect ECONNREFUSED|ETIMEDOUT|EHOSTUNREACH|socket hang up|cannot be reached|did not answer|connection refused|nothing listens|timed out|is unreachable|could not be resolved|closed the connection/i, 'ENGINE_UNREACHABLE'],
  [/certificate|TLS|handshake/i, 'ENGINE_TLS'],
  [/toomanyrequests|rate limit/i, 'REGISTRY_RATE_LIMIT'],
  [/unauthorized|authentication required|denied/i, 'REGISTRY_DENIED'],
];

/** A failure the engine (or the registry behind it) reported, as a plain reason with the raw text behind it. */
export function engineFailure(raw: string): Words {
  const known = ENGINE_FAILURES.find(([pattern]) => pattern.test(raw));
  return words(known ? known[1] : 'ENGINE_FAILED', {}, raw);
}

const PULLING = /^pulling (\S+)(?: — (\d+)\/(\d+) layers(?:, (.+) of (.+))?)?$/;

/** Provisioning progress as the provisioner records it ("pulling x — 2/5 layers, 12 MB of 40 MB", "creating the container"). */
export function progressWords(text: string): Words {
  const pull = PULLING.exec(text);
  if (pull) {
    const [, image, done, layers, downloaded, size] = pull;
    if (downloaded && size) return words('PULLING_BYTES', { image: image!, done: Number(done), layers: Number(layers), downloaded, size });
    if (layers) return words('PULLING_LAYERS', { image: image!, done: Number(done), layers: Number(layers) });
    return words('PULLING', { image: image! });
  }
  if (text === 'creating the container') return words('CREATING_CONTAINER');
  return engineFailure(text);
}

/**
 * The instance's status reason (its read model's English sentence) as words: every sentence the
 * platform writes there has a code; anything else came from the engine.
 */
export function reasonWords(reason: string): Words {
  switch (reason) {
    case '':
    case 'running':
      return words('RUNNING');
    case 'requested':
      return words('REQUESTED');
    case 'placed; preparing the container':
    case 'retrying: preparing the container':
      return words('PREPARING');
    case 'the container is gone from the node':
      return words('VANISHED');
    case 'stopped at its scheduled time':
      return words('STOPPED_SCHEDULED');
    case 'stopped after being idle':
      return words('STOPPED_IDLE');
    case 'stopped: the prepaid balance is used up':
      return words('STOPPED_ARREARS');
    case 'stopped':
      return words('STOPPED');
    case 'killed: out of memory (OOM)':
      return words('OOM_KILLED');
    case 'exited normally (code 0)':
      return words('EXITED_OK');
    case 'killed (code 137, SIGKILL)':
      return words('KILLED');
    case 'stopped (code 143, SIGTERM)':
      return words('TERMINATED');
    default:
      break;
  }
  let m: RegExpExecArray | null;
  if ((m = /^stopped by (.+)$/.exec(reason))) return words('STOPPED_BY', { user: m[1]! });
  if ((m = /^exited with code (-?\d+)$/.exec(reason))) return words('EXITED_CODE', { exitCode: Number(m[1]) });
  if ((m = /^GPU ([\d, ]+) no longer seen on the node$/.exec(reason))) return words('GPU_LOST', { cards: m[1]! });
  if (PULLING.test(reason) || reason === 'creating the container') return progressWords(reason);
  if ((m = /^creation failed: ([\s\S]+)$/.exec(reason))) return engineFailure(m[1]!);
  return engineFailure(reason);
}

/** Why a stop that completed was made, for its status reason. */
export type StopCause = 'user' | 'scheduled' | 'idle' | 'arrears';

export function stoppedReason(cause: StopCause | undefined, byUsername: string | undefined): string {
  if (cause === 'scheduled') return 'stopped at its scheduled time';
  if (cause === 'idle') return 'stopped after being idle';
  if (cause === 'arrears') return 'stopped: the prepaid balance is used up';
  return byUsername ? `stopped by ${byUsername}` : 'stopped';
}
