import { defineStore } from 'pinia';
import { computed, ref } from 'vue';
import { api, ApiError, request, setToken } from '@/api/client.ts';
import type { LoginAnswer, User } from '@/api/types.ts';

const KEY = 'tianqi.token';

export const useAuthStore = defineStore('auth', () => {
  const token = ref<string | null>(localStorage.getItem(KEY));
  const user = ref<User | null>(null);
  setToken(token.value);

  const isAdmin = computed(() => user.value?.role === 'admin');
  const signedIn = computed(() => token.value !== null && user.value !== null);
  const displayName = computed(() => user.value?.displayName || user.value?.username || '');

  function remember(value: string | null) {
    token.value = value;
    setToken(value);
    if (value) localStorage.setItem(KEY, value);
    else localStorage.removeItem(KEY);
  }

  async function login(username: string, password: string): Promise<User> {
    const answer = await request<LoginAnswer>('POST', '/auth/login', { body: { username, password }, auth: false });
    remember(answer.token);
    user.value = answer.user;
    return answer.user;
  }

  /**
   * Restores the session from a saved token; false when there is none or it no longer works. Only
   * the server's 401 forgets the token: a network that blinked (Wi-Fi, VPN, a changed route) is
   * tried again, and never signs anyone out.
   */
  async function restore(): Promise<boolean> {
    if (!token.value) return false;
    if (user.value) return true;
    for (let attempt = 1; ; attempt++) {
      try {
        user.value = await api.get<User>('/auth/me');
        return true;
      } catch (err) {
        if (err instanceof ApiError && err.status === 401) {
          remember(null);
          return false;
        }
        if (attempt >= 3) return false;
        await new Promise((resolve) => setTimeout(resolve, 300 * attempt));
      }
    }
  }

  /**
   * Ends the sign-in on the server first (退出登录; `everywhere`: 退出所有设备), so the token stops
   * working wherever a copy of it is; forgets it here whatever the server said (offline, already ended).
   */
  async function logout(everywhere = false) {
    const current = token.value;
    remember(null);
    user.value = null;
    if (!current) return;
    await fetch(`/api/v1/auth/${everywhere ? 'logout-everywhere' : 'logout'}`, { method: 'POST', headers: { authorization: `Bearer ${current}` } }).catch(() => undefined);
  }

  /** Forgets a sign-in the server no longer takes (it answered 401), without asking it. */
  function forget() {
    remember(null);
    user.value = null;
  }

  return { token, user, isAdmin, signedIn, displayName, login, restore, logout, forget };
});
