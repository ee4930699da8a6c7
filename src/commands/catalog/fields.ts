import { isIP } from 'node:net';
import { z } from 'zod';

/** Control characters other than line breaks and tabs. */
const CONTROL = /[^\P{Cc}\n\r\t]/u;

/** A display name: trimmed, 1–64 characters, no control characters. */
export const name = z
  .string()
  .trim()
  .min(1, 'is required')
  .max(64, 'must be at most 64 characters')
  .refine((s) => !/[\p{Cc}]/u.test(s), 'must not contain control characters');

/** Free text (descriptions, remarks): line breaks allowed, other control characters not. */
export const text = (max: number) =>
  z.string().max(max, `must be at most ${max} characters`).refine((s) => !CONTROL.test(s), 'must not contain control characters');

/**
 * A Docker image reference (`[registry[:port]/]path[:tag][@digest]`), following the grammar of
 * distribution/reference. The whole name is at most 255 characters.
 */
const domainComponent = '(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])';
const domain = `(?:${domainComponent}(?:\\.${domainComponent})*|\\[[0-9a-fA-F:]+\\])(?::[0-9]+)?`;
const pathComponent = '[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*';
const reference = new RegExp(
  `^(?:${domain}/)?${pathComponent}(?:/${pathComponent})*(?::[\\w][\\w.-]{0,127})?(?:@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,})?$`,
);
export const imageReference = z
  .string()
  .trim()
  .min(1, 'is required')
  .max(255, 'must be at most 255 characters')
  .refine((s) => reference.test(s), 'must be a Docker image reference such as registry.example.com/lab/pytorch:2.4-cuda12')
  .meta({ example: 'nvcr.io/nvidia/pytorch:24.08-py3' });

/** An IPv4 or IPv6 address, or a network in CIDR form (`10.0.5.0/24`, `fd00::/64`). */
export const cidr = z
  .string()
  .trim()
  .refine((s) => {
    const [address, prefix, extra] = s.split('/');
    const family = isIP(address ?? '');
    if (family === 0 || extra !== undefined) return false;
    if (prefix === undefined) return true;
    return /^[0-9]{1,3}$/.test(prefix) && Number(prefix) <= (family === 4 ? 32 : 128);
  }, 'must be an IP address or a network in CIDR form, e.g. 10.0.5.20 or 10.0.5.0/24')
  .meta({ example: '10.0.5.0/24' });

export const ipAddress = z
  .string()
  .trim()
  .refine((s) => isIP(s) !== 0, 'must be an IPv4 or IPv6 address')
  .meta({ example: '192.168.1.20' });

/** `unix:///path`, or `tcp://host:port`. */
export const dockerEndpoint = z
  .string()
  .trim()
  .max(255)
  .refine(
    (s) => /^unix:\/\/\/[^\s\0]+$/.test(s) || /^tcp:\/\/(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):([1-9][0-9]{0,4})$/.test(s),
    'must be unix:///path/to/docker.sock or tcp://host:port',
  )
  .refine((s) => !s.startsWith('tcp://') || Number(s.split(':').at(-1)) <= 65_535, 'the port must be at most 65535')
  .meta({ example: 'tcp://192.168.1.20:2376' });

export const pem = (what: string) => z.string().max(65_536, 'is too long').meta({ description: `${what} (PEM)` });

export const nonNegativeInt = (max: number) =>
  z.number().int('must be a whole number').min(0, 'must be at least 0').max(max, `must be at most ${max}`);

/** `listed` and `q` filters of the catalog lists. */
export const catalogListQuery = z.strictObject({
  q: z.string().max(64).optional().meta({ description: 'part of the name, any case' }),
  listed: z.enum(['true', 'false']).optional().meta({ description: 'admins only; users always see listed entries' }),
});

export function nameFilter(q: string | undefined): Record<string, unknown> {
  return q ? { nameLower: { $regex: q.toLowerCase().replace(/[.*+?^${}()|[\]\\]/g, '\\$&') } } : {};
}

/** A TCP port number a service listens on. */
export const portNumber = z.number().int('must be a whole number').min(1, 'must be 1–65535').max(65_535, 'must be 1–65535');

/** A declared service port: `{port: 8888, name: "JupyterLab", protocol: "http"}`. */
export const servicePort = z.strictObject({
  port: portNumber,
  name: name.meta({ description: 'shown on the instance, e.g. JupyterLab, TensorBoard' }),
  protocol: z.enum(['http', 'tcp']).default('http')
    .meta({ description: 'http: opened in the browser through the signed-in proxy; tcp: reached with ssh -L or a public port' }),
});

/** A list of service ports, each port number once. */
export const servicePorts = (max: number) =>
  z.array(servicePort).max(max, `at most ${max} ports`).refine(
    (ports) => new Set(ports.map((p) => p.port)).size === ports.length,
    'each port may be declared once',
  );
