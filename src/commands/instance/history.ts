import type { AccessKind } from '../../domain/instance/access.ts';
import type { InstanceEvent } from '../../domain/instance/instance.decider.ts';
import type { RecordedEvent } from '../../ports/event-store.port.ts';
import { engineFailure, exitWords, progressWords, words, type Words } from '../../domain/instance/words.ts';

const OPERATION_WORDS = { start: 'start', stop: 'stop', restart: 'restart', delete: 'deletion' } as const;

/**
 * A name or command from a client, safe to show: control characters (escape sequences that
 * repaint a terminal or hide text, line breaks that fake a second line) as `\xNN`, `\n`, `\t`.
 */
export function escapeControls(text: string): string {
  let out = '';
  for (const c of text) {
    const code = c.charCodeAt(0);
    if (code >= 0x20 && (code < 0x7f || code > 0x9f)) out += c;
    else if (c === '\n') out += '\\n';
    else if (c === '\t') out += '\\t';
    else if (c === '\r') out += '\\r';
    else out += `\\x${code.toString(16).padStart(2, '0')}`;
  }
  return out;
}

/** ` (a, b, c …)`: the first paths of an SFTP session's list. */
function listed(paths: readonly string[], count: number): string {
  if (paths.length === 0) return '';
  const shown = paths.slice(0, 3).map(escapeControls);
  return ` (${shown.join(', ')}${count > shown.length ? ' …' : ''})`;
}

function sessionWords(via: 'web' | 'ssh', kind: AccessKind | undefined): string {
  if (via === 'web') return 'a web terminal session';
  if (kind === 'sftp') return 'an SFTP session';
  if (kind === 'forward') return 'an SSH port forward';
  return 'an SSH session';
}

/** One line of an instance's timeline, in plain words (`admin`: with the internals that help an operator). */
export function describeInstanceEvent(recorded: RecordedEvent, admin = true): string {
  const event = recorded as RecordedEvent & InstanceEvent;
  switch (event.type) {
    case 'InstanceRequested':
      return `requested "${event.data.name}" from image ${event.data.imageAddress} with spec ${event.data.spec.name}`;
    case 'InstancePlaced': {
      const cards = event.data.gpus.map((g) => `GPU ${g.index} (${g.memoryGb} GB)`).join(', ');
      const ports = (event.data.publicPorts ?? []).map((p) => `${p.port} → host port ${p.hostPort}`).join(', ');
      return `placed on node ${event.data.nodeName}${cards ? ` with ${cards}` : ''}${ports ? `; public ports ${ports}` : ''}`;
    }
    case 'InstanceProvisioningProgressed':
      return event.data.reason;
    case 'ContainerCreated':
      return admin ? `container ${event.data.containerId.slice(0, 12)} created${event.data.storageOptApplied ? '' : ' (system disk size not enforced by this storage driver)'}` : 'container created';
    case 'InstanceProvisioningFailed':
      return `creation failed: ${event.data.reason}`;
    case 'InstanceStateObserved':
      return `${event.data.status === 'running' ? 'running' : event.data.reason}${admin ? ` (seen by ${event.data.source})` : ''}`;
    case 'InstanceContainerVanished':
      return `container vanished: ${event.data.reason}`;
    case 'InstanceOperationRequested':
      return `${OPERATION_WORDS[event.data.operation]} requested`;
    case 'InstanceOperationFailed':
      return `${OPERATION_WORDS[event.data.operation]} failed: ${event.data.reason}${event.data.willRetry ? ' (will retry when the node is back)' : ''}`;
    case 'InstanceOperationCompleted':
      return `${OPERATION_WORDS[event.data.operation]} done`;
    case 'InstanceDeleted':
      return `deleted; removed ${event.data.removed.join(', ') || 'nothing'}${
        event.data.notRemoved.length ? `; could not remove ${event.data.notRemoved.map((f) => `${f.what} (${f.reason})`).join(', ')}` : ''
      }`;
    case 'TerminalSessionOpened':
      return `${event.data.username} opened ${sessionWords(event.data.via, event.data.kind)} from ${event.data.clientAddress} (${escapeControls(event.data.command)})`;
    case 'TerminalSessionClosed': {
      const files = event.data.files;
      const fileWords = files
        ? `; ${files.writtenCount} files written${listed(files.written, files.writtenCount)}, ${files.removedCount} removed${listed(files.removed, files.removedCount)}`
        : '';
      const connections = event.data.connections !== undefined ? `; ${event.data.connections} connections` : '';
      return `${event.data.via === 'ssh' ? 'SSH' : 'web terminal'} session closed after ${Math.round(event.data.durationMs / 1000)} s: ${event.data.reason}; ${event.data.bytesIn} bytes in, ${event.data.bytesOut} bytes out${fileWords}${connections}`;
    }
    case 'ServicePortAdded':
      return `service port ${event.data.port} (${event.data.name}, ${event.data.protocol}) added`;
    case 'ServicePortRemoved':
      return `service port ${event.data.port} removed`;
    case 'InstanceStopScheduled':
      return `${event.data.byUsername} scheduled a stop at ${event.data.at}`;
    case 'InstanceStopUnscheduled':
      return `${event.data.byUsername} cancelled the scheduled stop`;
    case 'InstanceScheduledStopFired':
      return `scheduled stop (${event.data.at}) due: stopping`;
    case 'InstanceIdleStarted':
      return `idle since ${event.data.since} (no session, CPU and GPU below the spec's idle thresholds)`;
    case 'InstanceIdleEnded':
      return 'in use again: the idle auto-stop starts over';
    case 'InstanceIdleWarned':
      return `idle: will be stopped at ${event.data.stopAt} unless used`;
    case 'InstanceIdleStopFired':
      return `idle for ${event.data.minutes} minutes since ${event.data.since}: stopping`;
    case 'InstanceGpuModeChanged':
      return event.data.mode === 'none'
        ? `no-GPU mode: the container was made again without its cards (files kept), at ${event.data.pricePerHour} per hour`
        : `GPU mode again: card${event.data.gpus.length === 1 ? '' : 's'} ${event.data.gpus.map((g) => g.index).join(', ')} taken, at ${event.data.pricePerHour} per hour`;
    case 'InstanceProvisioningRetried':
      return `${event.data.byUsername} had it created again`;
    case 'InstanceGpuLost':
      return `${event.data.cards.map((c) => `GPU ${c.index} (${c.uuid})`).join(', ')} no longer seen on the node (${event.data.reason ?? 'fallen off the bus, or the driver reloaded'}): the work on ${event.data.cards.length === 1 ? 'it' : 'them'} may have stopped; stop and start the instance once the node is fixed, or ask an administrator`;
    case 'InstanceArrearsStopFired':
      return `the owner's prepaid balance is used up (${(event.data.balance / 10_000).toFixed(2)}): stopping`;
    case 'InstanceIdleOptOutSet':
      return `${event.data.byUsername} switched the idle auto-stop ${event.data.optOut ? 'off' : 'on'} for this instance`;
    case 'InstanceServiceUsed':
      return 'a service page was used';
    default:
      return recorded.type;
  }
}

