import type { Readable } from 'node:stream';
import { setTimeout as delay } from 'node:timers/promises';
import type { PseudoTtyInfo, ServerChannel, Session } from 'ssh2';
import type { AccessAudit, AccessRecord } from '../../commands/instance/access-audit.ts';
import type { Actor } from '../../commands/user/accounts.ts';
import type { AccessKind } from '../../domain/instance/access.ts';
import type { ExecSession, NodeTarget } from '../../ports/container-runtime.port.ts';
import type { InstanceView } from '../../projections/instances.projection.ts';
import type { PluginContext } from '../plugin-host.ts';
import { LineEditor } from './line-editor.ts';
import { HelperUnavailableError, type ContainerHelper } from '../../commands/instance/container-helper.ts';
import type { ServiceDialer } from '../../commands/instance/service-dialer.ts';
import { GOODBYE, MENU_HEADER, MENU_PROMPT, NO_INSTANCES, menuLine, menuOrder, transferTool } from './menu.ts';
import { SftpObserver } from './sftp-observer.ts';
import { directSftp } from './direct-sftp.ts';

/** What every session of the jump host shares. */
export interface SessionDeps {
  readonly ctx: PluginContext;
  readonly audit: AccessAudit;
  readonly helper: ContainerHelper;
  /** Reaches a container's port directly where this host can (forwards on a local node). */
  readonly dialer: ServiceDialer;
  readonly idleTimeoutMs: number;
  /** Keeps an audit write in view until it settles, so stopping the plugin can wait for it. */
  readonly track: (work: Promise<unknown>) => void;
  /** What one user and one instance may hold across all connections (TIANQI_SSH_MAX_*). */
  readonly limits: SshLimits;
  /** What a user holds now across all their connections to this jump host. */
  readonly usageOf: (userId: string) => { sessions: number; forwards: number };
  /** What all connections hold in one instance now (sessions attached or attaching, forwards open or being set up). */
  readonly usageOfInstance: (instanceId: string) => { sessions: number; forwards: number };
}

/**
 * What one user may hold at once over all their SSH connections (signed-in connections, sessions,
 * forwarded connections), and what one instance may be held by, whoever holds it: each session
 * and each forward is a process in the tenant's container.
 */
export interface SshLimits {
  readonly connectionsPerUser: number;
  readonly sessionsPerUser: number;
  readonly forwardsPerUser: number;
  readonly sessionsPerInstance: number;
  readonly forwardsPerInstance: number;
}

/** Who is on the other end of one SSH connection (the role as of the last channel opened). */
export interface Caller {
  actor: Actor;
  readonly address: string;
  /** From `<user>+<instance>`: enter this instance without the menu. */
  readonly instanceName: string | null;
}

/** The shell, command or SFTP server running in a container for this session: its audit record and its exec. */
interface Attachment {
  readonly record: AccessRecord;
  exec: ExecSession | null;
  /** Sees the client's bytes on their way in and the server's on their way out (the SFTP audit). */
  readonly observe?: Observer;
}

/** Both directions of a session, seen as they pass. */
interface Observer {
  request(chunk: Buffer): void;
  reply(chunk: Buffer): void;
}

/** What runs in the container for a session, and how it is audited. */
interface Launch {
  readonly kind: AccessKind;
  /** For the audit record; null: the shell chosen in the container. */
  readonly command: string | null;
  readonly cmd: (target: NodeTarget, containerId: string) => Promise<string[]>;
  readonly tty: boolean;
  readonly observe?: (record: AccessRecord) => Observer;
  /** Another way to run `cmd` than the engine's exec stream; null: the exec stream after all. */
  readonly start?: (target: NodeTarget, containerId: string, cmd: readonly string[]) => Promise<ExecSession | null>;
}

/** Whether the container is no longer running, asking again for up to `patienceMs`. */
type ContainerStopped = (patienceMs: number) => Promise<boolean>;

type AttachResult = { attached: true } | { attached: false; why: 'not-running' | 'gone'; status?: string };

