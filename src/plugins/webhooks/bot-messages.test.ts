import { createHmac } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { maskBotUrl } from '../../domain/webhook/bots.ts';
import { botAccepted, botRequest } from './bot-messages.ts';
import { formatIn, messageFor } from './people.ts';

const NOW = 1_765_000_000_123;

describe('group-bot webhooks', () => {
  it('企业微信: a markdown message, unsigned', () => {
    const r = botRequest('wecom', 'https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=abc', '天启算力', '实例 train 已停止', '', NOW);
    expect(r.url).toBe('https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=abc');
    expect(JSON.parse(r.body)).toEqual({ msgtype: 'markdown', markdown: { content: '**天启算力**\n实例 train 已停止' } });
  });

  it('钉钉: markdown with a title; 加签 as timestamp and sign in the query', () => {
    const r = botRequest('dingtalk', 'https://oapi.dingtalk.com/robot/send?access_token=tok', '天启算力', '实例 train 已停止', 'SECabc', NOW);
    const url = new URL(r.url);
    expect(url.searchParams.get('access_token')).toBe('tok');
    expect(url.searchParams.get('timestamp')).toBe(String(NOW));
    // by hand: HMAC-SHA256 keyed with the secret over "timestamp\nsecret", Base64
    expect(url.searchParams.get('sign')).toBe(createHmac('sha256', 'SECabc').update(`${NOW}\nSECabc`).digest('base64'));
    expect(JSON.parse(r.body)).toEqual({ msgtype: 'markdown', markdown: { title: '天启算力', text: '#### 天启算力\n实例 train 已停止' } });
    expect(botRequest('dingtalk', 'https://oapi.dingtalk.com/robot/send?access_token=tok', 't', 'x', '', NOW).url).toBe('https://oapi.dingtalk.com/robot/send?access_token=tok');
  });

  it('飞书: text; 签名校验 as timestamp (seconds) and sign in the body', () => {
    const r = botRequest('feishu', 'https://open.feishu.cn/open-apis/bot/v2/hook/0123456789abcdef', '天启算力', '实例 train 已停止', 'fsecret', NOW);
    const body = JSON.parse(r.body) as Record<string, unknown>;
    expect(body.timestamp).toBe(String(Math.floor(NOW / 1000)));
    // by hand: HMAC-SHA256 keyed with "timestamp\nsecret" over nothing, Base64
    expect(body.sign).toBe(createHmac('sha256', `${Math.floor(NOW / 1000)}\nfsecret`).update('').digest('base64'));
    expect(body.msg_type).toBe('text');
    expect(body.content).toEqual({ text: '天启算力\n实例 train 已停止' });
    expect(Object.keys(JSON.parse(botRequest('feishu', r.url, 't', 'x', '', NOW).body) as object)).toEqual(['msg_type', 'content']);
  });

  it('takes a message as delivered only when the bot says so in its body', () => {
    expect(botAccepted('wecom', 200, '{"errcode":0,"errmsg":"ok"}')).toEqual({ ok: true });
    expect(botAccepted('dingtalk', 200, '{"errcode":310000,"errmsg":"sign not match"}')).toEqual({ ok: false, error: 'the bot refused: 310000 sign not match' });
    expect(botAccepted('feishu', 200, '{"code":0,"msg":"success","data":{}}')).toEqual({ ok: true });
    expect(botAccepted('feishu', 200, '{"StatusCode":0,"StatusMessage":"success"}')).toEqual({ ok: true });
    expect(botAccepted('feishu', 200, '{"code":19021,"msg":"sign match fail or timestamp is not within one hour from current time"}').ok).toBe(false);
    expect(botAccepted('wecom', 200, 'ok').ok).toBe(false);
    expect(botAccepted('wecom', 502, '').ok).toBe(false);
  });

  it('masks the key in a bot\'s address', () => {
    expect(maskBotUrl('https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=693axxx6-7aoc-4bc4-97a0-0ec2sifa5aaa')).toBe('https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=***');
    expect(maskBotUrl('https://oapi.dingtalk.com/robot/send?access_token=abcdef')).toBe('https://oapi.dingtalk.com/robot/send?access_token=***');
    expect(maskBotUrl('https://open.feishu.cn/open-apis/bot/v2/hook/1a2b3c4d-5e6f-7a8b-9c0d-1e2f3a4b5c6d')).toBe('https://open.feishu.cn/open-apis/bot/v2/hook/***');
  });

  it('keeps a long message within the bot\'s limit', () => {
    const r = botRequest('wecom', 'http://127.0.0.1/x', 't', '长'.repeat(3_000), '', NOW);
    const content = (JSON.parse(r.body) as { markdown: { content: string } }).markdown.content;
    expect(Buffer.byteLength(content)).toBeLessThanOrEqual(4_096);
    expect(content.endsWith('…')).toBe(true);
  });

  it('words events for people, in the deployment\'s time zone', () => {
    const event = { id: 'e', type: 'InstanceIdleWarned', stream: 'instance-i1', revision: 3, position: 9, data: { stopAt: '2026-12-06T10:30:00.000Z' }, metadata: { time: '2026-12-06T10:20:00.000Z' } };
    expect(messageFor(event as never, { instance: { name: 'train', ownerName: 'zhangsan' } }, 'Asia/Shanghai')).toEqual({
      title: '天启算力', text: '实例 train（zhangsan） 空闲中，将于 2026-12-06 18:30:00 自动关机；如需继续使用，请打开终端或服务页面。\n2026-12-06 18:20:00',
    });
    expect(formatIn('2026-12-31T23:59:59.000Z', 'UTC')).toBe('2026-12-31 23:59:59');
  });

  it('words the prepaid balance\'s warnings and the arrears stop, amounts in currency', () => {
    const at = { id: 'e', revision: 1, position: 2, metadata: { time: '2026-12-20T07:20:00.000Z' } };
    const low = { ...at, type: 'BalanceLowWarned', stream: 'balance-u1', data: { balance: 98_328, threshold: 100_000 } };
    expect(messageFor(low as never, { username: 'zhangsan' }, 'Asia/Shanghai').text)
      .toBe('zhangsan 的余额 9.83 已低于 10.00，用完后运行中的实例将自动停止，请及时充值。\n2026-12-20 15:20:00');
    const out = { ...at, type: 'BalanceExhausted', stream: 'balance-u1', data: { balance: -1_672 } };
    expect(messageFor(out as never, { username: 'zhangsan' }, 'Asia/Shanghai').text).toMatch(/^zhangsan 的余额已用完（-0\.17），运行中的实例将停止；充值后可再启动。/);
    const stop = { ...at, type: 'InstanceArrearsStopFired', stream: 'instance-i1', data: { balance: -1_672 } };
    expect(messageFor(stop as never, { instance: { name: 'train', ownerName: 'zhangsan' } }, 'Asia/Shanghai').text).toMatch(/^实例 train（zhangsan） 因余额不足（-0\.17）已停止（欠费停机，数据盘保留）/);
  });
});
