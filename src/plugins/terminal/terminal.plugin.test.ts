import { describe, expect, it } from 'vitest';
import type { RecordedEvent } from '../../ports/event-store.port.ts';
import { parseOpen, parseSize } from './terminal-session.ts';
import { endingOf } from './terminal.plugin.ts';

function event(type: string, data: unknown = {}): RecordedEvent {
  return { id: 'e', stream: 'instance-1', revision: 0, position: 1, type, data, metadata: { time: '2024-05-01T00:00:00Z' } } as RecordedEvent;
}

describe('parseOpen', () => {
  it('takes an instance, a size and an optional shell', () => {
    expect(parseOpen({ instanceId: 'i1', cols: 80, rows: 24 })).toEqual({ instanceId: 'i1', cols: 80, rows: 24, shell: undefined, ack: false });
    expect(parseOpen({ instanceId: 'i1', cols: 1, rows: 1000, shell: '/bin/sh' })).toMatchObject({ shell: '/bin/sh' });
    expect(parseOpen({ instanceId: 'i1', cols: 80, rows: 24, shell: '/bin/bash' })).toMatchObject({ shell: '/bin/bash' });
  });

  it('refuses any other shell, a missing instance and sizes outside 1..1000 or not whole', () => {
    expect(parseOpen({ instanceId: 'i1', cols: 80, rows: 24, shell: '/usr/bin/python3' })).toMatch(/shell must be/);
    expect(parseOpen({ cols: 80, rows: 24 })).toMatch(/instanceId/);
    expect(parseOpen(null)).toMatch(/instanceId/);
    for (const size of [{ cols: 0, rows: 24 }, { cols: 80, rows: 1001 }, { cols: 80.5, rows: 24 }, { cols: '80', rows: 24 }, { cols: 80 }]) {
      expect(parseOpen({ instanceId: 'i1', ...size })).toMatch(/cols and rows/);
    }
  });
});

describe('parseSize', () => {
  it('accepts whole numbers from 1 to 1000 only', () => {
    expect(parseSize({ cols: 100, rows: 40 })).toEqual({ cols: 100, rows: 40 });
    expect(parseSize({ cols: 100, rows: 40, extra: 1 })).toEqual({ cols: 100, rows: 40 });
    expect(parseSize({ cols: -1, rows: 40 })).toBeNull();
    expect(parseSize({ cols: Number.NaN, rows: 40 })).toBeNull();
    expect(parseSize(undefined)).toBeNull();
  });
});

describe('endingOf', () => {
  it('ends sessions when the user is disabled or deleted, or the instance stops, fails or goes', () => {
    expect(endingOf(event('UserDisabled'))?.error?.code).toBe('ACCOUNT_DISABLED');
    expect(endingOf(event('UserDeleted'))?.error?.code).toBe('ACCOUNT_DELETED');
    expect(endingOf(event('InstanceStateObserved', { status: 'exited' }))?.error?.code).toBe('INSTANCE_STOPPED');
    expect(endingOf(event('InstanceProvisioningFailed'))?.error?.code).toBe('INSTANCE_FAILED');
    expect(endingOf(event('InstanceContainerVanished'))?.error?.code).toBe('INSTANCE_FAILED');
    expect(endingOf(event('InstanceOperationRequested', { operation: 'delete' }))?.error?.code).toBe('INSTANCE_DELETED');
    expect(endingOf(event('InstanceDeleted'))?.reason).toBe('the instance was deleted');
    expect(endingOf(event('UserPasswordChanged'))?.error?.code).toBe('PASSWORD_CHANGED');
  });

  it('narrows an admin made a user to the terminals of their own instances', () => {
    expect(endingOf(event('UserRoleChanged', { role: 'user' }))).toMatchObject({ foreignOnly: true, error: { code: 'ROLE_CHANGED' } });
    expect(endingOf(event('UserRoleChanged', { role: 'admin' }))).toBeNull();
  });

  it('leaves them alone for anything else', () => {
    expect(endingOf(event('InstanceStateObserved', { status: 'running' }))).toBeNull();
    expect(endingOf(event('InstanceOperationRequested', { operation: 'stop' }))).toBeNull();
    expect(endingOf(event('TerminalSessionOpened'))).toBeNull();
    expect(endingOf(event('UserUpdated'))).toBeNull();
  });
});
