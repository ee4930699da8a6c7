import { defineStore } from 'pinia';
import { computed, ref } from 'vue';
import { api } from '@/api/client.ts';
import type { Instance } from '@/api/types.ts';
import { useLiveStore } from './live.ts';

/** Instances visible to the signed-in user, kept current by `/live` pushes (no polling). */
export const useInstancesStore = defineStore('instances', () => {
  const byId = ref(new Map<string, Instance>());
  const loaded = ref(false);
  const loading = ref(false);
  const error = ref<unknown>(null);
  const live = useLiveStore();

  const list = computed(() => [...byId.value.values()].sort((a, b) => (a.createdAt < b.createdAt ? 1 : a.createdAt > b.createdAt ? -1 : 0)));

  function upsert(instance: Instance) {
    const current = byId.value.get(instance.id);
    // Pushes may cross an answer in flight: keep the newer one.
    if (current && current.updatedAt > instance.updatedAt) return;
    byId.value.set(instance.id, instance);
  }

  function remove(id: string) {
    byId.value.delete(id);
  }

  async function load() {
    loading.value = true;
    error.value = null;
    try {
      const items = await api.get<Instance[]>('/instances');
      const next = new Map<string, Instance>();
      for (const i of items) next.set(i.id, i);
      byId.value = next;
      loaded.value = true;
    } catch (err) {
      error.value = err;
    } finally {
      loading.value = false;
    }
  }

  live.on('instance', (push) => {
    if ('deleted' in push) remove(push.id);
    else upsert(push);
  });
  live.on('reconnected', () => {
    if (loaded.value) void load();
  });

  function reset() {
    byId.value = new Map();
    loaded.value = false;
    error.value = null;
  }

  return { byId, list, loaded, loading, error, load, upsert, remove, reset };
});
