const BLOCK = 512;

export interface TarEntry {
  /** Relative path inside the archive; directories end with `/`. */
  readonly name: string;
  readonly mode: number;
  readonly content?: Buffer;
}

/**
 * A ustar archive of a few entries, enough for `PUT /containers/{id}/archive`: regular files and
 * directories, owned by root, names up to 100 bytes. Pure.
 */
export function tarOf(entries: readonly TarEntry[]): Buffer {
  const parts: Buffer[] = [];
  for (const entry of entries) {
    const directory = entry.name.endsWith('/');
    const content = directory ? Buffer.alloc(0) : (entry.content ?? Buffer.alloc(0));
    const name = Buffer.from(entry.name, 'utf8');
    if (name.length > 100) throw new Error(`tar entry name longer than 100 bytes: ${entry.name}`);
    const header = Buffer.alloc(BLOCK);
    name.copy(header, 0);
    header.write(octal(entry.mode, 8), 100, 'ascii');
    header.write(octal(0, 8), 108, 'ascii');
    header.write(octal(0, 8), 116, 'ascii');
    header.write(octal(content.length, 12), 124, 'ascii');
    header.write(octal(Math.floor(Date.now() / 1000), 12), 136, 'ascii');
    header.fill(' ', 148, 156);
    header.write(directory ? '5' : '0', 156, 'ascii');
    header.write('ustar\u000000', 257, 'ascii');
    let sum = 0;
    for (const byte of header) sum += byte;
    header.write(`${sum.toString(8).padStart(6, '0')}\u0000 `, 148, 'ascii');
    parts.push(header, content);
    const padding = (BLOCK - (content.length % BLOCK)) % BLOCK;
    if (padding > 0) parts.push(Buffer.alloc(padding));
  }
  parts.push(Buffer.alloc(BLOCK * 2));
  return Buffer.concat(parts);
}

function octal(value: number, width: number): string {
  return `${value.toString(8).padStart(width - 1, '0')}\u0000`;
}
