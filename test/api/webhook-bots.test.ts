import { createHmac } from 'node:crypto';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { ADMIN_PASSWORD, startTestApp, type TestApp } from '../support/app.ts';
import { waitFor } from '../support/fixtures.ts';

type Bot = 'wecom' | 'dingtalk' | 'feishu';
interface Received {
  readonly path: string;
  readonly query: URLSearchParams;
  readonly body: Record<string, unknown>;
  readonly verdict: string;
}

const DING_SECRET = 'SEC0123456789abcdef0123456789abcdef';
const FEISHU_SECRET = 'feishu-signing-secret';

/**
 * A local stand-in for each bot that checks what its real counterpart checks: the message shape it
 * documents and, where the bot signs, the signature and the timestamp's age; it answers as the bot
 * does (HTTP 200, with a code in the body).
 */
async function startBot(kind: Bot, failFirst = 0) {
  const received: Received[] = [];
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const url = new URL(req.url!, 'http://bot');
      const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as Record<string, unknown>;
      let verdict = 'ok';
      if (kind === 'wecom') {
        const md = body.markdown as { content?: unknown } | undefined;
        if (url.searchParams.get('key') !== 'wecom-key-1234567890' || body.msgtype !== 'markdown' || typeof md?.content !== 'string') verdict = 'bad message';
      }
      if (kind === 'dingtalk') {
        const ts = url.searchParams.get('timestamp') ?? '';
        const sign = createHmac('sha256', DING_SECRET).update(`${ts}\n${DING_SECRET}`).digest('base64');
        const md = body.markdown as { title?: unknown; text?: unknown } | undefined;
        if (url.searchParams.get('access_token') !== 'ding-token' || body.msgtype !== 'markdown' || typeof md?.title !== 'string' || typeof md?.text !== 'string') verdict = 'bad message';
        else if (url.searchParams.get('sign') !== sign || Math.abs(Date.now() - Number(ts)) > 3_600_000) verdict = 'sign not match';
      }
      if (kind === 'feishu') {
        const ts = String(body.timestamp ?? '');
        const sign = createHmac('sha256', `${ts}\n${FEISHU_SECRET}`).update('').digest('base64');
        const content = body.content as { text?: unknown } | undefined;
        if (body.msg_type !== 'text' || typeof content?.text !== 'string') verdict = 'bad message';
        else if (body.sign !== sign || Math.abs(Date.now() / 1000 - Number(ts)) > 3_600) verdict = 'sign match fail';
      }
      if (verdict === 'ok' && received.length < failFirst) verdict = 'busy';
      received.push({ path: url.pathname, query: url.searchParams, body, verdict });
      const ok = verdict === 'ok';
      const answer = kind === 'feishu'
        ? (ok ? { code: 0, msg: 'success', data: {} } : { code: 19021, msg: verdict })
        : (ok ? { errcode: 0, errmsg: 'ok' } : { errcode: 310000, errmsg: verdict });
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(answer));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    url: kind === 'wecom' ? `${base}/cgi-bin/webhook/send?key=wecom-key-1234567890`
      : kind === 'dingtalk' ? `${base}/robot/send?access_token=ding-token`
        : `${base}/open-apis/bot/v2/hook/0123456789abcdef0123`,
    received,
    close: () => new Promise<void>((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    }),
  };
}

beforeAll(() => {
  vi.stubEnv('TIANQI_WEBHOOK_RETRY_BASE_MS', '50');
});
afterAll(() => {
  vi.unstubAllEnvs();
});

