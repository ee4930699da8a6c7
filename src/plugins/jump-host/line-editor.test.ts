import { describe, expect, it } from 'vitest';
import { LineEditor } from './line-editor.ts';
import { menuLine, transferTool, splitLogin } from './menu.ts';
import type { InstanceView } from '../../projections/instances.projection.ts';

describe('menu line editor', () => {
  const text = (b: Buffer) => b.toString('utf8');

  it('echoes on a PTY, handles backspace and takes \\r as Enter', () => {
    const editor = new LineEditor(true);
    const first = editor.feed(Buffer.from('12'));
    expect([text(first.echo), first.line]).toEqual(['12', null]);
    const second = editor.feed(Buffer.from('\x7f3\r'));
    expect([text(second.echo), second.line]).toEqual(['\b \b3\r\n', '13']);
  });

  it('stops at the first line and hands back the input after it, untouched', () => {
    const editor = new LineEditor(false);
    const first = editor.feed(Buffer.from('1\r\necho $((6*7))\n'));
    expect(first).toMatchObject({ line: '1', interrupted: false });
    expect(first.echo.length).toBe(0);
    // the \n of \r\n belongs to the same Enter
    const second = editor.feed(first.rest);
    expect(second.line).toBe('echo $((6*7))');
    expect(second.rest.length).toBe(0);
  });

  it('swallows escape sequences (arrow keys) and stops on Ctrl-C', () => {
    const editor = new LineEditor(true);
    expect(text(editor.feed(Buffer.from('\x1b[A\x1bOB\x1b[1;5C2')).echo)).toBe('2');
    expect(editor.feed(Buffer.from('\x03')).interrupted).toBe(true);
  });

  it('erases whole UTF-8 characters, even when they came in pieces', () => {
    const editor = new LineEditor(true);
    const bytes = Buffer.from('1退');
    editor.feed(bytes.subarray(0, 2));
    editor.feed(bytes.subarray(2));
    expect(text(editor.feed(Buffer.from('\x7f')).echo)).toBe('\b \b');
    expect(editor.feed(Buffer.from('\r')).line).toBe('1');
  });
});

describe('menu text', () => {
  it('splits user+instance logins', () => {
    expect(splitLogin('alice')).toEqual({ username: 'alice', instanceName: null });
    expect(splitLogin('alice+train-1')).toEqual({ username: 'alice', instanceName: 'train-1' });
  });

  it('lists <n>  <name>-<container 12>-<node> with the state of stopped ones', () => {
    const instance = { name: 'train', containerId: 'abcdef0123456789', nodeName: 'gpu-1', status: 'running' } as InstanceView;
    expect(menuLine(1, instance)).toBe('1  train-abcdef012345-gpu-1');
    expect(menuLine(2, { ...instance, status: 'exited' })).toBe('2  train-abcdef012345-gpu-1 [exited]');
  });

  it('recognises classic scp on the server side', () => {
    expect(transferTool('scp -t /tmp')).toBe('scp');
    expect(transferTool('/usr/bin/scp -f x')).toBe('scp');
    expect(transferTool('rsync --server -vlogDtpre.iLsfxCIvu . /data/')).toBe('rsync');
    expect(transferTool('rsync -av a b')).toBeNull();
    expect(transferTool('echo scp')).toBeNull();
  });
});
