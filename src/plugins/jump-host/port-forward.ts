import type { Socket } from 'node:net';
import type { ServerChannel, TcpipRequestInfo } from 'ssh2';
import type { AccessRecord } from '../../commands/instance/access-audit.ts';
import type { ExecSession } from '../../ports/container-runtime.port.ts';
import type { InstanceView } from '../../projections/instances.projection.ts';
import { HelperUnavailableError } from '../../commands/instance/container-helper.ts';
import { findInstance, type Caller, type SessionDeps } from './shell-session.ts';

/** Forwarded connections one SSH connection may hold open at once (a browser opens a few dozen). */
export const MAX_FORWARD_CHANNELS = 256;
/** How long a forwarded connection whose service hung up may take to hand its last bytes to a slow client. */
const DRAIN_MS = 60_000;
/** Forwarded connections being set up at once (each is an exec on the node's engine). */
export const MAX_PENDING_FORWARDS = 16;

type Accept = () => ServerChannel;
type RunningInstance = InstanceView & { readonly containerId: string };
type Reject = () => void;

/** One destination's audit record: opened with its first connection, closed with the SSH connection. */
interface Destination {
  readonly instanceId: string;
  readonly ownerId: string;
  readonly record: Promise<AccessRecord | null>;
  connections: number;
}

/**
 * Local port forwarding (`ssh -L`, `-D`, VS Code's forwards) of one SSH connection: each
 * forwarded connection is `tianqi-helper connect` in the instance's container, so it reaches
 * exactly what the container's own network reaches on its loopback and its own addresses, on a
 * node behind TLS as well as a local one, and nothing else (the helper refuses other addresses).
 * On a local node a port that also listens on the container's bridge address is reached the way
 * the service proxy reaches it, a plain TCP connection (no exec stream through the engine: about
 * three times the throughput); a port on the container's loopback only still goes through the helper.
 * Each destination is one audit record on the instance's history, with its connection count and
 * bytes, closed when the SSH connection ends or the forward is ended.
 */
export class PortForwards {
  private readonly channels = new Map<ServerChannel, { exec: ExecSession; instanceId: string; ownerId: string }>();
  private readonly destinations = new Map<string, Destination>();
  /** Per instance, forwarded connections past the instance's checks and not yet open or refused. */
  private readonly connecting = new Map<string, number>();
  /** Forwarded connections asked for and not yet joined or refused. */
  private pending = 0;
  /** Of those, the ones being set up now; the others wait in `waiting`. */
  private setting = 0;
  private readonly waiting: (() => void)[] = [];
  private ended: string | null = null;

  constructor(
    private readonly caller: () => Caller,
    private readonly deps: SessionDeps,
    /** The connection's session stderr, where one is open: refusals are told there too. */
    private readonly tell: (message: string) => void,
    /** A connection with forwards open is in use: its idle clock waits until the last one closes. */
    private readonly activity: { busy(): void; idle(): void },
  ) {}

  get open(): number {
    return this.channels.size;
  }

  /** Forwarded connections open or being set up. */
  get held(): number {
    return this.channels.size + this.pending;
  }

  /** Forwarded connections into one instance, open or past its checks and being set up. */
  heldIn(instanceId: string): number {
    let open = 0;
    for (const entry of this.channels.values()) if (entry.instanceId === instanceId) open += 1;
    return open + (this.connecting.get(instanceId) ?? 0);
  }