/** The instance's history so far, as it bears on the next entry's words: who asked for what is pending. */
export interface HistoryContext {
  pending: { operation: string; byUsername?: string } | null;
}

/**
 * One line of an instance's timeline as words for the console (`words.<code>` in its language).
 * `admin`: internals that only help an operator (which loop saw a state, a storage driver that
 * does not enforce the disk size, the engine's container id) are in the parameters for admins only.
 */
export function instanceEventWords(recorded: RecordedEvent, context: HistoryContext, admin: boolean): Words {
  const event = recorded as RecordedEvent & InstanceEvent;
  const w = words;
  switch (event.type) {
    case 'InstanceRequested':
      return w('H_REQUESTED', { name: event.data.name, image: event.data.imageAddress, spec: event.data.spec.name });
    case 'InstancePlaced':
      return w(event.data.gpus.length > 0 ? 'H_PLACED_GPUS' : 'H_PLACED', { node: event.data.nodeName, gpus: event.data.gpus.map((g) => g.index).join(', ') });
    case 'InstanceProvisioningProgressed':
      return progressWords(event.data.reason);
    case 'ContainerCreated':
      return admin && !event.data.storageOptApplied ? w('H_CONTAINER_CREATED_NO_DISK_LIMIT', { id: event.data.containerId.slice(0, 12) }) : w('H_CONTAINER_CREATED');
    case 'InstanceProvisioningFailed': {
      const why = engineFailure(event.data.reason);
      return w('H_CREATE_FAILED', { why: why.code }, why.detail);
    }
    case 'InstanceStateObserved': {
      if (event.data.status === 'running') return w(admin ? 'H_RUNNING_SEEN' : 'H_RUNNING', admin ? { source: event.data.source } : {});
      // The end of a stop somebody asked for: said as the stop, not as the signal that ended it.
      if (context.pending?.operation === 'stop' || context.pending?.operation === 'restart') {
        return context.pending.byUsername ? w('H_STOPPED_BY', { user: context.pending.byUsername }) : w('H_STOPPED_ON_REQUEST');
      }
      const how = exitWords(event.data.exitCode, event.data.oomKilled);
      return w(`H_${how.code}`, { ...how.params, ...(admin ? { source: event.data.source } : {}) });
    }
    case 'InstanceContainerVanished':
      return w('H_VANISHED');
    case 'InstanceOperationRequested':
      context.pending = { operation: event.data.operation, ...(event.data.byUsername ? { byUsername: event.data.byUsername } : {}) };
      return event.data.byUsername
        ? w(`H_${event.data.operation.toUpperCase()}_REQUESTED_BY`, { user: event.data.byUsername })
        : w(`H_${event.data.operation.toUpperCase()}_REQUESTED`);
    case 'InstanceOperationFailed': {
      if (!event.data.willRetry) context.pending = null;
      const why = engineFailure(event.data.reason);
      return w(event.data.willRetry ? `H_${event.data.operation.toUpperCase()}_WAITING` : `H_${event.data.operation.toUpperCase()}_FAILED`, { why: why.code }, why.detail);
    }
    case 'InstanceOperationCompleted':
      context.pending = null;
      return w(`H_${event.data.operation.toUpperCase()}_DONE`);
    case 'InstanceDeleted':
      return w(event.data.notRemoved.length > 0 ? 'H_DELETED_PARTLY' : 'H_DELETED', { left: event.data.notRemoved.map((f) => f.what).join(', ') });
    case 'TerminalSessionOpened':
      return w(`H_SESSION_OPENED_${sessionKind(event.data.via, event.data.kind)}`, { user: event.data.username, from: event.data.clientAddress });
    case 'TerminalSessionClosed':
      return w(`H_SESSION_CLOSED_${event.data.via === 'ssh' ? 'SSH' : 'WEB'}`, {
        seconds: Math.round(event.data.durationMs / 1000), in: event.data.bytesIn, out: event.data.bytesOut,
        written: event.data.files?.writtenCount ?? 0, removed: event.data.files?.removedCount ?? 0,
      });
    case 'ServicePortAdded':
      return w('H_SERVICE_ADDED', { port: event.data.port, name: event.data.name });
    case 'ServicePortRemoved':
      return w('H_SERVICE_REMOVED', { port: event.data.port });
    case 'InstanceStopScheduled':
      return w('H_STOP_SCHEDULED', { user: event.data.byUsername, at: event.data.at });
    case 'InstanceStopUnscheduled':
      return w('H_STOP_UNSCHEDULED', { user: event.data.byUsername });
    case 'InstanceScheduledStopFired':
      return w('H_SCHEDULED_STOP_FIRED', { at: event.data.at });
    case 'InstanceIdleStarted':
      return w('H_IDLE_STARTED', { since: event.data.since });
    case 'InstanceIdleEnded':
      return w('H_IDLE_ENDED');
    case 'InstanceIdleWarned':
      return w('H_IDLE_WARNED', { stopAt: event.data.stopAt });
    case 'InstanceIdleStopFired':
      return w('H_IDLE_STOP_FIRED', { minutes: event.data.minutes });
    case 'InstanceGpuModeChanged':
      return event.data.mode === 'none'
        ? w('H_GPU_MODE_OFF', { price: event.data.pricePerHour })
        : w('H_GPU_MODE_ON', { gpus: event.data.gpus.map((g) => g.index).join(', '), price: event.data.pricePerHour });
    case 'InstanceProvisioningRetried':
      return w('H_RETRIED', { user: event.data.byUsername });
    case 'InstanceGpuLost':
      return w('H_GPU_LOST', { gpus: event.data.cards.map((c) => c.index).join(', ') }, event.data.reason ?? undefined);
    case 'InstanceArrearsStopFired':
      return w('H_ARREARS_STOP', { balance: (event.data.balance / 10_000).toFixed(2) });
    case 'InstanceIdleOptOutSet':
      return w(event.data.optOut ? 'H_IDLE_OPT_OUT' : 'H_IDLE_OPT_IN', { user: event.data.byUsername });
    default:
      return w('H_OTHER', { type: recorded.type });
  }
}

function sessionKind(via: 'web' | 'ssh', kind: AccessKind | undefined): string {
  if (via === 'web') return 'WEB';
  if (kind === 'sftp') return 'SFTP';
  if (kind === 'forward') return 'FORWARD';
  return 'SSH';
}