const DEFAULT_TERM = 'xterm-256color';
/** How long a killed shell waits to see its container stopped (the engine records it a moment later). */
const STOP_PATIENCE_MS = 2_000;
/** Input held for a shell that is still starting; beyond this the SSH window holds it at the client. */
const HELD_LIMIT = 64 * 1024;

/** The caller's instance of that name; an admin may name anyone's, their own first. */
export async function findInstance(ctx: PluginContext, actor: Actor, name: string): Promise<InstanceView | null> {
  const matches = (await ctx.instances.list(actor)).filter((i) => i.name === name);
  return matches.find((i) => i.ownerId === actor.id) ?? (matches.length === 1 ? matches[0]! : null);
}

/** A launch that cannot go ahead, with what its user reads. */
class Refusal extends Error {
  constructor(message: string, readonly reason: string) {
    super(message);
  }
}

/** Why a session ends when its instance stops, and what its user reads. */
export const INSTANCE_STOPPED = { reason: 'the instance stopped', notice: '容器已停止，会话已结束。' } as const;

/**
 * One SSH session channel: the container menu (or the instance named in the login), then a shell
 * or a command in the container with its bytes passed through, audited as a terminal session.
 */
export class ShellSession {
  private pty: PseudoTtyInfo | null = null;
  private cols = 80;
  private rows = 24;
  private channel: ServerChannel | null = null;
  /** Menu input: set while the menu waits for a choice, until a line is complete. */
  private editor: LineEditor | null = null;
  private line: string | null = null;
  private lineWaiter: ((line: string | null) => void) | null = null;
  private interrupted = false;
  /** Client input that came before the container's process could take it (typed ahead, piped). */
  private readonly held: Buffer[] = [];
  private heldBytes = 0;
  private clientEof = false;
  /** Set once the open of the audit record is written, and only then. */
  private attachment: Attachment | null = null;
  /** The instance entered or being entered: what a stop or delete of an instance looks for. */
  instanceId: string | null = null;
  /** Its owner: a user who is an admin no more keeps only the sessions in their own instances. */
  instanceOwnerId: string | null = null;
  private idleTimer: NodeJS.Timeout | null = null;
  private ended: { reason: string } | null = null;
  /** Requests refused before the channel ran anything, told once it does. */
  private readonly notices: string[];

  constructor(
    session: Session,
    private readonly caller: Caller,
    private readonly deps: SessionDeps,
    private readonly onEnd: (session: ShellSession) => void,
    notices: readonly string[] = [],
  ) {
    this.notices = [...notices];
    // From the session's opening: one that never asks for a shell or a command times out too.
    this.idleTimer = setTimeout(() => this.terminate('idle timeout', '空闲时间过长，连接已断开。'), this.deps.idleTimeoutMs);
    session.on('pty', (accept, _reject, info) => {
      this.pty = info;
      if (info.cols > 0) this.cols = info.cols;
      if (info.rows > 0) this.rows = info.rows;
      accept?.();
    });
    session.on('window-change', (accept, _reject, info) => {
      if (info.cols > 0) this.cols = info.cols;
      if (info.rows > 0) this.rows = info.rows;
      accept?.();
      this.attachment?.exec?.resize(this.cols, this.rows).catch((err: unknown) => this.deps.ctx.logger.debug({ err }, 'resize failed'));
    });
    session.on('shell', (accept) => {
      const channel = this.begin(accept());
      if (channel) void this.run(() => (caller.instanceName ? this.direct(caller.instanceName) : this.menu()));
    });
    session.on('exec', (accept, _reject, info) => {
      const channel = this.begin(accept());
      if (channel) void this.run(() => this.command(info.command));
    });
    session.on('subsystem', (accept, reject, info) => {
      if (info.name !== 'sftp') {
        reject?.();
        return;
      }
      if (this.begin(accept())) void this.run(() => this.sftp());
    });
    // Refused, and said on the session's stderr: OpenSSH's client would say nothing of it.
    session.on('auth-agent', (_accept, reject) => {
      reject?.();
      this.notices.push('此跳板机不提供 SSH agent 转发（-A），已忽略。');
    });
    session.on('x11', (_accept, reject) => {
      reject?.();
      this.notices.push('此跳板机不提供 X11 转发（-X/-Y），已忽略。');
    });
    session.on('close', () => this.end('the client left', null));
  }

