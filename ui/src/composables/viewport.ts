import { onUnmounted, ref, type Ref } from 'vue';

/** Below this width the console is laid out for phones: a drawer menu, lists as cards, full-width dialogs. */
export const NARROW_QUERY = '(max-width: 768px)';

/** Whether the window is phone-narrow now, following resizes and rotations. */
export function useNarrow(): Ref<boolean> {
  const query = window.matchMedia(NARROW_QUERY);
  const narrow = ref(query.matches);
  const update = (event: MediaQueryListEvent) => {
    narrow.value = event.matches;
  };
  query.addEventListener('change', update);
  onUnmounted(() => query.removeEventListener('change', update));
  return narrow;
}
