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
  const output = new ShellOutput(source, high, low);
  const sent: { text: string; acknowledge: () => void }[] = [];
  const forward = (chunk: Buffer) => output.forward(chunk, (text, acknowledge) => sent.push({ text, acknowledge }));
  return { flow, output, sent, forward };
}

describe('ShellOutput', () => {
  it('sends a character cut across chunks whole, wherever the cut is', () => {
    const bytes = Buffer.from('显存切分 ok\n', 'utf8');
    for (let cut = 0; cut <= bytes.length; cut += 1) {
      const { sent, forward } = harness(1_000, 500);
      forward(bytes.subarray(0, cut));
      forward(bytes.subarray(cut));
      expect(sent.map((s) => s.text).join('')).toBe('显存切分 ok\n');
      // No piece holds half a character (which would show as U+FFFD in the browser).
      for (const { text } of sent) expect(text).not.toContain('\uFFFD');
    }
  });

  it('holds back nothing for a chunk that is only the start of a character', () => {
    const { sent, forward } = harness();
    forward(Buffer.from([0xe6, 0x98]));
    expect(sent).toEqual([]);
    forward(Buffer.from([0xbe]));
    expect(sent.map((s) => s.text)).toEqual(['显']);
  });

  it('gives an incomplete character at the end as a replacement character', () => {
    const { output, forward } = harness();
    forward(Buffer.from([0x61, 0xe6, 0x98]));
    expect(output.flush()).toBe('\uFFFD');
  });

  it('pauses the source above the high-water mark of unacknowledged bytes and resumes below the low one', () => {
    const { flow, sent, forward } = harness(100, 40);
    forward(Buffer.alloc(60, 0x79));
    forward(Buffer.alloc(40, 0x79));
    expect(flow.paused).toBe(false); // 100 is not above 100
    forward(Buffer.alloc(30, 0x79));
    expect(flow).toMatchObject({ paused: true, pauses: 1 });
    sent[0]!.acknowledge(); // 70 left: still above 40
    expect(flow.paused).toBe(true);
    sent[2]!.acknowledge(); // 40 left
    expect(flow).toMatchObject({ paused: false, resumes: 1 });
    sent[1]!.acknowledge();
    expect(flow).toMatchObject({ pauses: 1, resumes: 1 });
  });

  it('pauses once however much more comes while paused', () => {
    const { flow, forward } = harness(100, 40);
    for (let i = 0; i < 10; i += 1) forward(Buffer.alloc(64, 0x79));
    expect(flow.pauses).toBe(1);
  });
});