  /** A line on the session's stderr (something refused on its connection). */
  notify(message: string): void {
    if (this.channel) this.write(`${message}\n`, 'stderr');
    else this.notices.push(message);
  }

  /** Ends the session from outside (user disabled, instance stopped, plugin stopping), telling the client why. */
  terminate(reason: string, notice: string | null): void {
    if (this.ended) return;
    if (notice) this.write(`\n${notice}\n`, 'stderr');
    this.end(reason, null);
  }

  private begin(channel: ServerChannel | undefined): ServerChannel | null {
    if (!channel) return null;
    if (this.ended) {
      channel.end();
      return null;
    }
    this.channel = channel;
    this.idleTimer?.refresh();
    for (const notice of this.notices.splice(0)) channel.stderr.write(`${notice}\n`);
    channel.on('data', (chunk: Buffer) => this.fromClient(chunk));
    // Client EOF: a command reading stdin (`cat`) sees its end; at the menu it means leaving.
    channel.on('end', () => {
      this.clientEof = true;
      this.endInput();
      this.interrupted = true;
      this.wakeReader();
    });
    channel.on('close', () => this.end('the client left', null));
    channel.on('error', (err: Error) => this.deps.ctx.logger.debug({ err }, 'ssh channel error'));
    return channel;
  }

  private async run(body: () => Promise<void>): Promise<void> {
    try {
      await body();
    } catch (err) {
      this.deps.ctx.logger.warn({ err, user: this.caller.actor.username }, 'ssh session failed');
      this.refuse(`连接失败：${err instanceof Error ? err.message : String(err)}`, 'jump host error');
    }
  }

  private async menu(): Promise<void> {
    const instances = menuOrder(await this.deps.ctx.instances.list(this.caller.actor));
    if (instances.length === 0) {
      this.say(NO_INSTANCES);
      this.end('no instances', 0);
      return;
    }
    this.say([MENU_HEADER, ...instances.map((instance, i) => menuLine(i + 1, instance))].join('\n'));
    const editor = new LineEditor(this.pty !== null);
    for (;;) {
      this.write(MENU_PROMPT);
      // Typed ahead (or piped) input is taken, and echoed, after the prompt.
      if (this.editor !== editor) this.useEditor(editor);
      const line = await this.nextLine();
      if (this.ended) return;
      const answer = line?.trim() ?? 'q';
      if (answer === '') continue;
      if (answer.toLowerCase() === 'q') {
        this.say(GOODBYE);
        this.end('left the menu', 0);
        return;
      }
      const chosen = /^\d+$/.test(answer) ? instances[Number(answer) - 1] : undefined;
      if (!chosen) {
        this.say(`无效的输入：${answer}。请输入 1-${instances.length} 之间的序号，或输入 'q' 退出。`);
        continue;
      }
      // Input typed after the choice (or piped in with it) waits for the container's shell.
      const result = await this.attach(chosen, this.shellLaunch());
      if (result.attached || this.ended) return;
      this.say(result.why === 'gone' ? `容器 ${chosen.name} 已不存在。` : `容器 ${chosen.name} 未在运行（${result.status ?? 'unknown'}），请选择其他容器。`);
    }
  }

  private async direct(instanceName: string): Promise<void> {
    const instance = await this.find(instanceName);
    if (!instance) {
      this.refuse(`找不到实例 ${instanceName}。`, 'no such instance');
      return;
    }
    const result = await this.attach(instance, this.shellLaunch());
    if (!result.attached && !this.ended) this.refuseNotAttached(instanceName, result);
  }

