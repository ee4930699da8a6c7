import type { Command, Decider, DomainEvent } from '../shared/decider.ts';
import { assertNever } from '../shared/decider.ts';
import { ConflictError } from '../shared/errors.ts';

/**
 * 服务端口 (the port form of service links): each open service gets a port of the platform's host
 * from a configured range, so that it is an origin of its own (`http://<platform host>:<port>/`):
 * its scripts share nothing with the console or with another service (storage, service workers,
 * fetch with credentials). One ledger stream holds every assignment, so two replicas can never
 * hand out the same port (optimistic concurrency, as the node's capacity ledger).
 */
export const SERVICE_ORIGINS_STREAM = 'service-origins';

export interface ServiceOrigin {
  /** The platform's port the service is served on. */
  readonly listenPort: number;
  readonly instanceId: string;
  /** The service's port in the container. */
  readonly port: number;
  /**
   * Random per assignment: a browser that knew this port under an earlier assignment (another
   * service, perhaps another tenant's) has its storage for the origin cleared on first use.
   */
  readonly generation: string;
}

export type ServiceOriginEvent =
  | DomainEvent<'ServiceOriginAssigned', ServiceOrigin>
  | DomainEvent<'ServiceOriginReleased', ServiceOrigin & { reason: ReleaseReason }>;

/** Why a port went back to the range. */
export type ReleaseReason = 'instance-deleted' | 'port-removed' | 'outside-range';

export type ServiceOriginCommand =
  | Command<'AssignServiceOrigin', {
    instanceId: string;
    port: number;
    range: { min: number; max: number };
    generation: string;
    /** Assignments whose service no longer exists (the caller looked): they may be taken back. */
    gone: readonly { listenPort: number; reason: ReleaseReason }[];
  }>
  | Command<'ReleaseServiceOrigins', { instanceId: string; port?: number; reason: ReleaseReason }>;

export interface ServiceOriginsState {
  readonly assigned: ReadonlyMap<number, ServiceOrigin>;
  /** When each port was last released (its event's order), for least-recently-used reuse. */
  readonly released: ReadonlyMap<number, number>;
  readonly version: number;
}

export function originOf(state: ServiceOriginsState, instanceId: string, port: number): ServiceOrigin | undefined {
  for (const origin of state.assigned.values()) if (origin.instanceId === instanceId && origin.port === port) return origin;
  return undefined;
}

/**
 * The port for a service: the one it has, else a port never used, else the one released longest
 * ago (a browser may still hold the old service's storage for it: the generation clears it), else
 * one whose service is gone. None left: 409 NO_SERVICE_PORT.
 */
function choose(state: ServiceOriginsState, range: { min: number; max: number }, gone: ReadonlyMap<number, ReleaseReason>): number | null {
  let oldest: number | null = null;
  for (let p = range.min; p <= range.max; p++) {
    if (state.assigned.has(p)) continue;
    const at = state.released.get(p);
    if (at === undefined) return p;
    if (oldest === null || at < state.released.get(oldest)!) oldest = p;
  }
  if (oldest !== null) return oldest;
  for (let p = range.min; p <= range.max; p++) if (gone.has(p)) return p;
  return null;
}

export const serviceOriginsDecider: Decider<ServiceOriginCommand, ServiceOriginsState, ServiceOriginEvent> = {
  initialState: () => ({ assigned: new Map(), released: new Map(), version: 0 }),

  decide(command, state) {
    switch (command.type) {
      case 'AssignServiceOrigin': {
        const { instanceId, port, range, generation } = command.data;
        const held = originOf(state, instanceId, port);
        if (held && held.listenPort >= range.min && held.listenPort <= range.max) return [];
        const events: ServiceOriginEvent[] = [];
        // A port the range no longer covers is given back before a new one is taken.
        if (held) events.push({ type: 'ServiceOriginReleased', data: { ...held, reason: 'outside-range' } });
        const gone = new Map(command.data.gone.filter((g) => state.assigned.has(g.listenPort)).map((g) => [g.listenPort, g.reason]));
        const listenPort = choose(state, range, gone);
        if (listenPort === null) {
          throw new ConflictError('NO_SERVICE_PORT', `All ${range.max - range.min + 1} service ports (${range.min}–${range.max}, TIANQI_SERVICE_PORTS) are in use; an admin can widen the range.`);
        }
        const previous = state.assigned.get(listenPort);
        if (previous) events.push({ type: 'ServiceOriginReleased', data: { ...previous, reason: gone.get(listenPort)! } });
        events.push({ type: 'ServiceOriginAssigned', data: { listenPort, instanceId, port, generation } });
        return events;
      }
      case 'ReleaseServiceOrigins': {
        const { instanceId, port, reason } = command.data;
        return [...state.assigned.values()]
          .filter((o) => o.instanceId === instanceId && (port === undefined || o.port === port))
          .map((o) => ({ type: 'ServiceOriginReleased', data: { ...o, reason } }));
      }
      default:
        return assertNever(command);
    }
  },

  evolve(state, event) {
    const assigned = new Map(state.assigned);
    const released = new Map(state.released);
    const version = state.version + 1;
    switch (event.type) {
      case 'ServiceOriginAssigned':
        assigned.set(event.data.listenPort, { listenPort: event.data.listenPort, instanceId: event.data.instanceId, port: event.data.port, generation: event.data.generation });
        return { assigned, released, version };
      case 'ServiceOriginReleased':
        if (assigned.get(event.data.listenPort)?.generation === event.data.generation) assigned.delete(event.data.listenPort);
        released.set(event.data.listenPort, version);
        return { assigned, released, version };
      default:
        return assertNever(event);
    }
  },
};
