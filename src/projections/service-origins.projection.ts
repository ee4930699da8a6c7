import { SERVICE_ORIGINS_STREAM, type ServiceOrigin, type ServiceOriginEvent } from '../domain/instance/service-origins.ts';
import type { RecordedEvent } from '../ports/event-store.port.ts';
import { documentProjection } from './projection-runner.ts';

/** Which service each port of TIANQI_SERVICE_PORTS serves now: one document per assigned port. */
export interface ServiceOriginView extends ServiceOrigin {
  readonly id: string;
  readonly assignedAt: string;
}

export const SERVICE_ORIGINS = 'service_origins';

export const serviceOriginsProjection = documentProjection<ServiceOriginView>({
  name: 'service-origins',
  collection: SERVICE_ORIGINS,
  indexes: [{ fields: { instanceId: 1, port: 1 } }],
  idOf: (event) => (event.stream === SERVICE_ORIGINS_STREAM ? String((event.data as { listenPort: number }).listenPort) : undefined),
  evolve(doc, recorded) {
    const event = recorded as RecordedEvent & ServiceOriginEvent;
    switch (event.type) {
      case 'ServiceOriginAssigned':
        return { id: String(event.data.listenPort), ...event.data, assignedAt: recorded.metadata.time };
      case 'ServiceOriginReleased':
        // A release of an older assignment (already replaced) changes nothing.
        return doc && doc.generation === event.data.generation ? null : undefined;
      default:
        return undefined;
    }
  },
});