  private async command(command: string): Promise<void> {
    const found = await this.namedInstance(`执行命令时请指定实例：ssh -p ${this.deps.ctx.config.sshPort} ${this.caller.actor.username}+<实例名>@<主机> '<命令>'`);
    if (!found) return;
    const { name, instance } = found;
    const tool = transferTool(command);
    const result = await this.attach(instance, {
      kind: 'command',
      command,
      tty: this.pty !== null,
      cmd: async (target, containerId) => {
        // Classic scp (`scp -O`) and rsync run the image's own program: say so where it has none.
        if (tool && !(await this.imageHas(target, containerId, tool))) {
          throw new Refusal(`实例 ${name} 的镜像中没有 ${tool}，无法使用 ${tool === 'scp' ? 'scp -O（旧协议）' : 'rsync'}；请改用 sftp 或 scp（默认的 SFTP 协议）。`, `${tool} not in the image`);
        }
        return inHome(command);
      },
    });
    if (!result.attached && !this.ended) this.refuseNotAttached(name, result);
  }

  /** The SFTP subsystem: tianqi-helper's SFTP server in the container, on `user+instance` logins. */
  private async sftp(): Promise<void> {
    const found = await this.namedInstance(`传输文件时请指定实例：sftp -P ${this.deps.ctx.config.sshPort} ${this.caller.actor.username}+<实例名>@<主机>`);
    if (!found) return;
    const { name, instance } = found;
    const result = await this.attach(instance, {
      kind: 'sftp',
      command: 'sftp',
      tty: false,
      cmd: async (target, containerId) => {
        try {
          return [await this.deps.helper.ensure(target, containerId), 'sftp'];
        } catch (err) {
          if (err instanceof HelperUnavailableError) throw new Refusal(err.message, 'no file transfer helper');
          throw err;
        }
      },
      // On a local node its bytes go over the container's own address, not the exec stream.
      start: (target, containerId, cmd) => directSftp(this.deps.ctx.runtime, this.deps.dialer, target, containerId, cmd),
      observe: (record) => {
        const observer = new SftpObserver({ written: (path) => record.fileWritten(path), removed: (path) => record.fileRemoved(path) });
        return { request: (chunk) => observer.push(chunk), reply: (chunk) => observer.pushReply(chunk) };
      },
    });
    if (!result.attached && !this.ended) this.refuseNotAttached(name, result);
  }

  /** The instance of the `user+instance` login; refused (with `usage` when none is named) otherwise. */
  private async namedInstance(usage: string): Promise<{ name: string; instance: InstanceView } | null> {
    const name = this.caller.instanceName;
    if (!name) {
      this.refuse(usage, 'no instance named');
      return null;
    }
    const instance = await this.find(name);
    if (!instance) {
      this.refuse(`找不到实例 ${name}。`, 'no such instance');
      return null;
    }
    return { name, instance };
  }

  private refuseNotAttached(name: string, result: AttachResult & { attached: false }): void {
    this.refuse(result.why === 'gone' ? `找不到实例 ${name}。` : `实例 ${name} 未在运行（${result.status ?? 'unknown'}）。`, 'not running');
  }

  /** The interactive shell: bash where the image has it, else sh. */
  private shellLaunch(): Launch {
    return {
      kind: 'shell',
      command: null,
      tty: this.pty !== null,
      cmd: async (target, containerId) => {
        const shell = (await this.deps.ctx.runtime.hasExecutable(target, containerId, '/bin/bash')) ? '/bin/bash' : '/bin/sh';
        return ['/bin/sh', '-c', `${IN_HOME}exec "$0"`, shell];
      },
    };
  }

  /** Whether the image has `program` on its PATH (asked of the helper, so images without a shell answer too). */
  private async imageHas(target: NodeTarget, containerId: string, program: string): Promise<boolean> {
    let helper: string;
    try {
      helper = await this.deps.helper.ensure(target, containerId);
    } catch {
      return this.deps.ctx.runtime.hasExecutable(target, containerId, `/usr/bin/${program}`);
    }
    const probe = await this.deps.ctx.runtime.exec(target, containerId, { cmd: [helper, 'which', program], tty: false });
    probe.stream.resume();
    probe.stderr?.resume();
    probe.stream.end();
    return (await probe.exited()) === 0;
  }

