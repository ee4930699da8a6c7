import type { GpuMemoryReading } from '../../ports/container-runtime.port.ts';

/**
 * What runs inside the container; `nounits` makes the memory columns plain MiB integers and the
 * utilisation a plain percentage (the card's, over nvidia-smi's last sample period: what the idle
 * auto-stop compares with its threshold).
 */
export const NVIDIA_SMI_QUERY = ['nvidia-smi', '--query-gpu=index,memory.used,memory.total,utilization.gpu', '--format=csv,noheader,nounits'] as const;

const MIB = 1024 * 1024;

/** What a card may say for a figure it does not measure (MIG slices, some vGPU drivers). */
const NOT_MEASURED = /^\[(N\/A|Not Supported)\]$/;

/**
 * Parses the output of NVIDIA_SMI_QUERY: one `index, used MiB, total MiB, utilisation %` line per
 * card (the utilisation column may be missing, as from an older query, or `[N/A]`: then null).
 * Anything else (no cards, memory columns the card does not report, an error text, a truncated
 * line) gives null rather than a partial or zero reading, which a caller would take for an idle
 * card.
 */
export function parseGpuMemory(output: string): GpuMemoryReading[] | null {
  const lines = output.split('\n').map((line) => line.trim()).filter((line) => line !== '');
  if (lines.length === 0) return null;
  const readings: GpuMemoryReading[] = [];
  for (const line of lines) {
    const fields = line.split(',').map((field) => field.trim());
    if (fields.length !== 3 && fields.length !== 4) return null;
    const [indexText, usedText, totalText, utilText] = fields as [string, string, string, string | undefined];
    if (![indexText, usedText, totalText].every((field) => /^\d+$/.test(field))) return null;
    const [index, usedMiB, totalMiB] = [indexText, usedText, totalText].map(Number) as [number, number, number];
    if (totalMiB === 0 || usedMiB > totalMiB) return null;
    let utilizationPercent: number | null = null;
    if (utilText !== undefined && !NOT_MEASURED.test(utilText)) {
      if (!/^\d+$/.test(utilText) || Number(utilText) > 100) return null;
      utilizationPercent = Number(utilText);
    }
    readings.push({ index, usedBytes: usedMiB * MIB, totalBytes: totalMiB * MIB, utilizationPercent });
  }
  return readings;
}
