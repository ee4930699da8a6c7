import { createHmac } from 'node:crypto';
import type { BotFormat } from '../../domain/webhook/bots.ts';

// Group-bot messages, as 企业微信, 钉钉 and 飞书 document their custom bots: the body each takes,
// how each signs (加签 / 签名校验), and how each says a message was taken (they answer HTTP 200
// either way, with a code in the body).

/** What one POST to a bot is: the address (DingTalk signs in its query) and the JSON body. */
export interface BotRequest {
  readonly url: string;
  readonly body: string;
}

/**
 * The request for a message. `secret` is the bot's signing secret ('' when the bot has none);
 * `nowMs` the time the signature is made at (DingTalk: milliseconds, Feishu: seconds).
 */
export function botRequest(format: BotFormat, url: string, title: string, text: string, secret: string, nowMs: number): BotRequest {
  switch (format) {
    case 'wecom':
      // 企业微信群机器人: markdown, at most 4096 bytes of content.
      return { url, body: JSON.stringify({ msgtype: 'markdown', markdown: { content: clip(`**${title}**\n${text}`, 4_096) } }) };
    case 'dingtalk': {
      // 钉钉自定义机器人: markdown; 加签 is timestamp (ms) and sign in the query,
      // sign = Base64(HmacSHA256(key = secret, "timestamp\nsecret")), URL-encoded.
      const body = JSON.stringify({ msgtype: 'markdown', markdown: { title, text: clip(`#### ${title}\n${text}`, 20_000) } });
      if (!secret) return { url, body };
      const sign = createHmac('sha256', secret).update(`${nowMs}\n${secret}`).digest('base64');
      const signed = new URL(url);
      signed.searchParams.set('timestamp', String(nowMs));
      signed.searchParams.set('sign', sign);
      return { url: signed.toString(), body };
    }
    case 'feishu': {
      // 飞书自定义机器人: text; 签名校验 is timestamp (s) and sign in the body,
      // sign = Base64(HmacSHA256(key = "timestamp\nsecret", message = "")).
      const content = { msg_type: 'text', content: { text: clip(`${title}\n${text}`, 20_000) } };
      if (!secret) return { url, body: JSON.stringify(content) };
      const timestamp = String(Math.floor(nowMs / 1000));
      const sign = createHmac('sha256', `${timestamp}\n${secret}`).update('').digest('base64');
      return { url, body: JSON.stringify({ timestamp, sign, ...content }) };
    }
  }
}

/**
 * Whether the bot took the message: 200 with `errcode: 0` (企业微信, 钉钉) or `code: 0` (飞书;
 * older answers `StatusCode: 0`). Otherwise the reason, as the bot says it.
 */
export function botAccepted(format: BotFormat, status: number, answer: string): { ok: true } | { ok: false; error: string } {
  if (status < 200 || status >= 300) return { ok: false, error: `answered ${status}` };
  let parsed: Record<string, unknown>;
  try {
    parsed = JSON.parse(answer) as Record<string, unknown>;
  } catch {
    return { ok: false, error: `answered ${status} without the bot's JSON` };
  }
  const code = format === 'feishu' ? (parsed.code ?? parsed.StatusCode) : parsed.errcode;
  if (code === 0) return { ok: true };
  const message = format === 'feishu' ? (parsed.msg ?? parsed.StatusMessage) : parsed.errmsg;
  return { ok: false, error: `the bot refused: ${String(code)} ${typeof message === 'string' ? message : ''}`.trim() };
}

function clip(text: string, maxBytes: number): string {
  if (Buffer.byteLength(text) <= maxBytes) return text;
  let out = text;
  while (Buffer.byteLength(`${out}…`) > maxBytes) out = out.slice(0, -1);
  return `${out}…`;
}
