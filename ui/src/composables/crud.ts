import { ElMessage, ElMessageBox } from 'element-plus';
import { ref, type Ref } from 'vue';
import { api, type Query } from '@/api/client.ts';
import { i18n } from '@/i18n/index.ts';
import { errorText, showError } from './errors.ts';

/** A list page's rows with loading and error states. */
export function useList<T extends { id: string }>(path: string, query: () => Query = () => ({})) {
  const rows = ref<T[]>([]) as Ref<T[]>;
  const loading = ref(false);
  const loaded = ref(false);
  const error = ref('');

  async function load() {
    loading.value = true;
    try {
      rows.value = await api.get<T[]>(path, query());
      error.value = '';
      loaded.value = true;
    } catch (err) {
      error.value = errorText(err);
    } finally {
      loading.value = false;
    }
  }

  function replace(row: T) {
    const i = rows.value.findIndex((r) => r.id === row.id);
    if (i >= 0) rows.value.splice(i, 1, row);
    else rows.value.push(row);
  }

  /**
   * Creates a row from `body` (POST), or updates `editing` with `body`, the fields that changed
   * (PATCH; when none did, nothing is sent). The answer takes the row's place in the list.
   */
  async function save(editing: T | null, body: object): Promise<T> {
    let row: T;
    if (!editing) row = await api.post<T>(path, body);
    else row = Object.keys(body).length > 0 ? await api.patch<T>(`${path}/${editing.id}`, body) : editing;
    replace(row);
    return row;
  }

  async function remove(row: T, question: string, url = `${path}/${row.id}`): Promise<boolean> {
    const t = i18n.global.t;
    try {
      await ElMessageBox.confirm(question, t('common.deleteTitle'), {
        type: 'warning',
        confirmButtonText: t('common.delete'),
        cancelButtonText: t('common.cancel'),
        confirmButtonClass: 'el-button--danger',
      });
    } catch {
      return false;
    }
    try {
      await api.del(url);
      rows.value = rows.value.filter((r) => r.id !== row.id);
      ElMessage.success({ message: t('common.deleted'), grouping: true });
      return true;
    } catch (err) {
      showError(err);
      return false;
    }
  }

  /** Flips `listed` in place (PATCH), reverting on failure. */
  async function toggleListed(row: T & { listed: boolean }, listed: boolean) {
    const before = row.listed;
    row.listed = listed;
    try {
      replace(await api.patch<T>(`${path}/${row.id}`, { listed }));
    } catch (err) {
      row.listed = before;
      showError(err);
    }
  }

  return { rows, loading, loaded, error, load, replace, save, remove, toggleListed };
}

export type List<T extends { id: string }> = ReturnType<typeof useList<T>>;

/** The fields of `next` that differ from `before` (for PATCH bodies). */
export function changes<T extends object>(before: T, next: T, keys: readonly (keyof T)[]): Partial<T> {
  const out: Partial<T> = {};
  for (const key of keys) {
    if (JSON.stringify(before[key]) !== JSON.stringify(next[key])) out[key] = next[key];
  }
  return out;
}

export function pick<T extends object, K extends keyof T>(source: T, keys: readonly K[]): Pick<T, K> {
  const out = {} as Pick<T, K>;
  for (const key of keys) out[key] = source[key];
  return out;
}
