import type { RecordedEvent } from '../../ports/event-store.port.ts';

/** What a message to people may name besides the event itself. */
export interface Names {
  readonly instance?: { readonly name: string; readonly ownerName: string };
  readonly node?: string;
  readonly username?: string;
}

const TITLE = '天启算力';

/**
 * An event as a group-bot message: a title and one line in Chinese, times in the deployment's
 * time zone (TIANQI_TIME_ZONE). Events without words of their own name their type.
 */
export function messageFor(event: RecordedEvent, names: Names, timeZone: string): { title: string; text: string } {
  const data = event.data as Record<string, unknown>;
  const time = (iso: unknown) => (typeof iso === 'string' ? formatIn(iso, timeZone) : '');
  const instance = names.instance ? `实例 ${names.instance.name}（${names.instance.ownerName}）` : `实例 ${event.stream.slice('instance-'.length, 'instance-'.length + 8)}`;
  const line = (() => {
    switch (event.type) {
      case 'InstanceIdleWarned':
        return `${instance} 空闲中，将于 ${time(data.stopAt)} 自动关机；如需继续使用，请打开终端或服务页面。`;
      case 'InstanceIdleStopFired':
        return `${instance} 已空闲 ${String(data.minutes)} 分钟，已自动关机（数据盘保留）。`;
      case 'InstanceGpuLost':
        return `${instance} 的 GPU ${(data.cards as { index: number }[]).map((c) => c.index).join('、')} 在节点上已检测不到（掉卡或驱动重载），运行中的任务可能已中断，请联系管理员。`;
      case 'InstanceArrearsStopFired':
        return `${instance} 因余额不足（${(Number(data.balance) / 10_000).toFixed(2)}）已停止（欠费停机，数据盘保留）；充值后可再启动。`;
      case 'BalanceLowWarned':
        return `${names.username ?? '用户'} 的余额 ${(Number(data.balance) / 10_000).toFixed(2)} 已低于 ${(Number(data.threshold) / 10_000).toFixed(2)}，用完后运行中的实例将自动停止，请及时充值。`;
      case 'BalanceExhausted':
        return `${names.username ?? '用户'} 的余额已用完（${(Number(data.balance) / 10_000).toFixed(2)}），运行中的实例将停止；充值后可再启动。`;
      case 'InstanceScheduledStopFired':
        return `${instance} 已按定时关机（${time(data.at)}）停止。`;
      case 'InstanceProvisioningFailed':
        return `${instance} 创建失败：${String(data.reason)}`;
      case 'InstanceStateObserved':
        return data.status === 'running' ? `${instance} 正在运行。` : `${instance} 已停止：${String(data.reason)}`;
      case 'InstanceContainerVanished':
        return `${instance} 的容器已不在节点上：${String(data.reason)}`;
      case 'NodeConnectionChecked':
        return data.status === 'connected' ? `节点 ${names.node ?? ''} 已连接。` : `节点 ${names.node ?? ''} 连接失败：${String(data.error)}`;
      case 'UserRegistered':
        return `新用户 ${String(data.username)} 已注册。`;
      default:
        return `${event.type}（${event.stream}）`;
    }
  })();
  return { title: TITLE, text: `${line}\n${time(event.metadata.time)}` };
}

/** 2026-12-06 18:30:00 in the time zone. */
export function formatIn(iso: string, timeZone: string): string {
  const parts = Object.fromEntries(new Intl.DateTimeFormat('en-CA', {
    timeZone, year: 'numeric', month: '2-digit', day: '2-digit', hour: '2-digit', minute: '2-digit', second: '2-digit', hourCycle: 'h23',
  }).formatToParts(new Date(iso)).map((p) => [p.type, p.value]));
  return `${parts.year}-${parts.month}-${parts.day} ${parts.hour}:${parts.minute}:${parts.second}`;
}