  async request(accept: Accept, reject: Reject, info: TcpipRequestInfo): Promise<void> {
    const refuse = (message: string, why: string) => {
      reject();
      this.tell(`端口转发 ${info.destIP}:${info.destPort} 被拒绝：${message}`);
      this.deps.ctx.logger.info({ user: this.caller().actor.username, dest: `${info.destIP}:${info.destPort}`, why }, 'ssh port forward refused');
    };
    if (this.ended) return reject();
    if (this.channels.size + this.pending >= MAX_FORWARD_CHANNELS) return refuse(`每个连接最多同时转发 ${MAX_FORWARD_CHANNELS} 个连接`, 'too many channels');
    const caller = this.caller();
    const { forwardsPerUser } = this.deps.limits;
    if (this.deps.usageOf(caller.actor.id).forwards >= forwardsPerUser) {
      return refuse(`您的账号已同时转发 ${forwardsPerUser} 个连接（所有 SSH 连接合计，上限由 TIANQI_SSH_MAX_FORWARDS_PER_USER 设定），请关闭一些后再试`, 'user forward limit');
    }
    if (!caller.instanceName) return refuse(`请用 ${caller.actor.username}+<实例名> 登录以转发端口`, 'no instance named');
    this.pending += 1;
    try {
      // A browser opens its connections in a burst: they wait their turn to be set up.
      await this.turn();
      if (this.ended) return reject();
      await this.connect(accept, refuse, info, caller);
    } catch (err) {
      this.deps.ctx.logger.warn({ err }, 'ssh port forward failed');
      refuse(err instanceof Error ? err.message : String(err), 'error');
    } finally {
      this.pending -= 1;
      this.setting -= 1;
      this.waiting.shift()?.();
    }
  }

  /** Resolves when fewer than MAX_PENDING_FORWARDS connections are being set up. */
  private turn(): Promise<void> {
    if (this.setting < MAX_PENDING_FORWARDS) {
      this.setting += 1;
      return Promise.resolve();
    }
    return new Promise((resolve) => this.waiting.push(() => {
      this.setting += 1;
      resolve();
    }));
  }

  private async connect(accept: Accept, refuse: (message: string, why: string) => void, info: TcpipRequestInfo, caller: Caller): Promise<void> {
    const { ctx } = this.deps;
    const name = caller.instanceName!;
    const found = await findInstance(ctx, caller.actor, name);
    if (!found) return refuse(`找不到实例 ${name}`, 'no such instance');
    const instance = await ctx.instances.visible(caller.actor, found.id).catch(() => null);
    if (!instance) return refuse(`找不到实例 ${name}`, 'no such instance');
    if (instance.status !== 'running' || !instance.containerId) return refuse(`实例 ${name} 未在运行（${instance.status}）`, 'not running');
    const { forwardsPerInstance } = this.deps.limits;
    if (this.deps.usageOfInstance(instance.id).forwards >= forwardsPerInstance) {
      return refuse(`实例 ${name} 已同时转发 ${forwardsPerInstance} 个连接（所有用户合计，上限由 TIANQI_SSH_MAX_FORWARDS_PER_INSTANCE 设定），请关闭一些后再试`, 'instance forward limit');
    }
    this.connecting.set(instance.id, (this.connecting.get(instance.id) ?? 0) + 1);
    try {
      await this.openInto(accept, refuse, info, caller, { ...instance, containerId: instance.containerId });
    } finally {
      const left = (this.connecting.get(instance.id) ?? 1) - 1;
      if (left > 0) this.connecting.set(instance.id, left);
      else this.connecting.delete(instance.id);
    }
  }

  /** Opens one forwarded connection into a running instance the caller may enter. */
  private async openInto(accept: Accept, refuse: (message: string, why: string) => void, info: TcpipRequestInfo, caller: Caller, instance: RunningInstance): Promise<void> {
    const { ctx, helper } = this.deps;
    const name = caller.instanceName!;
    const target = await ctx.nodes.target(instance.nodeId);
    const destination = this.destination(`${info.destIP}:${info.destPort}`, instance.id, instance.ownerId, caller);
    const audited = await destination.record;
    if (!audited) return refuse(`实例 ${name} 未在运行`, 'not running');
    if (this.ended) return refuse('连接已结束', 'ended');

    let exec: ExecSession;
    const direct = await this.deps.dialer.dialDirect({ target, containerId: instance.containerId, port: info.destPort }, info.destIP).catch(() => null);
    if (direct) {
      exec = socketSession(direct);
    } else {
      let path: string;
      try {
        path = await helper.ensure(target, instance.containerId);
      } catch (err) {
        if (err instanceof HelperUnavailableError) return refuse(err.message, 'no helper');
        throw err;
      }
      if (this.ended) return refuse('连接已结束', 'ended');
      const connected = await helper.connect(target, instance.containerId, path, info.destIP, info.destPort);
      if (!connected.ok) return refuse(connected.reason ?? '容器内的连接没有应答', 'connect failed');
      exec = connected.exec;
    }
    if (this.ended) {
      exec.close();
      return refuse('连接已结束', 'ended');
    }
    const channel = accept();
    this.channels.set(channel, { exec, instanceId: instance.id, ownerId: instance.ownerId });
    if (this.channels.size === 1) this.activity.busy();
    destination.connections += 1;
    audited.connections = destination.connections;
    this.join(channel, exec, audited);
  }

