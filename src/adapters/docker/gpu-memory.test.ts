import { describe, expect, it } from 'vitest';
import { parseGpuMemory } from './gpu-memory.ts';

const MIB = 1024 * 1024;

describe('parseGpuMemory', () => {
  it('reads one line per card, MiB to bytes', () => {
    expect(parseGpuMemory('0, 412, 81559\n1, 0, 81559\n')).toEqual([
      { index: 0, usedBytes: 412 * MIB, totalBytes: 81559 * MIB },
      { index: 1, usedBytes: 0, totalBytes: 81559 * MIB },
    ]);
  });

  it('takes a single card without a trailing newline, and CRLF or padded columns', () => {
    expect(parseGpuMemory('0, 23028, 24564')).toEqual([{ index: 0, usedBytes: 23028 * MIB, totalBytes: 24564 * MIB }]);
    expect(parseGpuMemory('  0 ,  5 , 16384 \r\n')).toEqual([{ index: 0, usedBytes: 5 * MIB, totalBytes: 16384 * MIB }]);
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
