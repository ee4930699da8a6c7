import { createRouter, createWebHistory, type RouteRecordRaw } from 'vue-router';
import { useAuthStore } from '@/stores/auth.ts';

declare module 'vue-router' {
  interface RouteMeta {
    public?: boolean;
    admin?: boolean;
    title?: string;
  }
}

const routes: RouteRecordRaw[] = [
  { path: '/login', name: 'login', component: () => import('@/views/LoginView.vue'), meta: { public: true } },
  {
    path: '/',
    component: () => import('@/layouts/ConsoleLayout.vue'),
    children: [
      { path: '', redirect: '/instances' },
      { path: 'instances', name: 'instances', component: () => import('@/views/InstancesView.vue'), meta: { title: 'nav.instances' } },
      { path: 'instances/:id', name: 'instance', component: () => import('@/views/InstanceDetailView.vue'), meta: { title: 'nav.instances' } },
      { path: 'dashboard', name: 'dashboard', component: () => import('@/views/DashboardView.vue'), meta: { admin: true, title: 'nav.dashboard' } },
      { path: 'images', name: 'images', component: () => import('@/views/ImagesView.vue'), meta: { admin: true, title: 'nav.images' } },
      { path: 'specs', name: 'specs', component: () => import('@/views/SpecsView.vue'), meta: { admin: true, title: 'nav.specs' } },
      { path: 'nodes', name: 'nodes', component: () => import('@/views/NodesView.vue'), meta: { admin: true, title: 'nav.nodes' } },
      { path: 'users', name: 'users', component: () => import('@/views/UsersView.vue'), meta: { admin: true, title: 'nav.users' } },
      // Admins' are the platform's; a user's follow their own instances (消息通知).
      { path: 'webhooks', name: 'webhooks', component: () => import('@/views/WebhooksView.vue'), meta: { title: 'nav.webhooks' } },
      { path: 'usage', name: 'usage', component: () => import('@/views/UsageView.vue'), meta: { title: 'nav.usage' } },
      { path: 'ssh-keys', name: 'ssh-keys', component: () => import('@/views/SshKeysView.vue'), meta: { title: 'nav.sshKeys' } },
      { path: ':pathMatch(.*)*', name: 'not-found', component: () => import('@/views/NotFoundView.vue') },
    ],
  },
];

export const router = createRouter({ history: createWebHistory(), routes });

router.beforeEach(async (to) => {
  const auth = useAuthStore();
  if (to.meta.public) {
    if (to.name === 'login' && (await auth.restore())) return { path: typeof to.query.next === 'string' ? to.query.next : '/instances' };
    return true;
  }
  if (!(await auth.restore())) {
    return { name: 'login', query: to.fullPath !== '/' && to.fullPath !== '/instances' ? { next: to.fullPath } : {} };
  }
  // The API refuses admin calls anyway; this only keeps users off pages they cannot use.
  if (to.meta.admin && !auth.isAdmin) return { name: 'instances' };
  return true;
});
