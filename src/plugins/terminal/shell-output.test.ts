import { setImmediate as nextTurn } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import { ShellOutput } from './shell-output.ts';

function harness(high = 100, low = 40) {
  const flow = { paused: false, pauses: 0, resumes: 0 };
  const source = {
    pause: () => {
      flow.paused = true;
      flow.pauses += 1;
    },
    resume: () => {
      flow.paused = false;
      flow.resumes += 1;
    },
  };
  const sent: { text: string; acknowledge: () => void }[] = [];
  const output = new ShellOutput(source, (text, acknowledge) => sent.push({ text, acknowledge }), high, low);
  /** One chunk in its own turn of the event loop, as separate reads from the engine arrive. */
  const arrive = (chunk: Buffer) => {
    output.write(chunk);
    output.flush();
  };
  return { flow, output, sent, arrive };
}

describe('ShellOutput', () => {
  it('sends a character cut across chunks whole, wherever the cut is', () => {
    const bytes = Buffer.from('显存切分 ok\n', 'utf8');
    for (let cut = 0; cut <= bytes.length; cut += 1) {
      const { sent, arrive } = harness(1_000, 500);
      arrive(bytes.subarray(0, cut));
      arrive(bytes.subarray(cut));
      expect(sent.map((s) => s.text).join('')).toBe('显存切分 ok\n');
      // No piece holds half a character (which would show as U+FFFD in the browser).
      for (const { text } of sent) expect(text).not.toContain('\uFFFD');
    }
  });

  it('holds back nothing for a chunk that is only the start of a character', () => {
    const { sent, arrive } = harness();
    arrive(Buffer.from([0xe6, 0x98]));
    expect(sent).toEqual([]);
    arrive(Buffer.from([0xbe]));
    expect(sent.map((s) => s.text)).toEqual(['显']);
  });

  it('sends an incomplete character at the end as a replacement character', () => {
    const { output, sent, arrive } = harness();
    arrive(Buffer.from([0x61, 0xe6, 0x98]));
    output.end();
    expect(sent.map((s) => s.text)).toEqual(['a', '\uFFFD']);
  });

  it('sends what arrives in one turn of the event loop as one message, at the end of the turn', async () => {
    const { output, sent } = harness(1_000, 500);
    output.write(Buffer.from('line 1\n'));
    output.write(Buffer.from('line 2\n'));
    output.write(Buffer.from('显', 'utf8').subarray(0, 2));
    expect(sent).toEqual([]);
    await nextTurn();
    expect(sent.map((s) => s.text)).toEqual(['line 1\nline 2\n']);
    output.write(Buffer.from('显', 'utf8').subarray(2));
    await nextTurn();
    expect(sent.map((s) => s.text)).toEqual(['line 1\nline 2\n', '显']);
  });

  it('sends what is pending when the output ends, before anything that follows', () => {
    const { output, sent } = harness();
    output.write(Buffer.from('bye\n'));
    output.end();
    expect(sent.map((s) => s.text)).toEqual(['bye\n']);
  });

  it('pauses the source above the high-water mark of unacknowledged bytes and resumes below the low one', () => {
    const { flow, sent, arrive } = harness(100, 40);
    arrive(Buffer.alloc(60, 0x79));
    arrive(Buffer.alloc(40, 0x79));
    expect(flow.paused).toBe(false); // 100 is not above 100
    arrive(Buffer.alloc(30, 0x79));
    expect(flow).toMatchObject({ paused: true, pauses: 1 });
    sent[0]!.acknowledge(); // 70 left: still above 40
    expect(flow.paused).toBe(true);
    sent[2]!.acknowledge(); // 40 left
    expect(flow).toMatchObject({ paused: false, resumes: 1 });
    sent[1]!.acknowledge();
    expect(flow).toMatchObject({ pauses: 1, resumes: 1 });
  });

  it('counts a coalesced message as all its bytes, and pauses within the turn that crosses the mark', async () => {
    const { flow, sent, output } = harness(100, 40);
    for (let i = 0; i < 3; i += 1) output.write(Buffer.alloc(50, 0x79));
    expect(flow).toMatchObject({ paused: true, pauses: 1 });
    await nextTurn();
    expect(sent).toHaveLength(1);
    sent[0]!.acknowledge();
    expect(flow).toMatchObject({ paused: false, resumes: 1 });
  });

  it('pauses once however much more comes while paused', () => {
    const { flow, arrive } = harness(100, 40);
    for (let i = 0; i < 10; i += 1) arrive(Buffer.alloc(64, 0x79));
    expect(flow.pauses).toBe(1);
  });
});
