import { ConflictError, NotFoundError } from '../shared/errors.ts';

/**
 * 自定义服务: a port a service listens on in an instance (JupyterLab on 8888, TensorBoard on
 * 6006). `http` services are opened in the browser through the platform's signed-in proxy; `tcp`
 * ones (a database, a gRPC model server) are reached with `ssh -L` or a public port.
 */
export interface ServicePort {
  readonly port: number;
  readonly name: string;
  readonly protocol: 'http' | 'tcp';
}

/** Where a port of an instance was declared: by its image (fixed), or on the instance itself. */
export interface InstanceServicePort extends ServicePort {
  readonly source: 'image' | 'instance';
}

/**
 * 公网端口: a service port mapped to a port of the node's own (`publicIp:hostPort`), open to
 * anyone who can reach the node, without the platform's sign-in. Only where the instance's spec
 * allows it; fixed for the container's life (Docker maps ports when it creates a container).
 */
export interface PublishedPort {
  /** The service port in the container. */
  readonly port: number;
  /** The node's port, from its ledger (NodeSettings.publicPortMin–Max). */
  readonly hostPort: number;
}

/** Ports an image may declare, and an instance may add of its own. */
export const MAX_IMAGE_SERVICE_PORTS = 16;
export const MAX_OWN_SERVICE_PORTS = 8;
/** Ports a spec may let an instance publish. */
export const MAX_PUBLIC_PORTS = 8;

/**
 * What is wrong with publishing `wanted` (container ports) for an instance with these service
 * ports, under a spec that allows `allowed` of them; null when nothing is.
 */
export function publicPortsProblem(servicePorts: readonly ServicePort[], wanted: readonly number[], allowed: number): string | null {
  if (wanted.length === 0) return null;
  if (allowed === 0) return 'this spec publishes no ports; ask an admin for a spec with public ports';
  if (wanted.length > allowed) return `this spec publishes at most ${allowed} port${allowed === 1 ? '' : 's'}`;
  if (new Set(wanted).size !== wanted.length) return 'names a port twice';
  const undeclared = wanted.find((port) => !servicePorts.some((p) => p.port === port));
  if (undeclared !== undefined) return `port ${undeclared} is not one of the instance's service ports (the image's or servicePorts)`;
  return null;
}

/** The image's ports, then the instance's own, one entry per port number. */
export function servicePortsOf(imagePorts: readonly ServicePort[], ownPorts: readonly ServicePort[]): InstanceServicePort[] {
  const ports = new Map<number, InstanceServicePort>();
  for (const p of imagePorts) ports.set(p.port, { ...p, source: 'image' });
  for (const p of ownPorts) if (!ports.has(p.port)) ports.set(p.port, { ...p, source: 'instance' });
  return [...ports.values()];
}

/** Adding a port: not one already declared, and within the instance's allowance. */
export function assertCanAdd(current: readonly InstanceServicePort[], port: ServicePort): void {
  if (current.some((p) => p.port === port.port)) {
    throw new ConflictError('PORT_DECLARED', `Port ${port.port} is already declared on this instance.`, { port: 'is already declared' });
  }
  if (current.filter((p) => p.source === 'instance').length >= MAX_OWN_SERVICE_PORTS) {
    throw new ConflictError('TOO_MANY_PORTS', `An instance may add at most ${MAX_OWN_SERVICE_PORTS} service ports of its own.`);
  }
}

/** Removing a port: only one the instance added and did not publish; the image's ports go with the image. */
export function assertCanRemove(current: readonly InstanceServicePort[], port: number, published: readonly PublishedPort[] = []): void {
  const declared = current.find((p) => p.port === port);
  if (!declared) throw new NotFoundError('Service port', 'SERVICE_NOT_FOUND');
  if (declared.source === 'image') {
    throw new ConflictError('IMAGE_PORT', `Port ${port} is declared by the image; it stays as long as the instance does.`);
  }
  const mapped = published.find((p) => p.port === port);
  if (mapped) {
    throw new ConflictError('PORT_PUBLISHED', `Port ${port} is published on the node (host port ${mapped.hostPort}); it stays as long as the instance does.`);
  }
}
