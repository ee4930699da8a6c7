/**
 * Webhook formats: the platform's signed JSON, or a message to a 企业微信, 钉钉 or 飞书 group bot
 * (src/plugins/webhooks/bot-messages.ts sends them).
 */
export type WebhookFormat = 'tianqi' | 'wecom' | 'dingtalk' | 'feishu' | 'email';
export const WEBHOOK_FORMATS = ['tianqi', 'wecom', 'dingtalk', 'feishu', 'email'] as const;
export type BotFormat = Exclude<WebhookFormat, 'tianqi' | 'email'>;

/** An email "webhook": `mailto:` and one address, sent through the deployment's SMTP relay. */
export const MAILTO = /^mailto:[^\s@<>(),;:"]+@[^\s@<>(),;:"]+\.[^\s@<>(),;:"]+$/;

/**
 * The address as lists show it: a bot's address carries its key (企业微信 `key=`, 钉钉
 * `access_token=`, 飞书 the last path segment), so every query value and every long path segment
 * is masked. The address itself is sealed like a secret.
 */
export function maskBotUrl(url: string): string {
  const parsed = new URL(url);
  const path = parsed.pathname.split('/').map((segment) => (segment.length >= 16 ? '***' : segment)).join('/');
  const query = [...parsed.searchParams.keys()].map((key) => `${encodeURIComponent(key)}=***`).join('&');
  return `${parsed.origin}${path}${query ? `?${query}` : ''}`;
}
