import { i18n } from '@/i18n/index.ts';

export function formatBytes(bytes: number | null | undefined): string {
  if (bytes === null || bytes === undefined || !Number.isFinite(bytes)) return '—';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${value >= 100 || unit === 0 ? Math.round(value) : value.toFixed(1)} ${units[unit]}`;
}

function pad(n: number): string {
  return String(n).padStart(2, '0');
}

/** 2026-01-31 14:05:09 in the browser's time zone. */
export function formatTime(iso: string | null | undefined): string {
  if (!iso) return '—';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

export function formatClock(iso: string | null | undefined): string {
  if (!iso) return '';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

export function formatPrice(price: number): string {
  return price.toFixed(price * 100 === Math.round(price * 100) ? 2 : 4);
}

export function formatNumber(n: number | null | undefined, digits = 1): string {
  if (n === null || n === undefined || !Number.isFinite(n)) return '—';
  return Number.isInteger(n) ? String(n) : n.toFixed(digits);
}

/** A spec in one line: "A100 × 2 · 8 核 · 32 GB". */
export function specSummary(spec: { gpuModel: string; gpuCount: number; gpuMemoryGb: number; cpuCores: number; memoryGb: number; vgpu?: boolean; vgpuSupported?: boolean }): string {
  const t = i18n.global.t;
  const parts: string[] = [];
  if (spec.gpuCount > 0) {
    const vgpu = spec.vgpu ?? spec.vgpuSupported ?? false;
    parts.push(`${spec.gpuModel || 'GPU'} × ${spec.gpuCount}${spec.gpuMemoryGb ? ` (${spec.gpuMemoryGb} GB${vgpu ? ' vGPU' : ''})` : ''}`);
  } else {
    parts.push(t('instances.cpuOnly'));
  }
  parts.push(t('instances.cores', { n: spec.cpuCores }));
  parts.push(t('instances.gb', { n: spec.memoryGb }));
  return parts.join(' · ');
}