  private find(name: string): Promise<InstanceView | null> {
    return findInstance(this.deps.ctx, this.caller.actor, name);
  }

  /**
   * Starts what `launch` says in the instance's container and joins it to the channel. The audit
   * open is written first: the instance decides whether it can be entered, so a stop racing with
   * the menu is refused there.
   */
  private async attach(chosen: InstanceView, launch: Launch): Promise<AttachResult> {
    const { ctx } = this.deps;
    let instance: InstanceView;
    try {
      instance = await ctx.instances.visible(this.caller.actor, chosen.id);
    } catch {
      return { attached: false, why: 'gone' };
    }
    if (instance.status !== 'running' || !instance.containerId) return { attached: false, why: 'not-running', status: instance.status };
    const containerId = instance.containerId;
    const target = await ctx.nodes.target(instance.nodeId);
    // Counted from here (one pass of the event loop: two attaching at once cannot both slip in).
    this.instanceId = instance.id;
    const { sessionsPerInstance } = this.deps.limits;
    if (this.deps.usageOfInstance(instance.id).sessions > sessionsPerInstance) {
      this.refuse(`实例 ${instance.name} 已打开 ${sessionsPerInstance} 个 SSH 会话（所有用户合计，上限由 TIANQI_SSH_MAX_SESSIONS_PER_INSTANCE 设定），请关闭一些后再试。`, 'instance session limit');
      return { attached: true };
    }
    let cmd: string[];
    try {
      cmd = await launch.cmd(target, containerId);
    } catch (err) {
      if (!(err instanceof Refusal)) throw err;
      this.refuse(err.message, err.reason);
      return { attached: true };
    }
    if (this.ended) return { attached: true };

    this.instanceOwnerId = instance.ownerId;
    const opened = this.open(instance.id, launch.kind, launch.command ?? cmd[0]!);
    this.deps.track(opened);
    const outcome = await opened;
    if (outcome === 'not-running' || outcome === 'gone') {
      this.instanceId = null;
      return outcome === 'gone' ? { attached: false, why: 'gone' } : { attached: false, why: 'not-running', status: 'not running' };
    }
    if (this.ended) return { attached: true };

    const attachment: Attachment = { record: outcome, exec: null, ...(launch.observe ? { observe: launch.observe(outcome) } : {}) };
    this.attachment = attachment;
    if (launch.kind === 'shell') this.say(`正在连接到 ${instance.name} …`);
    try {
      attachment.exec = (await launch.start?.(target, containerId, cmd).catch((err: unknown) => {
        ctx.logger.warn({ err }, 'ssh session: the direct way in failed, using the exec stream');
        return null;
      })) ?? await ctx.runtime.exec(target, containerId, {
        cmd,
        tty: launch.tty,
        env: launch.tty ? [`TERM=${this.pty?.term || DEFAULT_TERM}`] : [],
        cols: this.cols,
        rows: this.rows,
      });
    } catch (err) {
      this.refuse(`无法连接到容器：${err instanceof Error ? err.message : String(err)}`, 'the shell did not start');
      return { attached: true };
    }
    if (this.ended) {
      attachment.exec.close();
      return { attached: true };
    }
    const containerStopped = async (patienceMs: number) => {
      const deadline = Date.now() + patienceMs;
      for (;;) {
        const running = await ctx.runtime.inspect(target, containerId).then((c) => c?.status === 'running', () => true);
        if (!running) return true;
        if (Date.now() >= deadline) return false;
        await delay(100);
      }
    };
    this.pipe(attachment, attachment.exec, containerStopped);
    return { attached: true };
  }

