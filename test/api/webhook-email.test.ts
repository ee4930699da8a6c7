import type { AddressInfo } from 'node:net';
import { SMTPServer } from 'smtp-server';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { ADMIN_PASSWORD, startTestApp, type TestApp } from '../support/app.ts';
import { waitFor } from '../support/fixtures.ts';

interface Mail {
  readonly from: string;
  readonly to: string[];
  readonly raw: string;
}

beforeAll(() => {
  vi.stubEnv('TIANQI_WEBHOOK_RETRY_BASE_MS', '50');
});
afterAll(() => {
  vi.unstubAllEnvs();
});

/**
 * Email notifications through the deployment's SMTP relay, against a local SMTP server (the
 * stand-in for a relay outside, which cannot be reached here): the message as a person reads it,
 * a relay that refuses is retried, and without a relay an email webhook is refused at once.
 */
describe('email notifications', () => {
  let t: TestApp;
  let admin: string;
  const mails: Mail[] = [];
  let refuseNext = 1;
  const smtp = new SMTPServer({
    authOptional: true,
    disabledCommands: ['STARTTLS'],
    logger: false,
    onRcptTo(address, _session, callback) {
      if (refuseNext > 0) {
        refuseNext -= 1;
        return callback(Object.assign(new Error('mailbox busy, try again'), { responseCode: 451 }));
      }
      callback();
    },
    onData(stream, session, callback) {
      const chunks: Buffer[] = [];
      stream.on('data', (c: Buffer) => chunks.push(c));
      stream.on('end', () => {
        mails.push({
          from: session.envelope.mailFrom ? session.envelope.mailFrom.address : '',
          to: session.envelope.rcptTo.map((r) => r.address),
          raw: Buffer.concat(chunks).toString('utf8'),
        });
        callback();
      });
    },
  });

  beforeAll(async () => {
    await new Promise<void>((resolve) => smtp.listen(0, '127.0.0.1', resolve));
    const port = (smtp.server.address() as AddressInfo).port;
    t = await startTestApp({ TIANQI_SMTP_URL: `smtp://127.0.0.1:${port}`, TIANQI_SMTP_FROM: 'TianQi <noreply@lab.example.cn>' });
    admin = await t.login('admin', ADMIN_PASSWORD);
  });
  afterAll(async () => {
    await t.stop();
    await new Promise<void>((resolve) => smtp.close(() => resolve()));
  });

  it('mails the event in Chinese to the address, and retries a relay that refused', async () => {
    const hook = await t.api<{ id: string; url: string; format: string }>('POST', '/api/v1/webhooks', {
      token: admin, body: { url: 'mailto:ops@lab.example.cn', events: ['UserRegistered'], format: 'email' },
    });
    expect(hook.status, JSON.stringify(hook.body)).toBe(201);
    expect(hook.body.url).toBe('mailto:ops@lab.example.cn');
    expect((await t.api('POST', '/api/v1/users', { token: admin, body: { username: 'wangwu', password: 'wangwu-password' } })).status).toBe(201);
    const [mail] = await waitFor(async () => mails, (m) => m.length === 1, 20_000);
    expect(mail!.from).toBe('noreply@lab.example.cn');
    expect(mail!.to).toEqual(['ops@lab.example.cn']);
    // the subject and body as a mail client shows them (quoted-printable / base64 for the Chinese words)
    const decoded = decodeMail(mail!.raw);
    expect(decoded).toContain('新用户 wangwu 已注册。');
    expect(decoded).toMatch(/Subject: 【天启算力】新用户 wangwu 已注册。/);
    const attempts = await waitFor(() => t.api<{ attempt: number; status: number | null; error: string | null }[]>('GET', `/api/v1/webhooks/${hook.body.id}/deliveries`, { token: admin }).then((r) => r.body),
      (list) => list.length >= 2, 10_000);
    expect(attempts[0]).toMatchObject({ attempt: 2, status: 250, error: null });
    expect(attempts[1]!.attempt).toBe(1);
    expect(attempts[1]!.error).toMatch(/SMTP relay refused.*451/);
  }, 30_000);

  it('takes only mailto: and one address, and no signing secret', async () => {
    for (const body of [
      { url: 'ops@lab.example.cn', events: ['*'], format: 'email' },
      { url: 'mailto:a@b.cn,c@d.cn', events: ['*'], format: 'email' },
      { url: 'mailto:ops@lab.example.cn', events: ['*'], format: 'email', secret: 'x'.repeat(20) },
      { url: 'mailto:ops@lab.example.cn', events: ['*'] },
    ]) {
      expect((await t.api('POST', '/api/v1/webhooks', { token: admin, body })).status, JSON.stringify(body)).toBe(400);
    }
  });
});

describe('email notifications without a relay', () => {
  it('refuses an email webhook at once, naming the setting', async () => {
    const t = await startTestApp();
    try {
      const admin = await t.login('admin', ADMIN_PASSWORD);
      const r = await t.api<{ error: { fields: Record<string, string> } }>('POST', '/api/v1/webhooks', {
        token: admin, body: { url: 'mailto:ops@lab.example.cn', events: ['*'], format: 'email' },
      });
      expect(r.status).toBe(400);
      expect(r.body.error.fields.format).toContain('TIANQI_SMTP_URL');
    } finally {
      await t.stop();
    }
  });
});

/** The headers' encoded words and a quoted-printable or base64 body, decoded (enough for these checks). */
function decodeMail(raw: string): string {
  const words = raw.replace(/=\?utf-8\?(B|Q)\?([^?]*)\?=/gi, (_m, kind: string, text: string) =>
    kind.toUpperCase() === 'B' ? Buffer.from(text, 'base64').toString('utf8') : decodeQuoted(text.replace(/_/g, ' ')));
  const unfolded = words.replace(/\?=\s+=\?/g, '').replace(/\r\n[ \t]+/g, '');
  const [head, ...rest] = unfolded.split(/\r\n\r\n/);
  const body = rest.join('\r\n\r\n');
  if (/content-transfer-encoding: base64/i.test(head!)) return `${head}\n${Buffer.from(body.replace(/\s+/g, ''), 'base64').toString('utf8')}`;
  if (/content-transfer-encoding: quoted-printable/i.test(head!)) return `${head}\n${decodeQuoted(body.replace(/=\r\n/g, ''))}`;
  return `${head}\n${body}`;
}

function decodeQuoted(text: string): string {
  const bytes: number[] = [];
  for (let i = 0; i < text.length; i++) {
    if (text[i] === '=' && /^[0-9A-F]{2}$/i.test(text.slice(i + 1, i + 3))) {
      bytes.push(parseInt(text.slice(i + 1, i + 3), 16));
      i += 2;
    } else {
      bytes.push(...Buffer.from(text[i]!, 'utf8'));
    }
  }
  return Buffer.from(bytes).toString('utf8');
}
