import { ElMessage } from 'element-plus';
import { reactive } from 'vue';
import { ApiError } from '@/api/client.ts';
import { i18n } from '@/i18n/index.ts';

/** Codes whose server message carries details worth showing next to the translated words. */
const DETAILED = new Set(['NO_CAPACITY', 'NODE_UNREACHABLE', 'ENGINE_REJECTED', 'IN_USE', 'CONCURRENT_CHANGE', 'NOT_FOUND', 'HTTP_502', 'HTTP_503']);

/** An error in words, in the user's language. */
export function errorText(err: unknown): string {
  const { t, te } = i18n.global;
  if (err instanceof ApiError) {
    const key = `errors.${err.code}`;
    if (te(key)) {
      const words = t(key);
      const english = i18n.global.locale.value === 'en';
      if (DETAILED.has(err.code) && err.message && !english) return `${words}（${err.message}）`;
      if (DETAILED.has(err.code) && err.message && english) return `${words}: ${err.message}`;
      return words;
    }
    return err.message || t('errors.unknown');
  }
  if (err instanceof Error && err.message) return err.message;
  return t('errors.unknown');
}

export function showError(err: unknown): void {
  ElMessage.error({ message: errorText(err), grouping: true, duration: 5000 });
}

/** The API's own field messages (src/domain, src/commands) in Chinese. */
const ZH_FIELDS: Record<string, string> = {
  'is required': '必填',
  'is required when gpuCount is above 0': '显卡数量大于 0 时必填',
  'is required when dockerTls is on': '启用 TLS 时必填',
  'is taken': '已被占用',
  'is taken by another node': '已被其他节点使用',
  'is wrong': '不正确',
  'must be above 0 when gpuCount is above 0': '显卡数量大于 0 时必须大于 0',
  'must have at most 4 decimals': '最多 4 位小数',
  'does not match the client certificate': '与客户端证书不匹配',
  'needs gpuCount above 0: a vGPU spec slices GPU memory': '显存切分规格的显卡数量必须大于 0',
  'must be a whole number': '必须是整数',
  'must be a non-negative number': '不能为负数',
  'must be an IPv4 or IPv6 address': '必须是 IPv4 或 IPv6 地址',
  'must be 1–65535': '必须在 1–65535 之间',
  'is not listed': '已下架',
  'no such image': '镜像不存在',
  'no such spec': '规格不存在',
  'no such node': '节点不存在',
  'needs vGPU support, which this image does not have': '该镜像不支持显存切分，不能使用此规格',
  'must be one OpenSSH public key line: "<type> <base64> [comment]"': '必须是一行 OpenSSH 格式的公钥："<类型> <base64> [备注]"',
  'the key data is not base64': '公钥数据不是 base64 编码',
  'the key data is truncated': '公钥数据不完整',
  'the key data does not match its type': '公钥数据与其类型不符',
  'an ed25519 key has 32 bytes': 'ed25519 公钥应为 32 字节',
  'RSA keys need at least 2048 bits': 'RSA 公钥至少需要 2048 位',
  'not a valid RSA key': '不是有效的 RSA 公钥',
};

/** The API's English field messages, put in the user's words where they are known. */
export function fieldText(message: string): string {
  const { t } = i18n.global;
  if (i18n.global.locale.value === 'en') return message;
  const known = ZH_FIELDS[message];
  if (known) return known;
  let m: RegExpExecArray | null;
  if (/^is required$|received undefined|^Required$/i.test(message)) return t('fields.required');
  if ((m = /Too small: expected string to have >=?(\d+) characters?/i.exec(message))) return t('fields.minChars', { n: m[1] });
  if ((m = /Too big: expected string to have <=?(\d+) characters?/i.exec(message))) return t('fields.maxChars', { n: m[1] });
  if ((m = /Too small: expected number to be >=?(\d+)/i.exec(message)) || (m = /^must be at least (\d+)/i.exec(message))) return t('fields.min', { n: m[1] });
  if ((m = /Too big: expected number to be <=?(\d+)/i.exec(message)) || (m = /^must be at most (\d+)$/i.exec(message))) return t('fields.max', { n: m[1] });
  if ((m = /^unsupported key type (.*)$/.exec(message))) return `不支持的密钥类型：${m[1]}`;
  if (/is not a known field/.test(message)) return t('fields.unknownField');
  if (/expected int/i.test(message)) return t('fields.integer');
  if (/Invalid string: must match pattern/i.test(message)) return t('fields.pattern');
  return message;
}

/**
 * Inline field errors for a form: `fields.name` is what the API said about `name` (400 answers
 * carry `error.fields`). Pass to `<el-form-item :error="errors.fields.name">`.
 */
export function useFieldErrors() {
  const state = reactive({ fields: {} as Record<string, string> });
  return {
    errors: state,
    clear(name?: string) {
      if (name) delete state.fields[name];
      else state.fields = {};
    },
    /** Takes an error from a save: field errors stay inline, anything else becomes a message. */
    take(err: unknown): void {
      if (err instanceof ApiError && Object.keys(err.fields).length > 0) {
        const fields: Record<string, string> = {};
        for (const [key, value] of Object.entries(err.fields)) fields[key] = fieldText(value);
        state.fields = fields;
        const known = Object.keys(fields).filter((k) => !k.startsWith('('));
        ElMessage.error({ message: known.length > 0 ? i18n.global.t('common.fixErrors') : errorText(err), grouping: true });
        return;
      }
      showError(err);
    },
  };
}

export async function copyText(text: string): Promise<boolean> {
  try {
    if (navigator.clipboard && window.isSecureContext) {
      await navigator.clipboard.writeText(text);
      return true;
    }
  } catch {
    // fall back below
  }
  // Plain http on a LAN address has no Clipboard API: the old way still works there.
  const area = document.createElement('textarea');
  area.value = text;
  area.setAttribute('readonly', '');
  area.style.position = 'fixed';
  area.style.opacity = '0';
  document.body.appendChild(area);
  area.select();
  let ok = false;
  try {
    ok = document.execCommand('copy');
  } catch {
    ok = false;
  }
  document.body.removeChild(area);
  return ok;
}
