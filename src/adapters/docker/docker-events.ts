import type { IncomingMessage } from 'node:http';
import { StringDecoder } from 'node:string_decoder';
import type Dockerode from 'dockerode';
import { Observable } from 'rxjs';
import type { ContainerEvent } from '../../ports/container-runtime.port.ts';
import { EngineRejectedError } from '../../ports/container-runtime.port.ts';
import type { ConnectionAttempt } from './connection-error.ts';
import { classifyConnectionError } from './connection-error.ts';
import { describeAddress } from './docker-client.ts';

/** Reconnect delays: the first retry comes quickly, a node that stays away is asked every 15 s. */
export const BACKOFF_INITIAL_MS = 250;
export const BACKOFF_MAX_MS = 15_000;
/** A connection that lasted this long was healthy: the next outage starts over at the first delay. */
export const HEALTHY_AFTER_MS = 10_000;
/**
 * How far before the last event a reconnect asks the engine to replay from. Events of one
 * nanosecond can arrive in any order across a reconnect; the replayed ones are dropped by key.
 */
export const RESUME_OVERLAP_NS = 1_000_000_000n;
/** Keys of delivered events kept for de-duplication; far more than a second of any real node's events. */
export const DEDUPE_CAPACITY = 4096;
/**
 * An event stream is silent while nothing happens, so a link that died without a FIN or RST
 * (a host gone, a cable pulled) looks just like a quiet node. A ping now and then tells them apart.
 */
export const PROBE_INTERVAL_MS = 20_000;
export const PROBE_TIMEOUT_MS = 10_000;

/**
 * Attribute keys Docker adds to a container event next to the container's labels (they are all
 * merged in `Actor.Attributes`): name and image always, the rest for some actions (die, kill,
 * exec_*, rename, resize, commit). What remains are the labels. A label that has one of these
 * names cannot be told apart and is lost; ours are namespaced, so they never do.
 */
const EVENT_ATTRIBUTES = new Set([
  'name',
  'image',
  'exitCode',
  'signal',
  'execDuration',
  'execID',
  'oldName',
  'height',
  'width',
  'comment',
  'imageID',
  'imageRef',
]);

export type ConnectionListener = (up: boolean, reason?: string) => void;

/**
 * Container events of the node behind `docker`: every action of every container, from
 * `sinceNano` on (inclusive, as Docker's `since` is) or from now. The stream never errors: when
 * it ends or breaks it reconnects with backoff and resumes a second before the last event it saw,
 * dropping events it delivered already. The engine keeps only its last few hundred events, so
 * after a long outage some may be gone: `onConnection(true)` after a `false` is the cue to list
 * the containers again. `onConnection` hears each change of state, the first included.
 */
export function containerEvents(
  docker: Dockerode,
  _nodeId: string,
  sinceNano?: bigint,
  onConnection?: ConnectionListener,
): Observable<ContainerEvent> {
  return new Observable<ContainerEvent>((subscriber) => {
    const delivered = new RecentKeys(DEDUPE_CAPACITY);
    let resumeFrom = sinceNano;
    let up: boolean | undefined;
    let delay: number | undefined;
    let closed = false;
    let current: Connection | undefined;
    let retry: NodeJS.Timeout | undefined;

    const report = (state: boolean, reason?: string) => {
      if (state === up) return;
      up = state;
      onConnection?.(state, reason);
    };

    const connect = () => {
      const connection = new Connection();
      current = connection;
      const since = resumeFrom === undefined ? undefined : clampedSince(resumeFrom - RESUME_OVERLAP_NS, sinceNano);
      const query = { filters: { type: ['container'] }, ...(since === undefined ? {} : { since: formatSince(since) }) };
      openStream(docker, '/events', query, connection.signal).then(
        (stream) => {
          if (connection !== current) {
            stream.destroy();
            return;
          }
          connection.open(stream);
          resumeFrom ??= engineClock(stream);
          // Keeps idle middleboxes from dropping the quiet connection, and finds a dead peer in the end.
          stream.socket.setKeepAlive(true, PROBE_INTERVAL_MS);
          report(true);
          const lines = new LineSplitter();
          stream.on('data', (chunk: Buffer) => {
            if (connection !== current) return;
            for (const line of lines.push(chunk)) {
              const parsed = parseContainerEvent(line);
              if (parsed === undefined) continue;
              if (resumeFrom === undefined || parsed.event.timeNano > resumeFrom) resumeFrom = parsed.event.timeNano;
              if (!delivered.add(parsed.key)) continue;
              subscriber.next(parsed.event);
            }
          });
          stream.on('end', () => lost(connection, 'the engine ended the event stream'));
          stream.on('error', (error: Error) => lost(connection, brokenReason(error)));
          stream.on('close', () => lost(connection, 'the event stream closed'));
          probe(connection);
        },
        (error: unknown) => lost(connection, refusalReason(error, docker)),
      );
    };

    const probe = (connection: Connection) => {
      connection.timer = setTimeout(() => {
        const deadline = setTimeout(
          () => lost(connection, `the engine did not answer a ping within ${PROBE_TIMEOUT_MS / 1000} s`),
          PROBE_TIMEOUT_MS,
        );
        connection.timer = deadline;
        (docker as unknown as AbortablePing).ping({ abortSignal: connection.signal }).then(
          () => {
            clearTimeout(deadline);
            if (connection === current) probe(connection);
          },
          (error: unknown) => {
            clearTimeout(deadline);
            lost(connection, `the engine did not answer a ping: ${refusalReason(error, docker)}`);
          },
        );
      }, PROBE_INTERVAL_MS);
    };

    const lost = (connection: Connection, reason: string) => {
      if (closed || connection !== current) return;
      current = undefined;
      const lasted = connection.close();
      report(false, reason);
      delay = delay === undefined || lasted >= HEALTHY_AFTER_MS ? BACKOFF_INITIAL_MS : Math.min(delay * 2, BACKOFF_MAX_MS);
      retry = setTimeout(connect, delay);
    };

    connect();
    return () => {
      closed = true;
      clearTimeout(retry);
      current?.close();
      current = undefined;
    };
  });
}

