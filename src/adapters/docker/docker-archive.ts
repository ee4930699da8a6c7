import type { IncomingMessage } from 'node:http';
import type Docker from 'dockerode';
import type { PathStat } from '../../ports/container-runtime.port.ts';

/** `HEAD /containers/{id}/archive`: the path's stat as the engine reports it, null when absent. */
export async function statPath(docker: Docker, containerId: string, path: string): Promise<PathStat | null> {
  try {
    const response = (await docker.getContainer(containerId).infoArchive({ path })) as unknown as IncomingMessage;
    response.resume();
    const header = response.headers['x-docker-container-path-stat'];
    if (typeof header !== 'string') return null;
    const stat = JSON.parse(Buffer.from(header, 'base64').toString('utf8')) as { size: number; mode: number };
    return { size: stat.size, mode: stat.mode };
  } catch (error) {
    if ((error as { statusCode?: number }).statusCode === 404) return null;
    throw error;
  }
}

/** `PUT /containers/{id}/archive`: unpacks the archive into `dir` (which must exist). */
export async function putArchive(docker: Docker, containerId: string, dir: string, tar: Buffer): Promise<void> {
  const response = await docker.getContainer(containerId).putArchive(tar, { path: dir });
  // The body is empty; reading it lets the connection go back to the pool.
  (response as unknown as NodeJS.ReadableStream | undefined)?.resume?.();
}