describe('webhooks to 企业微信, 钉钉 and 飞书 group bots', () => {
  let t: TestApp;
  let admin: string;
  const bots: Awaited<ReturnType<typeof startBot>>[] = [];

  beforeAll(async () => {
    t = await startTestApp({ TIANQI_TIME_ZONE: 'Asia/Shanghai' });
    admin = await t.login('admin', ADMIN_PASSWORD);
  });
  afterAll(async () => {
    await t.stop();
    await Promise.all(bots.map((b) => b.close()));
  });

  it('sends each bot its documented message, signed where it signs, in Chinese; a refusal in the body is retried', async () => {
    const wecom = await startBot('wecom');
    const dingtalk = await startBot('dingtalk', 1);
    const feishu = await startBot('feishu');
    bots.push(wecom, dingtalk, feishu);
    const hooks: Record<Bot, string> = { wecom: '', dingtalk: '', feishu: '' };
    for (const [format, bot, secret] of [['wecom', wecom, undefined], ['dingtalk', dingtalk, DING_SECRET], ['feishu', feishu, FEISHU_SECRET]] as const) {
      const r = await t.api<{ id: string; url: string; format: string; hasSecret: boolean }>('POST', '/api/v1/webhooks', {
        token: admin, body: { url: bot.url, events: ['UserRegistered'], format, ...(secret ? { secret } : {}) },
      });
      expect(r.status, JSON.stringify(r.body)).toBe(201);
      expect(r.body.format).toBe(format);
      expect(r.body.hasSecret).toBe(Boolean(secret));
      hooks[format] = r.body.id;
    }
    expect((await t.api('POST', '/api/v1/users', { token: admin, body: { username: 'lisi', password: 'lisi-password' } })).status).toBe(201);

    await waitFor(async () => [wecom, dingtalk, feishu].map((b) => b.received.filter((r) => r.verdict === 'ok').length), (n) => n.every((c) => c === 1), 20_000);
    expect((wecom.received[0]!.body.markdown as { content: string }).content).toMatch(/^\*\*天启算力\*\*\n新用户 lisi 已注册。\n\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$/);
    expect((dingtalk.received.at(-1)!.body.markdown as { text: string }).text).toContain('新用户 lisi 已注册。');
    expect((feishu.received[0]!.body.content as { text: string }).text).toContain('新用户 lisi 已注册。');
    // 钉钉 said no once (in its body, with HTTP 200): that was a failed attempt, and the retry went through
    expect(dingtalk.received.map((r) => r.verdict)).toEqual(['busy', 'ok']);
    const attempts = await waitFor(() => t.api<{ attempt: number; status: number; error: string | null }[]>('GET', `/api/v1/webhooks/${hooks.dingtalk}/deliveries`, { token: admin }).then((r) => r.body),
      (list) => list.length >= 2, 10_000);
    expect(attempts.map((a) => [a.attempt, a.status, a.error])).toEqual([[2, 200, null], [1, 200, 'the bot refused: 310000 busy']]);
  }, 60_000);

  it('keeps a bot\'s address as a secret: sealed, shown masked, never in an answer, a log line or the event log', async () => {
    const list = (await t.api<{ url: string; format: string }[]>('GET', '/api/v1/webhooks', { token: admin })).body;
    const shown = list.filter((w) => w.format !== 'tianqi').map((w) => w.url.replace(/^http:\/\/127\.0\.0\.1:\d+/, ''));
    expect(shown.sort()).toEqual(['/cgi-bin/webhook/send?key=***', '/open-apis/bot/v2/hook/***', '/robot/send?access_token=***']);
    const log = JSON.stringify(await t.app.eventStore.readAll({ limit: 100_000 }));
    for (const secret of ['wecom-key-1234567890', 'ding-token', '0123456789abcdef0123', DING_SECRET, FEISHU_SECRET]) {
      expect(JSON.stringify(list)).not.toContain(secret);
      expect(log).not.toContain(secret);
      expect(t.logs.join('\n')).not.toContain(secret);
    }
  });

  it('refuses a signing secret for 企业微信 (it has none) and a short one for the platform\'s own format', async () => {
    const wecom = await t.api<{ error: { fields: Record<string, string> } }>('POST', '/api/v1/webhooks', { token: admin, body: { url: 'http://127.0.0.1:9/x?key=k', events: ['*'], format: 'wecom', secret: 'x'.repeat(20) } });
    expect(wecom.status).toBe(400);
    expect(wecom.body.error.fields.secret).toContain('企业微信');
    const own = await t.api('POST', '/api/v1/webhooks', { token: admin, body: { url: 'http://127.0.0.1:9/x', events: ['*'] } });
    expect(own.status).toBe(400);
  });
});
