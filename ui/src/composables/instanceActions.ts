import { ElMessage, ElMessageBox } from 'element-plus';
import { h, reactive } from 'vue';
import { api } from '@/api/client.ts';
import type { Instance } from '@/api/types.ts';
import { i18n } from '@/i18n/index.ts';
import { useInstancesStore } from '@/stores/instances.ts';
import { showError } from './errors.ts';

/** `startNoGpu`: 无卡模式, a stopped GPU instance started without its cards. */
export type Action = 'start' | 'stop' | 'restart' | 'startNoGpu' | 'retry';

/** Start / stop / restart / delete, with the busy state per instance and errors in words. */
export function useInstanceActions() {
  const busy = reactive<Record<string, string | undefined>>({});
  const store = useInstancesStore();
  const t = i18n.global.t;

  async function run(instance: Instance, action: Action) {
    busy[instance.id] = action;
    try {
      const path = action === 'startNoGpu' ? `/instances/${instance.id}/start?gpuMode=none` : `/instances/${instance.id}/${action}`;
      const updated = await api.post<Instance>(path);
      store.upsert(updated);
      const done = { start: 'instances.started', startNoGpu: 'instances.startedNoGpu', stop: 'instances.stopped', restart: 'instances.restarted', retry: 'instances.retried' } as const;
      ElMessage.success({ message: t(done[action]), grouping: true });
    } catch (err) {
      showError(err);
    } finally {
      busy[instance.id] = undefined;
    }
  }

  /** Asks first, naming the volume that goes with the instance; true when it was deleted. */
  async function remove(instance: Instance): Promise<boolean> {
    const volume = instance.containerName ? `${instance.containerName}-data` : '';
    try {
      await ElMessageBox.confirm(
        h('div', { class: 'delete-confirm', 'data-test': 'delete-confirm' }, [
          h('p', { style: 'margin:0 0 8px' }, t('instances.deleteConfirm', { name: instance.name })),
          volume
            ? h('div', [
                h('p', { style: 'margin:0 0 6px;color:#6b7280' }, t('instances.deleteVolumes')),
                h('code', { class: 'mono', style: 'display:block;padding:6px 8px;background:#fef2f2;color:#b91c1c;border-radius:4px;word-break:break-all', 'data-test': 'delete-volume' }, volume),
              ])
            : h('p', { style: 'margin:0;color:#6b7280' }, t('instances.deleteNoVolume')),
        ]),
        t('instances.deleteTitle'),
        { type: 'warning', confirmButtonText: t('common.delete'), cancelButtonText: t('common.cancel'), confirmButtonClass: 'el-button--danger' },
      );
    } catch {
      return false;
    }
    busy[instance.id] = 'delete';
    try {
      await api.del(`/instances/${instance.id}`);
      store.remove(instance.id);
      ElMessage.success({ message: t('instances.deleted'), grouping: true });
      return true;
    } catch (err) {
      showError(err);
      return false;
    } finally {
      busy[instance.id] = undefined;
    }
  }

  return { busy, run, remove };
}
