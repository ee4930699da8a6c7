import type { GroupEvent } from '../domain/group/group.decider.ts';
import type { RecordedEvent } from '../ports/event-store.port.ts';
import { documentProjection } from './projection-runner.ts';

/** A 用户组 as admins see it; its quota is in the quotas collection (`group:<id>`). */
export interface GroupView {
  readonly id: string;
  readonly name: string;
  readonly nameLower: string;
  readonly createdAt: string;
}

export const GROUPS = 'groups';

export const groupsProjection = documentProjection<GroupView>({
  name: 'groups',
  collection: GROUPS,
  idOf: (event) => (event.stream.startsWith('group-') ? event.stream.slice('group-'.length) : undefined),
  evolve(_doc, recorded) {
    const event = recorded as RecordedEvent & GroupEvent;
    switch (event.type) {
      case 'GroupCreated':
        return { id: event.data.groupId, name: event.data.name, nameLower: event.data.name.toLowerCase(), createdAt: recorded.metadata.time };
      case 'GroupDeleted':
        return null;
      default:
        return undefined;
    }
  },
});
