import { defineStore } from 'pinia';
import { ref } from 'vue';

/**
 * What this server offers, read once from GET /api/openapi.json: pages for APIs that are not
 * there (an older server) are hidden or say so, instead of failing with 404s.
 */
export const useCapabilitiesStore = defineStore('capabilities', () => {
  const paths = ref<Set<string> | null>(null);
  let loading: Promise<void> | null = null;

  function load(): Promise<void> {
    loading ??= fetch('/api/openapi.json')
      .then((r) => (r.ok ? (r.json() as Promise<{ paths?: Record<string, unknown> }>) : { paths: {} }))
      .then((doc) => {
        paths.value = new Set(Object.keys(doc.paths ?? {}));
      })
      .catch(() => {
        paths.value = new Set();
        loading = null;
      });
    return loading;
  }

  /** True when the API has this path (as OpenAPI writes it: /api/v1/webhooks/{id}). */
  function has(path: string): boolean {
    return paths.value?.has(`/api/v1${path}`) ?? false;
  }

  return { paths, load, has };
});
