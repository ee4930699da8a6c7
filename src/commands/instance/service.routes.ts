import { z } from 'zod';
import { MAX_OWN_SERVICE_PORTS } from '../../domain/instance/service-ports.ts';
import { reply, route, type Actor, type RouteSpec } from '../../http/route.ts';
import { servicePort } from '../catalog/fields.ts';
import { ValidationError } from '../../domain/shared/errors.ts';
import type { Instances } from './instances.ts';
import type { LinkOrigin, ServiceAccess } from './service-access.ts';

export const ServicePortSchema = z.object({
  port: z.number(),
  name: z.string(),
  protocol: z.enum(['http', 'tcp']),
  source: z.enum(['image', 'instance']).meta({ description: 'image: declared by the image (fixed); instance: added on the instance' }),
});
const ServiceSchema = ServicePortSchema.extend({
  url: z.string().nullable().meta({
    description: 'where the service is served, an origin of its own: https://<port>-<instance>.<TIANQI_SERVICE_DOMAIN>/, or http(s)://<platform host>:<service port>/ '
      + '(TIANQI_SERVICE_PORTS) once it has been opened; null before that and for tcp. Open it with a link (POST …/link): it needs a sign-in there',
  }),
  listening: z.boolean().nullable().meta({ description: 'whether something listens on the port now; null while the instance is not running' }),
  publicAddress: z.string().nullable().meta({ description: '公网端口: <node public IP>:<host port> where the port is published (open to anyone, no sign-in); else null' }),
});
/** The `:port` of a path: a port number, or 400 naming it. */
function portOf(text: string | undefined): number {
  const port = Number(text);
  if (!/^[0-9]{1,5}$/.test(text ?? '') || port < 1 || port > 65_535) throw new ValidationError({ port: 'must be a port number 1–65535' });
  return port;
}

/** How the browser reached us, for absolute links (X-Forwarded-Proto only behind trusted proxies). */
function originOf(headers: Record<string, string | string[] | undefined>, trustProxy: number): LinkOrigin {
  const forwarded = trustProxy > 0 ? String(headers['x-forwarded-proto'] ?? '').split(',')[0]?.trim() : '';
  const host = String(headers.host ?? '');
  const port = /:([0-9]{1,5})$/.exec(host)?.[1];
  const hostname = (port ? host.slice(0, -port.length - 1) : host) || 'localhost';
  return { scheme: forwarded === 'https' ? 'https' : 'http', hostname, ...(port && trustProxy === 0 ? { port } : {}) };
}

/** 自定义服务: an instance's service ports, their status, and signed-in links to open them. */
export function serviceRoutes(instances: Instances, access: ServiceAccess, trustProxy: number): RouteSpec[] {
  // Another user's instance is a 404 before anything about the body or the port is said.
  const guard = ({ actor, params }: { actor: Actor; params: Record<string, string> }) => instances.visible(actor, params.id!);
  return [
    route({
      method: 'get', path: '/instances/:id/services', tag: 'instances', access: 'user',
      summary: 'The instance\'s services (its image\'s ports and its own), with links and whether each listens now',
      response: z.array(ServiceSchema),
      async handler({ actor, params, headers }) {
        return access.list(actor, params.id!, originOf(headers, trustProxy));
      },
    }),
    route({
      method: 'post', path: '/instances/:id/services', tag: 'instances', access: 'user', status: 201,
      summary: `Add a service port of the instance's own (at most ${MAX_OWN_SERVICE_PORTS}); 409 PORT_DECLARED when it is there already`,
      body: servicePort, response: z.array(ServicePortSchema), guard,
      async handler({ actor, params, body, context }) {
        const instance = await instances.addServicePort(actor, params.id!, body, context);
        return reply(201, (instance.servicePorts ?? []).map((p) => ({ ...p })));
      },
    }),
    route({
      method: 'delete', path: '/instances/:id/services/:port', tag: 'instances', access: 'user', status: 204,
      summary: 'Remove a service port the instance added (409 IMAGE_PORT for the image\'s own)', guard,
      async handler({ actor, params, context }) {
        const port = portOf(params.port);
        await instances.removeServicePort(actor, params.id!, port, context);
        await access.release(params.id!, port, context);
        return reply(204);
      },
    }),
    route({
      method: 'post', path: '/instances/:id/services/:port/link', tag: 'instances', access: 'user',
      summary: 'A link that opens the service signed in, on an origin of its own: its ticket is good once, for a minute, and becomes a cookie for this service only',
      query: z.strictObject({
        form: z.enum(['host', 'port']).optional()
          .meta({ description: 'host: <port>-<instance>.<TIANQI_SERVICE_DOMAIN>; port: a port of the platform host from TIANQI_SERVICE_PORTS, given to the service now. Default: host where the domain is set, else port' }),
      }),
      response: z.object({ url: z.string(), form: z.enum(['host', 'port']), expiresAt: z.string() }), guard,
      async handler({ actor, params, headers, query, context }) {
        return access.link(actor, params.id!, portOf(params.port), originOf(headers, trustProxy), query.form, context);
      },
    }),
  ];
}
