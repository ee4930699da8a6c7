import { createServer } from 'node:net';

/** A port nobody listens on right now (a leftover server on a guessed port would answer instead). */
export async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/**
 * A run of `count` ports nobody listens on now, for an app's TIANQI_SERVICE_PORTS (test files run
 * in parallel, each with apps of its own: a fixed range would collide).
 */
export async function freePortRange(count: number): Promise<string> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const min = 20_000 + Math.floor(Math.random() * (12_000 / count)) * count;
    const free = await Promise.all(Array.from({ length: count }, (_, i) => canListen(min + i)));
    if (free.every(Boolean)) return `${min}-${min + count - 1}`;
  }
  throw new Error(`no ${count} free ports in a row between 20000 and 32000`);
}

function canListen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once('error', () => resolve(false));
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
  });
}
