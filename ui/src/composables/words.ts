import { i18n } from '@/i18n/index.ts';
import { formatTime } from './format.ts';

/** What the server says as a code with its parameters (`words.<code>`), and the engine's own text where there is one. */
export interface Words {
  code: string;
  params: Record<string, string | number>;
  detail?: string;
}

/** Parameters that are times: shown in the reader's time format. */
const TIMES = new Set(['at', 'since', 'stopAt']);

/**
 * The words in the reader's language; `fallback` (the server's English sentence) for a code this
 * console does not know yet. A plain reason (`why`) is itself a code.
 */
export function wordsText(words: Words | undefined, fallback: string): string {
  const { t, te } = i18n.global;
  if (!words || !te(`words.${words.code}`)) return fallback;
  const params: Record<string, string | number> = {};
  for (const [key, value] of Object.entries(words.params)) {
    if (TIMES.has(key) && typeof value === 'string') params[key] = formatTime(value);
    else if (key === 'why' && typeof value === 'string' && te(`words.${value}`)) params[key] = t(`words.${value}`);
    else if (key === 'source' && typeof value === 'string' && te(`words.source_${value}`)) params[key] = t(`words.source_${value}`);
    else params[key] = value;
  }
  const text = t(`words.${words.code}`, params);
  // Admins also learn which loop saw it.
  return params.source !== undefined && words.code !== 'H_RUNNING_SEEN' ? text + t('words.seenBy', { source: params.source }) : text;
}

/** A readiness check's detail in the reader's words (its items joined), the server's English where a code is new. */
export function checkText(check: { detail: string; words?: Words[] }): string {
  const { t, te } = i18n.global;
  if (!check.words || check.words.length === 0 || !check.words.every((w) => te(`words.${w.code}`))) return check.detail;
  return check.words.map((w) => wordsText(w, '')).join(t('common.listJoin'));
}