/** docker-modem passes `abortSignal` on to the ping request; @types/dockerode declares ping without options. */
interface AbortablePing {
  ping(options: { abortSignal: AbortSignal }): Promise<unknown>;
}

/** One try at the event stream: its request, its response once there, its probe timer. */
class Connection {
  private readonly controller = new AbortController();
  private stream: IncomingMessage | undefined;
  private openedAt: number | undefined;
  timer: NodeJS.Timeout | undefined;

  get signal(): AbortSignal {
    return this.controller.signal;
  }

  open(stream: IncomingMessage): void {
    this.stream = stream;
    this.openedAt = Date.now();
  }

  /** Ends the request, the response and the probe; says how long the stream was open (0 if never). */
  close(): number {
    clearTimeout(this.timer);
    this.controller.abort();
    this.stream?.destroy();
    return this.openedAt === undefined ? 0 : Date.now() - this.openedAt;
  }
}

/** Never before the caller's own `since`: the overlap must not reach events it did not ask for. */
function clampedSince(since: bigint, floor: bigint | undefined): bigint {
  const atLeastZero = since < 0n ? 0n : since;
  return floor !== undefined && atLeastZero < floor ? floor : atLeastZero;
}

/**
 * The engine's clock when the stream opened, from the response's Date header (whole seconds, so
 * never late), for a reconnect before any event arrived; such a reconnect may also bring events
 * of up to two seconds before the subscription. `since` is read by the engine's clock, which need
 * not agree with ours; ours is the fallback when the header is missing.
 */
function engineClock(stream: IncomingMessage): bigint {
  const date = Date.parse(stream.headers.date ?? '');
  return BigInt(Number.isNaN(date) ? Date.now() : date) * 1_000_000n;
}

/** Node reports a response cut off in the middle as a bare "aborted". */
function brokenReason(error: Error): string {
  return error.message === 'aborted' ? 'the connection to the engine was cut' : `the event stream broke: ${error.message}`;
}

function refusalReason(error: unknown, docker: Dockerode): string {
  if (error instanceof EngineRejectedError) return `the engine refused the request (HTTP ${error.statusCode}: ${error.message})`;
  return classifyConnectionError(error, attemptOf(docker)).reason;
}

/** docker-modem keeps the address it was built with; @types/docker-modem leaves the fields out. */
interface ModemAddress {
  readonly socketPath?: unknown;
  readonly host?: string;
  readonly port?: number | string;
  readonly protocol?: string;
  readonly ca?: unknown;
  readonly cert?: unknown;
}

function attemptOf(docker: Dockerode): ConnectionAttempt {
  const modem = docker.modem as unknown as ModemAddress;
  if (typeof modem.socketPath === 'string') {
    return { target: modem.socketPath, transport: 'unix', tls: false, caCertificate: false, clientCertificate: false };
  }
  return {
    target: describeAddress({ transport: 'tcp', host: modem.host ?? '', port: Number(modem.port) }),
    transport: 'tcp',
    tls: modem.protocol === 'https',
    caCertificate: Boolean(modem.ca),
    clientCertificate: Boolean(modem.cert),
  };
}

/** Docker's `since`: seconds, a dot and nine digits of nanoseconds, exact where a float would not be. */
export function formatSince(nano: bigint): string {
  const seconds = nano / 1_000_000_000n;
  const fraction = nano % 1_000_000_000n;
  return `${seconds}.${fraction.toString().padStart(9, '0')}`;
}

interface RawEvent {
  readonly Type?: unknown;
  readonly Action?: unknown;
  readonly id?: unknown;
  readonly time?: unknown;
  readonly Actor?: { readonly ID?: unknown; readonly Attributes?: Record<string, unknown> | null };
}

