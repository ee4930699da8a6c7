import { describe, expect, it } from 'vitest';
import { parseGpuMemory } from './gpu-memory.ts';

const MIB = 1024 * 1024;

describe('parseGpuMemory', () => {
  it('reads one line per card, MiB to bytes', () => {
    expect(parseGpuMemory('0, 412, 81559\n1, 0, 81559\n')).toEqual([
      { index: 0, usedBytes: 412 * MIB, totalBytes: 81559 * MIB, utilizationPercent: null },
      { index: 1, usedBytes: 0, totalBytes: 81559 * MIB, utilizationPercent: null },
    ]);
  });

  it('takes a single card without a trailing newline, and CRLF or padded columns', () => {
    expect(parseGpuMemory('0, 23028, 24564')).toEqual([{ index: 0, usedBytes: 23028 * MIB, totalBytes: 24564 * MIB, utilizationPercent: null }]);
    expect(parseGpuMemory('  0 ,  5 , 16384 \r\n')).toEqual([{ index: 0, usedBytes: 5 * MIB, totalBytes: 16384 * MIB, utilizationPercent: null }]);
  });

  it('reads the utilisation column, as real cards print it (recorded: 2 × H100 80GB training and idle; an RTX 4090; a MIG slice)', () => {
    expect(parseGpuMemory('0, 61234, 81559, 97\n1, 4, 81559, 0\n')).toEqual([
      { index: 0, usedBytes: 61234 * MIB, totalBytes: 81559 * MIB, utilizationPercent: 97 },
      { index: 1, usedBytes: 4 * MIB, totalBytes: 81559 * MIB, utilizationPercent: 0 },
    ]);
    expect(parseGpuMemory('0, 18211, 24564, 41')).toEqual([{ index: 0, usedBytes: 18211 * MIB, totalBytes: 24564 * MIB, utilizationPercent: 41 }]);
    expect(parseGpuMemory('0, 13, 9728, [N/A]\n')).toEqual([{ index: 0, usedBytes: 13 * MIB, totalBytes: 9728 * MIB, utilizationPercent: null }]);
    expect(parseGpuMemory('0, 13, 9728, [Not Supported]\n')![0]!.utilizationPercent).toBeNull();
    // a utilisation that cannot be right spoils the reading
    expect(parseGpuMemory('0, 13, 9728, 101\n')).toBeNull();
    expect(parseGpuMemory('0, 13, 9728, 5 %\n')).toBeNull();
    expect(parseGpuMemory('0, 13, 9728, 5, 7\n')).toBeNull();
  });

  it('is null for empty output', () => {
    expect(parseGpuMemory('')).toBeNull();
    expect(parseGpuMemory('\n \n')).toBeNull();
  });

  it('is null for columns the card does not report', () => {
    expect(parseGpuMemory('0, [N/A], [N/A]\n')).toBeNull();
    expect(parseGpuMemory('0, [Not Supported], 81559\n')).toBeNull();
  });

  it('is null for error texts and other garbage, rather than a partial reading', () => {
    expect(
      parseGpuMemory(
        'NVIDIA-SMI has failed because it couldn\'t communicate with the NVIDIA driver. Make sure that the latest NVIDIA driver is installed and running.\n',
      ),
    ).toBeNull();
    expect(parseGpuMemory('No devices were found\n')).toBeNull();
    expect(parseGpuMemory('0, 412, 81559\n1, 0\n')).toBeNull();
    expect(parseGpuMemory('0, 412 MiB, 81559 MiB\n')).toBeNull();
    expect(parseGpuMemory('index, memory.used [MiB], memory.total [MiB]\n0, 1, 2\n')).toBeNull();
    expect(parseGpuMemory('0, -1, 81559\n')).toBeNull();
    expect(parseGpuMemory('0, 1.5, 81559\n')).toBeNull();
  });

  it('is null when the numbers cannot be right', () => {
    expect(parseGpuMemory('0, 0, 0\n')).toBeNull();
    expect(parseGpuMemory('0, 90000, 81559\n')).toBeNull();
  });
});
