import type { Command, Decider, DomainEvent } from '../shared/decider.ts';
import { assertNever } from '../shared/decider.ts';
import { ConflictError, NotFoundError } from '../shared/errors.ts';
import type { ServicePort } from '../instance/service-ports.ts';

/** 镜像库: an image users can start instances from. */
export interface ImageFields {
  readonly name: string;
  /** Docker image reference, e.g. `registry.example.com/lab/pytorch:2.4-cuda12`. */
  readonly address: string;
  readonly description: string;
  readonly source: string;
  /** Whether the image carries what HAMi-core vGPU slicing needs. */
  readonly vgpuSupported: boolean;
  readonly listed: boolean;
  readonly remark: string;
  /** Services its instances run (JupyterLab on 8888…): each one a link on the instance. Absent in older records. */
  readonly ports?: readonly ServicePort[];
}

export type ImageEvent =
  | DomainEvent<'ImageCreated', ImageFields & { imageId: string }>
  | DomainEvent<'ImageUpdated', Partial<ImageFields>>
  | DomainEvent<'ImageDeleted', { imageId: string }>;

export type ImageCommand =
  | Command<'CreateImage', ImageFields & { imageId: string }>
  | Command<'UpdateImage', Partial<ImageFields>>
  | Command<'DeleteImage', { liveInstances: number }>;

export type ImageState =
  | { readonly status: 'none' }
  | { readonly status: 'active' | 'deleted'; readonly imageId: string; readonly fields: ImageFields };

export const imageStream = (imageId: string) => `image-${imageId}`;

export const imageDecider: Decider<ImageCommand, ImageState, ImageEvent> = {
  initialState: () => ({ status: 'none' }),
  decide(command, state) {
    switch (command.type) {
      case 'CreateImage':
        if (state.status !== 'none') throw new ConflictError('IMAGE_EXISTS', 'This image already exists.');
        return [{ type: 'ImageCreated', data: command.data }];
      case 'UpdateImage': {
        if (state.status !== 'active') throw new NotFoundError('Image');
        const changes = changedFields(state.fields, command.data);
        return Object.keys(changes).length > 0 ? [{ type: 'ImageUpdated', data: changes }] : [];
      }
      case 'DeleteImage':
        if (state.status !== 'active') throw new NotFoundError('Image');
        assertNotInUse('image', command.data.liveInstances);
        return [{ type: 'ImageDeleted', data: { imageId: state.imageId } }];
      default:
        return assertNever(command);
    }
  },
  evolve(state, event) {
    switch (event.type) {
      case 'ImageCreated': {
        const { imageId, ...fields } = event.data;
        return { status: 'active', imageId, fields };
      }
      case 'ImageUpdated':
        return state.status === 'none' ? state : { ...state, fields: { ...state.fields, ...event.data } };
      case 'ImageDeleted':
        return state.status === 'none' ? state : { ...state, status: 'deleted' };
      default:
        return assertNever(event);
    }
  },
};

/** Only the fields whose value differs from the current one, so an update records real changes. */
export function changedFields<T extends object>(current: T, requested: Partial<T>): Partial<T> {
  const changes: Partial<T> = {};
  for (const key of Object.keys(requested) as (keyof T)[]) {
    const value = requested[key];
    if (value !== undefined && JSON.stringify(value) !== JSON.stringify(current[key])) changes[key] = value;
  }
  return changes;
}

/** Deleting what a live instance uses is refused; unlisting is always allowed. */
export function assertNotInUse(what: string, liveInstances: number): void {
  if (liveInstances > 0) {
    throw new ConflictError(
      'IN_USE',
      `This ${what} is used by ${liveInstances} live instance${liveInstances === 1 ? '' : 's'}. Unlist it to hide it from new instances, or delete those instances first.`,
    );
  }
}