  /**
   * Writes the audit open; a session that ended while the open was on its way gets its close at
   * once, so every open has one close.
   */
  private async open(instanceId: string, kind: AccessKind, command: string): Promise<AccessRecord | 'not-running' | 'gone'> {
    const { actor, address } = this.caller;
    const record = await this.deps.audit.open(instanceId, { actor, clientAddress: address, via: 'ssh', kind, command });
    if (typeof record === 'string') return record;
    if (this.ended) {
      await this.close(record, this.ended.reason, null);
      return 'gone';
    }
    return record;
  }

  private close(record: AccessRecord, reason: string, exitCode: number | null): Promise<void> {
    return record.close(reason, exitCode, (err) =>
      this.deps.ctx.logger.error({ err, sessionId: record.sessionId }, 'could not record the end of an ssh session'));
  }

  private pipe(attachment: Attachment, exec: ExecSession, containerStopped: ContainerStopped): void {
    const channel = this.channel!;
    const count = (chunk: Buffer) => {
      attachment.record.bytesOut += chunk.length;
      attachment.observe?.reply(chunk);
      this.touch();
    };
    exec.stream.on('data', count);
    exec.stream.pipe(channel, { end: false });
    for (const chunk of this.held.splice(0)) {
      attachment.record.bytesIn += chunk.length;
      attachment.observe?.request(chunk);
      exec.stream.write(chunk);
    }
    this.heldBytes = 0;
    channel.resume();
    if (this.clientEof) this.endInput();
    if (exec.stderr) {
      exec.stderr.on('data', count);
      exec.stderr.pipe(channel.stderr, { end: false });
    }
    // Over when stdout and stderr both ended (or broke): only then is all output on its way.
    let open = exec.stderr ? 2 : 1;
    let done = false;
    const over = () => {
      if (done) return;
      done = true;
      void this.shellEnded(exec, containerStopped);
    };
    const ended = (stream: Readable) => {
      let counted = false;
      const once = () => {
        if (counted) return;
        counted = true;
        open -= 1;
        if (open === 0) over();
      };
      stream.on('end', once);
      stream.on('close', once);
      stream.on('error', (err: Error) => {
        this.deps.ctx.logger.debug({ err }, 'exec stream error');
        over();
      });
    };
    ended(exec.stream);
    if (exec.stderr) ended(exec.stderr);
  }

  /**
   * A stop kills the shell before the instance's event comes, and even before the engine shows
   * the container stopped: a killed shell (no code, or 128 + signal) gets a moment to find out
   * whether that is why, so that its user reads it.
   */
  private async shellEnded(exec: ExecSession, containerStopped: ContainerStopped): Promise<void> {
    await this.flushed();
    const code = await exec.exited().catch(() => null);
    if (this.ended) return;
    const killed = code === null || code >= 128;
    const stopped = await containerStopped(killed ? STOP_PATIENCE_MS : 0);
    if (this.ended) return;
    if (stopped) {
      this.write(`\n${INSTANCE_STOPPED.notice}\n`, 'stderr');
      this.end(INSTANCE_STOPPED.reason, code);
      return;
    }
    this.end(code === null ? 'the shell ended' : `the shell exited with code ${code}`, code);
  }

  private fromClient(chunk: Buffer): void {
    this.touch();
    const exec = this.attachment?.exec;
    if (exec) {
      this.attachment!.record.bytesIn += chunk.length;
      this.attachment!.observe?.request(chunk);
      if (!exec.stream.write(chunk)) {
        this.channel?.pause();
        exec.stream.once('drain', () => this.channel?.resume());
      }
      return;
    }
    if (this.editor) {
      this.toEditor(chunk);
      return;
    }
    this.held.push(chunk);
    this.heldBytes += chunk.length;
    // The SSH window then holds the rest back at the client.
    if (this.heldBytes > HELD_LIMIT) this.channel?.pause();
  }

  /**
   * Without a TTY the client's EOF is the end of the command's stdin (`cat` ends). On a TTY it
   * is not: as with sshd, the shell goes on with what it got (`ssh -tt host < script`).
   */
  private endInput(): void {
    if (!this.pty) this.attachment?.exec?.stream.end();
  }