/**
 * One line of the `/events` stream as a container event and its de-duplication key
 * (`timeNano|id|action`, with Docker's full action); undefined for anything else. `timeNano` is
 * read from the text: it is above 2^53, and JSON.parse would round it off by up to 256 ns.
 */
export function parseContainerEvent(line: string): { key: string; event: ContainerEvent } | undefined {
  let raw: RawEvent;
  try {
    raw = JSON.parse(line) as RawEvent;
  } catch {
    // dockerd writes whole JSON lines; one that is not cannot be an event worth a broken stream.
    return undefined;
  }
  if (typeof raw !== 'object' || raw === null || raw.Type !== 'container' || typeof raw.Action !== 'string') return undefined;
  const id = typeof raw.Actor?.ID === 'string' ? raw.Actor.ID : typeof raw.id === 'string' ? raw.id : undefined;
  if (id === undefined) return undefined;
  const timeNano = timeNanoOf(line, raw.time);
  if (timeNano === undefined) return undefined;

  const attributes = raw.Actor?.Attributes ?? {};
  const labels: Record<string, string> = {};
  for (const [key, value] of Object.entries(attributes)) {
    if (!EVENT_ATTRIBUTES.has(key) && typeof value === 'string') labels[key] = value;
  }
  const exitCode = typeof attributes.exitCode === 'string' && attributes.exitCode !== '' ? Number(attributes.exitCode) : null;
  return {
    key: `${timeNano}|${id}|${raw.Action}`,
    event: {
      containerId: id,
      name: typeof attributes.name === 'string' ? attributes.name : '',
      labels,
      // `exec_start: sh -c …`, `health_status: healthy`: the command or status is not part of the action.
      action: raw.Action.split(':')[0]!.trim(),
      exitCode: Number.isNaN(exitCode) ? null : exitCode,
      timeNano,
    },
  };
}

function timeNanoOf(line: string, time: unknown): bigint | undefined {
  // dockerd encodes with no spaces; a label named timeNano has a string value and cannot match.
  const match = /"timeNano":(\d+)/.exec(line);
  if (match) return BigInt(match[1]!);
  return typeof time === 'number' && Number.isInteger(time) ? BigInt(time) * 1_000_000_000n : undefined;
}

/** A set that forgets its oldest keys beyond `capacity`. */
export class RecentKeys {
  private readonly keys = new Set<string>();

  constructor(private readonly capacity: number) {}

  /** False when the key is there already. */
  add(key: string): boolean {
    if (this.keys.has(key)) return false;
    this.keys.add(key);
    if (this.keys.size > this.capacity) this.keys.delete(this.keys.values().next().value!);
    return true;
  }
}

/**
 * Newline-delimited text from a byte stream: lines may be split across chunks, and so may a
 * multibyte character. Blank lines are skipped. What is left unterminated when a stream breaks
 * is a line cut off, and is never returned.
 */
export class LineSplitter {
  private readonly decoder = new StringDecoder('utf8');
  private rest = '';

  push(chunk: Buffer): string[] {
    const lines = (this.rest + this.decoder.write(chunk)).split('\n');
    this.rest = lines.pop()!;
    return lines.filter((line) => line.trim() !== '');
  }
}

/**
 * GETs a streaming endpoint (events, stats, logs) and resolves with the response once its headers
 * arrive. docker-modem is used directly: dockerode's typings allow no abort signal on stats nor a
 * string `since` on events, and its non-following logs come back buffered and run through
 * JSON.parse. Aborting `signal` ends the request, before or after the answer. A refusal becomes
 * EngineRejectedError with Docker's own message; a failed connection is rejected as it came.
 */
/** Streaming requests (events, logs, stats) open to engines now: what a leak would grow. */
export const openEngineStreams = { count: 0 };

export function openStream(
  docker: Dockerode,
  path: string,
  query: Record<string, unknown>,
  signal: AbortSignal,
): Promise<IncomingMessage> {
  return new Promise((resolve, reject) => {
    docker.modem.dial(
      { path: `${path}?`, method: 'GET', options: query, isStream: true, abortSignal: signal, statusCodes: { 200: true } },
      (error, result) => {
        if (error) {
          reject(rejectionOf(error));
          return;
        }
        const response = result as IncomingMessage;
        openEngineStreams.count += 1;
        response.once('close', () => (openEngineStreams.count -= 1));
        resolve(response);
      },
    );
  });
}

/**
 * For a streaming request docker-modem puts Docker's message only into its error text, as
 * `(HTTP code 404) unexpected - No such container: x ` (no `json`), so it is taken from there.
 */
function rejectionOf(error: Error): Error {
  const statusCode = (error as Error & { statusCode?: unknown }).statusCode;
  if (typeof statusCode !== 'number') return error;
  const message = /^\(HTTP code \d+\) unexpected - ([\s\S]*)$/.exec(error.message)?.[1]?.trim();
  return new EngineRejectedError(statusCode, message || `HTTP ${statusCode}`);
}
