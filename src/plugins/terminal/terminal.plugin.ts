import { filter } from 'rxjs';
import { instanceStream } from '../../domain/instance/instance.decider.ts';
import { userStream } from '../../domain/user/user.events.ts';
import { AccessAudit } from '../../commands/instance/access-audit.ts';
import { accessEnding } from '../../domain/instance/access.ts';
import type { RecordedEvent } from '../../ports/event-store.port.ts';
import type { Plugin } from '../plugin-host.ts';
import { ENDING_PHRASES, actorOf, emitError, guardSockets, requireToken } from '../live/socket-auth.ts';
import type { Ending } from './terminal-session.ts';
import { parseOpen, parseSize, TerminalSession } from './terminal-session.ts';

const SHUTDOWN: Ending = { reason: 'server shutting down', error: { code: 'SERVER_SHUTDOWN', message: 'The server is shutting down.' } };
const CLIENT_LEFT: Ending = { reason: 'the client disconnected' };


/**
 * The domain's rule (accessEnding) as the web terminal tells it: after these events no session
 * of that user, or in that instance, may go on. `foreignOnly`: only sessions in instances the
 * user does not own. Pure.
 */
export function endingOf(event: RecordedEvent): (Ending & { foreignOnly?: boolean; recheck?: boolean }) | null {
  const ending = accessEnding(event);
  if (!ending) return null;
  return {
    reason: ending.reason,
    error: { code: ending.code, message: `The terminal was closed: ${ENDING_PHRASES[ending.code]}.` },
    ...(ending.foreignOnly ? { foreignOnly: true } : {}),
    ...(ending.recheck ? { recheck: true } : {}),
  };
}

/**
 * socket.io `/terminal`: `open {instanceId, cols, rows, shell?}` starts a shell with a TTY in the
 * caller's running instance; then `data` both ways (the client acknowledges each `data` it got:
 * the output waits while 256 KiB are unacknowledged), `resize {cols, rows}`, and `exit {code}`
 * when the shell ends. Sessions end when their user is disabled or deleted, or their instance
 * stops, fails or is deleted; each one is in the instance's history.
 */
export const terminalPlugin: Plugin = {
  name: 'terminal',
  async start(ctx) {
    const terminal = ctx.io.of('/terminal');
    const audit = new AccessAudit(ctx.bus);
    requireToken(terminal, ctx.authenticate);
    // Sessions end by the events below; the guard adds the token's expiry and the role of a demoted admin.
    const guard = guardSockets(terminal, ctx.events$, { endOnEvents: false });
    /** Open sessions by the stream whose events end them: `user-<id>` and `instance-<id>`. */
    const watched = new Map<string, Set<TerminalSession>>();
    const sessions = new Set<TerminalSession>();
    /** The bearer token each session was opened with: a sign-out ends the sessions of that sign-in. */
    const tokens = new WeakMap<TerminalSession, string>();
    const watch = (stream: string, session: TerminalSession) => {
      const set = watched.get(stream) ?? new Set();
      watched.set(stream, set.add(session));
    };
    const unwatch = (stream: string, session: TerminalSession) => {
      const set = watched.get(stream);
      set?.delete(session);
      if (set?.size === 0) watched.delete(stream);
    };

    terminal.on('connection', (socket) => {
      socket.once('open', (payload: unknown) => {
        const actor = actorOf(socket);
        const request = parseOpen(payload);
        if (typeof request === 'string') {
          emitError(socket, 'VALIDATION_FAILED', request);
          socket.disconnect();
          return;
        }
        const session = new TerminalSession(ctx, audit, socket, request);
        tokens.set(session, (socket.data as { token: string }).token);
        const streams = [userStream(actor.id), instanceStream(request.instanceId)];
        // Watched before anything is looked up: an event while the shell starts ends it too.
        for (const stream of streams) watch(stream, session);
        sessions.add(session);
        socket.on('data', (text: unknown) => {
          if (typeof text === 'string') session.input(text);
        });
        socket.on('resize', (payload: unknown) => {
          const size = parseSize(payload);
          if (size) session.resize(size);
          else emitError(socket, 'VALIDATION_FAILED', 'cols and rows must be whole numbers from 1 to 1000');
        });
        // Every ending disconnects the socket, so this is where each session is let go.
        socket.once('disconnect', () => {
          void session.end(CLIENT_LEFT).then(() => {
            for (const stream of streams) unwatch(stream, session);
            sessions.delete(session);
          });
        });
        session.start();
      });
    });

    const endings = ctx.events$
      .pipe(filter((event) => watched.has(event.stream)))
      .subscribe({
        next: (event) => {
          const ending = endingOf(event);
          if (!ending) return;
          const userId = event.stream.startsWith('user-') ? event.stream.slice('user-'.length) : null;
          for (const session of watched.get(event.stream) ?? []) {
            // An admin made a user keeps the terminals of their own instances.
            if (ending.foreignOnly && session.ownerId === userId) continue;
            if (ending.recheck) {
              void ctx.authenticate(tokens.get(session) ?? '').catch(() => null).then((actor) => (actor ? undefined : session.end(ending)));
              continue;
            }
            void session.end(ending);
          }
        },
        error: (err: unknown) => ctx.logger.error({ err }, 'web terminal stopped watching users and instances'),
      });

    return {
      async stop() {
        guard.unsubscribe();
        endings.unsubscribe();
        await Promise.all([...sessions].map((session) => session.end(SHUTDOWN)));
        terminal.disconnectSockets();
      },
    };
  },
};