  /** Menu input from now on, starting with what came while the menu was not reading. */
  private useEditor(editor: LineEditor): void {
    this.editor = editor;
    while (this.editor && this.held.length > 0) {
      const chunk = this.held.shift()!;
      this.heldBytes -= chunk.length;
      this.toEditor(chunk);
    }
    if (this.heldBytes <= HELD_LIMIT) this.channel?.resume();
  }

  /** One line per prompt: the input after it waits for what comes next (the shell, or the next prompt). */
  private toEditor(chunk: Buffer): void {
    const { echo, line, rest, interrupted } = this.editor!.feed(chunk);
    if (echo.length > 0) this.writeRaw(echo);
    if (interrupted) this.interrupted = true;
    if (line !== null) {
      this.editor = null;
      this.line = line;
      if (rest.length > 0) {
        this.held.unshift(rest);
        this.heldBytes += rest.length;
      }
    }
    this.wakeReader();
  }

  private nextLine(): Promise<string | null> {
    return new Promise((resolve) => {
      this.lineWaiter = resolve;
      this.wakeReader();
    });
  }

  private wakeReader(): void {
    const waiter = this.lineWaiter;
    if (!waiter) return;
    const line = this.line;
    if (line === null && !this.interrupted && !this.ended) return;
    this.line = null;
    this.lineWaiter = null;
    waiter(line);
  }

  /**
   * Output written so far has left for the client: ssh2 holds data back while the client's window
   * is full, and an exit status sent meanwhile would overtake it. An empty write completes only
   * after the writes before it.
   */
  private flushed(): Promise<void> {
    const channel = this.channel;
    if (!channel || !channel.writable) return Promise.resolve();
    return new Promise((resolve) => {
      let waiting = 2;
      const timer = setTimeout(resolve, 5_000);
      const done = () => {
        waiting -= 1;
        if (waiting > 0) return;
        clearTimeout(timer);
        resolve();
      };
      channel.write(Buffer.alloc(0), done);
      channel.stderr.write(Buffer.alloc(0), done);
      // A closed channel drops what it held, callbacks included.
      channel.once('close', () => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  /**
   * The one way out: stops the exec, reports the exit status, closes the channel and writes the
   * audit close. Idempotent; the first reason wins.
   */
  private end(reason: string, exitCode: number | null): void {
    if (this.ended) return;
    this.ended = { reason };
    if (this.idleTimer) clearTimeout(this.idleTimer);
    this.wakeReader();
    const attachment = this.attachment;
    attachment?.exec?.close();
    const channel = this.channel;
    if (channel) {
      if (exitCode !== null) channel.exit(exitCode);
      channel.end();
    }
    if (attachment) this.deps.track(this.close(attachment.record, reason, exitCode));
    this.onEnd(this);
  }

  /** A message on stderr and exit status 1. */
  private refuse(message: string, reason: string): void {
    this.write(`${message}\n`, 'stderr');
    this.end(reason, 1);
  }

  private say(text: string): void {
    this.write(`${text}\n`);
  }

  private write(text: string, to: 'stdout' | 'stderr' = 'stdout'): void {
    const channel = this.channel;
    if (!channel || !channel.writable) return;
    const out = this.pty ? text.replace(/\r?\n/g, '\r\n') : text.replace(/\r\n/g, '\n');
    if (to === 'stderr') channel.stderr.write(out);
    else channel.write(out);
    this.touch();
  }

  private writeRaw(bytes: Buffer): void {
    if (this.channel?.writable) this.channel.write(bytes);
    this.touch();
  }

  private touch(): void {
    this.idleTimer?.refresh();
  }
}

/** sshd starts every session in the user's home: so do shells and commands here (scp -O and rsync write relative paths there). */
const IN_HOME = 'cd "$HOME" 2>/dev/null\n';

/** The user's command as sshd runs it: by the shell, from $HOME. */
export function inHome(command: string): string[] {
  return ['/bin/sh', '-c', `${IN_HOME}${command}`];
}
