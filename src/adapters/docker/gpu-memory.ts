import type { GpuMemoryReading } from '../../ports/container-runtime.port.ts';

/** What runs inside the container; `nounits` makes the memory columns plain MiB integers. */
export const NVIDIA_SMI_QUERY = ['nvidia-smi', '--query-gpu=index,memory.used,memory.total', '--format=csv,noheader,nounits'] as const;

const MIB = 1024 * 1024;

/**
 * Parses the output of NVIDIA_SMI_QUERY: one `index, used MiB, total MiB` line per card. Anything
 * else (no cards, `[N/A]` or `[Not Supported]` columns, an error text, a truncated line) gives
 * null rather than a partial or zero reading, which a caller would take for an idle card.
 */
export function parseGpuMemory(output: string): GpuMemoryReading[] | null {
  const lines = output.split('\n').map((line) => line.trim()).filter((line) => line !== '');
  if (lines.length === 0) return null;
  const readings: GpuMemoryReading[] = [];
  for (const line of lines) {
    const fields = line.split(',').map((field) => field.trim());
    if (fields.length !== 3 || !fields.every((field) => /^\d+$/.test(field))) return null;
    const [index, usedMiB, totalMiB] = fields.map(Number) as [number, number, number];
    if (totalMiB === 0 || usedMiB > totalMiB) return null;
    readings.push({ index, usedBytes: usedMiB * MIB, totalBytes: totalMiB * MIB });
  }
  return readings;
}
