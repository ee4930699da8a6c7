import { describe, expect, it } from 'vitest';
import type { RecordedEvent } from '../../ports/event-store.port.ts';
import { describeInstanceEvent } from './history.ts';

/** Whether any character is a control character (C0, DEL or C1). */
const hasControls = (text: string) => [...text].some((c) => c.charCodeAt(0) < 0x20 || (c.charCodeAt(0) >= 0x7f && c.charCodeAt(0) <= 0x9f));
const recorded = (type: string, data: unknown) => ({ type, data, stream: 'instance-i1', revision: 0, position: 1, metadata: { time: '2026-01-01T00:00:00.000Z' } }) as unknown as RecordedEvent;

describe('instance history lines', () => {
  it('shows names and commands with control characters escaped, never raw', () => {
    const closed = describeInstanceEvent(recorded('TerminalSessionClosed', {
      sessionId: 's', via: 'ssh', durationMs: 1000, bytesIn: 1, bytesOut: 2, exitCode: 0, reason: 'the client left',
      files: { written: ['/data/\u001b[31mred\u001b[0m.txt', '/data/two\nlines'], writtenCount: 2, removed: ['/tmp/\u0007bell'], removedCount: 1 },
    }));
    expect(closed).toContain('/data/\\x1b[31mred\\x1b[0m.txt');
    expect(closed).toContain('/data/two\\nlines');
    expect(closed).toContain('/tmp/\\x07bell');
    expect(hasControls(closed)).toBe(false);
    const opened = describeInstanceEvent(recorded('TerminalSessionOpened', {
      sessionId: 's', via: 'ssh', userId: 'u', username: 'alice', clientAddress: '10.0.0.9', command: 'echo \u001b]0;title\u0007', kind: 'command',
    }));
    expect(hasControls(opened)).toBe(false);
    expect(opened).toContain('echo \\x1b]0;title\\x07');
    // 中文 names stay as they are
    expect(describeInstanceEvent(recorded('TerminalSessionClosed', {
      sessionId: 's', via: 'ssh', durationMs: 0, bytesIn: 0, bytesOut: 0, exitCode: 0, reason: 'done',
      files: { written: ['/data/数据集.tar'], writtenCount: 1, removed: [], removedCount: 0 },
    }))).toContain('/data/数据集.tar');
  });
});