  /** The audit record of a destination: the first connection to it opens it. */
  private destination(destination: string, instanceId: string, ownerId: string, caller: Caller): Destination {
    const key = `${instanceId}/${destination}`;
    let entry = this.destinations.get(key);
    if (!entry) {
      const record = this.deps.audit
        .open(instanceId, { actor: caller.actor, clientAddress: caller.address, via: 'ssh', kind: 'forward', command: destination })
        .then((r) => (typeof r === 'string' ? null : r));
      this.deps.track(record);
      entry = { instanceId, ownerId, record, connections: 0 };
      this.destinations.set(key, entry);
      // A refused open is not kept: the next connection asks the instance again.
      void record.then((r) => {
        if (!r && this.destinations.get(key) === entry) this.destinations.delete(key);
      }, () => this.destinations.delete(key));
    }
    return entry;
  }

  private join(channel: ServerChannel, exec: ExecSession, record: AccessRecord): void {
    channel.on('data', (chunk: Buffer) => {
      record.bytesIn += chunk.length;
    });
    exec.stream.on('data', (chunk: Buffer) => {
      record.bytesOut += chunk.length;
    });
    channel.pipe(exec.stream);
    exec.stream.pipe(channel);
    exec.stderr?.resume();
    let closed = false;
    const close = () => {
      if (closed) return;
      closed = true;
      this.forget(channel);
      exec.close();
      channel.close();
    };
    channel.on('close', close);
    channel.on('error', close);
    exec.stream.on('close', () => {
      // The service sent its last bytes and hung up: they may still wait for the client's window
      // in the channel (a plain socket closes right after its end), so the channel closes once
      // they are out, not before.
      if (exec.stream.readableEnded && !channel.writableFinished) {
        channel.once('finish', close);
        setTimeout(close, DRAIN_MS).unref();
        return;
      }
      close();
    });
    exec.stream.on('error', close);
  }

  /** Ends the forwards into `instanceId`, or every forward, and closes their audit records. */
  terminate(reason: string, only?: (entry: { instanceId: string; ownerId: string }) => boolean): void {
    for (const [channel, entry] of this.channels) {
      if (only && !only(entry)) continue;
      this.forget(channel);
      entry.exec.close();
      channel.close();
    }
    for (const [key, destination] of [...this.destinations]) {
      if (only && !only(destination)) continue;
      this.destinations.delete(key);
      this.deps.track(destination.record.then((record) => record?.close(reason, null, (err) =>
        this.deps.ctx.logger.error({ err, sessionId: record.sessionId }, 'could not record the end of a port forward'))));
    }
  }

  private forget(channel: ServerChannel): void {
    if (this.channels.delete(channel) && this.channels.size === 0) this.activity.idle();
  }

  /** The SSH connection closed: nothing more may open. */
  end(reason: string): void {
    this.ended = reason;
    for (const wake of this.waiting.splice(0)) wake();
    this.terminate(reason);
  }
}

/** A direct TCP connection to the container, held the way a forward holds the helper's exec. */
function socketSession(socket: Socket): ExecSession {
  return {
    stream: socket,
    resize: async () => undefined,
    exited: () => new Promise((resolve) => socket.once('close', () => resolve(null))),
    close: () => socket.destroy(),
  };
}
