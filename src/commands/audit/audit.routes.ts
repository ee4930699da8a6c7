import { z } from 'zod';
import { CsvBody, reply, route, type RouteSpec } from '../../http/route.ts';
import type { EventStore, RecordedEvent } from '../../ports/event-store.port.ts';
import type { ReadStore } from '../../ports/read-store.port.ts';
import { USERS, type UserView } from '../../projections/users.projection.ts';
import { redactEventData } from '../../domain/shared/redact.ts';

const PAGE = 500;
/** A filtered query scans at most this many events per call, then hands back a cursor. */
const MAX_SCAN = 20_000;

const AuditQuery = z.strictObject({
  after: z.coerce.number().int().min(0).optional().meta({ description: 'global position to continue after (the `next` of the previous page)' }),
  limit: z.coerce.number().int().min(1).max(1_000).default(100),
  stream: z.string().max(200).optional().meta({ description: 'stream name prefix, e.g. `instance-` or `node-<id>`' }),
  type: z.string().max(100).optional().meta({ description: 'event type, or a prefix ending in `*` (e.g. `Instance*`)' }),
  user: z.string().max(64).optional().meta({ description: 'acting user: username or id' }),
  from: z.iso.datetime({ offset: true }).optional(),
  to: z.iso.datetime({ offset: true }).optional(),
  format: z.enum(['json', 'csv']).default('json'),
});

const AuditEvent = z.object({
  position: z.number(),
  id: z.string(),
  stream: z.string(),
  revision: z.number(),
  type: z.string(),
  time: z.string(),
  userId: z.string().nullable(),
  username: z.string().nullable(),
  clientIp: z.string().nullable(),
  correlationId: z.string().nullable(),
  data: z.unknown(),
});

type AuditFilter = z.infer<typeof AuditQuery>;

function matches(e: RecordedEvent, f: AuditFilter, userId: string | undefined): boolean {
  if (f.stream && !e.stream.startsWith(f.stream)) return false;
  if (f.type && (f.type.endsWith('*') ? !e.type.startsWith(f.type.slice(0, -1)) : e.type !== f.type)) return false;
  if (f.user && e.metadata.userId !== userId) return false;
  if (f.from && e.metadata.time < new Date(f.from).toISOString()) return false;
  if (f.to && e.metadata.time > new Date(f.to).toISOString()) return false;
  return true;
}

/**
 * One CSV cell. A cell that a spreadsheet would read as a formula (=, +, -, @, tab, CR first:
 * `=HYPERLINK(…)` in an instance name) gets a leading apostrophe, as OWASP advises, so that it
 * opens as the text it is.
 */
export const csvCell = (value: unknown) => {
  let text = value === null || value === undefined ? '' : typeof value === 'string' ? value : JSON.stringify(value);
  if (typeof value === 'string' && /^[=+\-@\t\r]/.test(text)) text = `'${text}`;
  return /[",\r\n]/.test(text) ? `"${text.replaceAll('"', '""')}"` : text;
};

/** The audit feed: every event with who, what, when and from where; secrets redacted. */
export function auditRoutes(events: EventStore, store: ReadStore): RouteSpec[] {
  return [
    route({
      method: 'get', path: '/events', tag: 'audit', access: 'admin',
      summary: 'The audit feed: every event with who, what, when and from where (secrets redacted); `format=csv` to export',
      query: AuditQuery,
      response: z.object({ events: z.array(AuditEvent), next: z.number().nullable() }),
      async handler({ query }) {
        const users = store.collection<UserView>(USERS);
        const userId = query.user ? ((await users.findOne({ usernameLower: query.user.toLowerCase() }))?.id ?? query.user) : undefined;
        const found: RecordedEvent[] = [];
        let after = query.after;
        let scanned = 0;
        let exhausted = false;
        while (found.length < query.limit && scanned < MAX_SCAN) {
          const page = await events.readAll({ after, limit: PAGE });
          if (page.length === 0) {
            exhausted = true;
            break;
          }
          for (const e of page) {
            scanned++;
            after = e.position;
            if (matches(e, query, userId)) found.push(e);
            if (found.length === query.limit) break;
          }
        }
        const names = new Map<string, string | null>();
        for (const id of new Set(found.map((e) => e.metadata.userId).filter((u): u is string => Boolean(u)))) {
          names.set(id, (await users.get(id))?.username ?? null);
        }
        const rows = found.map((e) => ({
          position: e.position,
          id: e.id,
          stream: e.stream,
          revision: e.revision,
          type: e.type,
          time: e.metadata.time,
          userId: e.metadata.userId ?? null,
          username: e.metadata.userId ? (names.get(e.metadata.userId) ?? null) : null,
          clientIp: e.metadata.clientIp ?? null,
          correlationId: e.metadata.correlationId ?? null,
          data: redactEventData(e.data),
        }));
        const next = exhausted && found.length < query.limit ? null : (after ?? null);
        if (query.format === 'csv') {
          const header = 'position,time,username,userId,clientIp,stream,revision,type,data';
          const lines = rows.map((r) => [r.position, r.time, r.username, r.userId, r.clientIp, r.stream, r.revision, r.type, r.data].map(csvCell).join(','));
          return reply(200, new CsvBody(`${[header, ...lines].join('\r\n')}\r\n`));
        }
        return { events: rows, next };
      },
    }),
  ];
}
