import type { InstanceView } from '../../projections/instances.projection.ts';

export const MENU_HEADER = '=== 您的容器列表 ===';
export const MENU_PROMPT = "请选择要连接的容器（输入序号，输入 'q' 退出）: ";
export const GOODBYE = '再见！';
export const NO_INSTANCES = '您还没有容器实例。';

/** `alice` or `alice+train-1`: the account, and the instance to enter without the menu. */
export function splitLogin(login: string): { username: string; instanceName: string | null } {
  const plus = login.indexOf('+');
  if (plus < 0) return { username: login, instanceName: null };
  return { username: login.slice(0, plus), instanceName: login.slice(plus + 1) };
}

/** Oldest first, so the numbers of existing instances stay put when a new one is created. */
export function menuOrder(instances: readonly InstanceView[]): InstanceView[] {
  return [...instances].sort((a, b) => a.createdAt.localeCompare(b.createdAt) || a.name.localeCompare(b.name));
}

/** `<n>  <instance name>-<container id, 12>-<node name>`, with the state when it is not running. */
export function menuLine(n: number, instance: InstanceView): string {
  const container = instance.containerId ? instance.containerId.slice(0, 12) : '(无容器)';
  const state = instance.status === 'running' ? '' : ` [${instance.status}]`;
  return `${n}  ${instance.name}-${container}-${instance.nodeName}${state}`;
}

/**
 * The file transfer program a command runs on the server side: classic scp (`scp -t`/`scp -f`,
 * what `scp -O` sends) or rsync (`rsync --server`); null for any other command.
 */
export function transferTool(command: string): 'scp' | 'rsync' | null {
  if (/^\s*(\S*\/)?scp(\s|$)/.test(command)) return 'scp';
  if (/^\s*(\S*\/)?rsync\s+--server(\s|$)/.test(command)) return 'rsync';
  return null;
}
