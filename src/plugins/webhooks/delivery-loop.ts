import { createHmac } from 'node:crypto';
import type { Logger } from 'pino';
import { filter, firstValueFrom, fromEvent, race, timer, type BehaviorSubject, type Observable } from 'rxjs';
import type { CommandBus } from '../../commands/command-bus.ts';
import { redactEventData } from '../../domain/shared/redact.ts';
import { isDeliverableStream, matchesEventTypes, retryDelayMs } from '../../domain/webhook/delivery.ts';
import type { BotFormat, WebhookFormat } from '../../domain/webhook/bots.ts';
import { botAccepted, botRequest } from './bot-messages.ts';
import {
  RECENT_ATTEMPTS,
  webhookDeliveryDecider,
  webhookDeliveryStream,
  type DeliveryAttempt,
} from '../../domain/webhook/webhook-delivery.decider.ts';
import type { EventStore, Position, RecordedEvent } from '../../ports/event-store.port.ts';

export interface DeliveryOptions {
  /** Wait before the first retry; doubles per failure up to `retryCapMs`. */
  readonly retryBaseMs: number;
  readonly retryCapMs: number;
  /** How long one POST may take before it counts as failed. */
  readonly timeoutMs: number;
  /** Delivery records are written at most this often (and at once when a batch is full). */
  readonly recordEveryMs: number;
}

export interface WebhookTarget {
  readonly id: string;
  readonly url: string;
  readonly events: readonly string[];
  /** The HMAC key, opened from its sealed form ('' for a bot without one). */
  readonly secret: string;
  /** The platform's JSON (absent), or a group bot's message. */
  readonly format?: WebhookFormat;
  /** A user's own webhook: only events of instances this user owns. */
  readonly ownerId?: string;
}

export interface DeliveryDependencies {
  readonly eventStore: EventStore;
  readonly bus: CommandBus;
  readonly logger: Logger;
  /** Position of the newest event appended: rings when there is more to read. */
  readonly head$: BehaviorSubject<Position>;
  /** A group bot's words for an event (instance and node names looked up). */
  readonly message?: (event: RecordedEvent) => Promise<{ title: string; text: string }>;
  /** The owner of an instance, deleted ones included (for users' own webhooks). */
  readonly ownerOf?: (instanceId: string) => Promise<string | null>;
  /** Sends an email through the deployment's SMTP relay (absent: none configured). */
  readonly mail?: (to: string, subject: string, text: string) => Promise<void>;
}

/** Events read from the log per page: the loop holds at most one page, however far behind it is. */
const PAGE = 500;
const context = { correlationId: 'webhooks' };

/** The body a receiver gets; its signature covers exactly these bytes. */
export function webhookBody(event: RecordedEvent): string {
  const { id, type, stream, revision, position, metadata, data } = event;
  return JSON.stringify({ id, type, stream, revision, position, time: metadata.time, data: redactEventData(data) });
}

export function signature(body: string, secret: string): string {
  return `sha256=${createHmac('sha256', secret).update(body).digest('hex')}`;
}

/**
 * Delivers one webhook's events in log order, one at a time: an event is retried with backoff until
 * the receiver answers 2xx, and only then does the next one go out. Each webhook has its own loop,
 * so a slow or failing receiver holds up nobody else.
 *
 * The loop pulls pages from the log after its cursor instead of subscribing: a receiver that is
 * down for hours would otherwise leave every event appended meanwhile queued in memory.
 *
 * Durability: attempts and the cursor are written to `webhook-deliveries-<id>` at most about once a
 * second, and on stop. A restart resumes from the last record, so after a crash at most the last
 * second of acknowledged events is sent again (at-least-once); after a clean stop none is.
 */
export class DeliveryLoop {
  private readonly abort = new AbortController();
  private readonly stop$ = fromEvent(this.abort.signal, 'abort');
  /** Every event up to here is acknowledged or not wanted. */
  private cursor: Position;
  private recordedCursor: Position;
  private pending: DeliveryAttempt[] = [];
  private lastRecordAt = 0;
  private recordTimer?: NodeJS.Timeout;
  private recording: Promise<void> = Promise.resolve();
  private running: Promise<void> = Promise.resolve();

  constructor(
    private readonly target: WebhookTarget,
    checkpoint: Position,
    private readonly deps: DeliveryDependencies,
    private readonly options: DeliveryOptions,
  ) {
    this.cursor = checkpoint;
    this.recordedCursor = checkpoint;
  }

  start(): void {
    this.running = this.run();
  }

  /** Stops at once (an unanswered POST is abandoned and sent again later); `record` keeps the cursor. */
  async stop({ record }: { record: boolean }): Promise<void> {
    this.abort.abort();
    clearTimeout(this.recordTimer);
    await this.running;
    if (record) await this.record();
    else await this.recording;
  }

  private get stopped(): boolean {
    return this.abort.signal.aborted;
  }

  private async run(): Promise<void> {
    let failures = 0;
    while (!this.stopped) {
      try {
        const seen = this.deps.head$.value;
        const page = await this.deps.eventStore.readAll({ after: this.cursor, limit: PAGE });
        if (page.length === 0) await this.appendAfter(seen);
        for (const event of page) {
          if (this.stopped) return;
          if (this.wants(event) && (await this.mine(event)) && !(await this.deliver(event))) return;
          this.cursor = event.position;
        }
        failures = 0;
      } catch (err) {
        failures += 1;
        this.deps.logger.warn({ err, webhookId: this.target.id }, 'webhook delivery loop could not read the event log; retrying');
        await this.sleep(retryDelayMs(failures, this.options.retryBaseMs, this.options.retryCapMs));
      }
    }
  }

  /** A user's webhook gets only their own instances' and their own balance's events: nothing of anybody else's ever leaves. */
  private async mine(event: RecordedEvent): Promise<boolean> {
    const owner = this.target.ownerId;
    if (owner === undefined) return true;
    if (event.stream === `balance-${owner}`) return true;
    if (!event.stream.startsWith('instance-') || !this.deps.ownerOf) return false;
    return (await this.deps.ownerOf(event.stream.slice('instance-'.length))) === owner;
  }

  private wants(event: RecordedEvent): boolean {
    return isDeliverableStream(event.stream) && matchesEventTypes(this.target.events, event.type);
  }

  /** Sends one event until it is acknowledged; false when the loop was stopped first. */
  private async deliver(event: RecordedEvent): Promise<boolean> {
    const body = webhookBody(event);
    for (let attempt = 1; ; attempt++) {
      const at = new Date().toISOString();
      const started = performance.now();
      const answer = await this.post(event, body);
      if (this.stopped) return false;
      const ok = answer.status !== null && answer.status >= 200 && answer.status < 300 && answer.error === null;
      if (ok) this.cursor = event.position;
      const durationMs = Math.round(performance.now() - started);
      await this.note({ eventId: event.id, type: event.type, position: event.position, attempt, ...answer, durationMs, at });
      if (ok) return true;
      await this.sleep(retryDelayMs(attempt, this.options.retryBaseMs, this.options.retryCapMs));
      if (this.stopped) return false;
    }
  }

  private async post(event: RecordedEvent, body: string): Promise<{ status: number | null; error: string | null }> {
    const format = this.target.format ?? 'tianqi';
    if (format === 'email') return this.sendMail(event);
    if (format !== 'tianqi') return this.postToBot(format, event);
    try {
      const response = await fetch(this.target.url, {
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          'user-agent': 'TianQi-Webhooks',
          'x-tianqi-event-id': event.id,
          'x-tianqi-signature': signature(body, this.target.secret),
        },
        body,
        // A redirect is not an acknowledgement: following it could re-POST the event elsewhere.
        redirect: 'manual',
        signal: AbortSignal.any([this.abort.signal, AbortSignal.timeout(this.options.timeoutMs)]),
      });
      await response.body?.cancel();
      const ok = response.status >= 200 && response.status < 300;
      return { status: response.status, error: ok ? null : `answered ${response.status} ${response.statusText}`.trim() };
    } catch (err) {
      return { status: null, error: describeFailure(err, this.options.timeoutMs) };
    }
  }

  /** An email: taken once the SMTP relay accepted it (its answer is the error when it does not). */
  private async sendMail(event: RecordedEvent): Promise<{ status: number | null; error: string | null }> {
    if (!this.deps.mail) return { status: null, error: 'no SMTP relay is configured (TIANQI_SMTP_URL)' };
    try {
      const { title, text } = this.deps.message ? await this.deps.message(event) : { title: '天启算力', text: event.type };
      await this.deps.mail(this.target.url.slice('mailto:'.length), `【${title}】${text.split('\n')[0]!}`.slice(0, 200), text);
      return { status: 250, error: null };
    } catch (err) {
      return { status: null, error: `the SMTP relay refused: ${err instanceof Error ? err.message : String(err)}`.slice(0, 500) };
    }
  }

  /** A group bot: its message format and signature, and its answer's code decides. */
  private async postToBot(format: BotFormat, event: RecordedEvent): Promise<{ status: number | null; error: string | null }> {
    try {
      const { title, text } = this.deps.message ? await this.deps.message(event) : { title: '天启算力', text: event.type };
      const request = botRequest(format, this.target.url, title, text, this.target.secret, Date.now());
      const response = await fetch(request.url, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'user-agent': 'TianQi-Webhooks' },
        body: request.body,
        redirect: 'manual',
        signal: AbortSignal.any([this.abort.signal, AbortSignal.timeout(this.options.timeoutMs)]),
      });
      const answer = (await response.text()).slice(0, 4_096);
      const taken = botAccepted(format, response.status, answer);
      return { status: response.status, error: taken.ok ? null : taken.error };
    } catch (err) {
      return { status: null, error: describeFailure(err, this.options.timeoutMs) };
    }
  }

  private async note(attempt: DeliveryAttempt): Promise<void> {
    this.pending.push(attempt);
    // A full batch is written before the next POST, which also slows a fast catch-up to the log's pace.
    if (this.pending.length >= RECENT_ATTEMPTS) await this.record();
    else this.scheduleRecord();
  }

  private scheduleRecord(): void {
    if (this.recordTimer || this.stopped) return;
    const wait = Math.max(0, this.lastRecordAt + this.options.recordEveryMs - Date.now());
    this.recordTimer = setTimeout(() => {
      this.recordTimer = undefined;
      void this.record();
    }, wait);
  }

  /** Writes the pending attempts and the cursor; one write at a time, in order. */
  private record(): Promise<void> {
    this.recording = this.recording.then(() => this.write());
    return this.recording;
  }

  private async write(): Promise<void> {
    if (this.pending.length === 0 && this.cursor <= this.recordedCursor) return;
    const attempts = this.pending.splice(0);
    const position = this.cursor;
    this.lastRecordAt = Date.now();
    try {
      const data = { webhookId: this.target.id, position, attempts };
      await this.deps.bus.execute(webhookDeliveryDecider, webhookDeliveryStream(this.target.id), { type: 'RecordWebhookDeliveries', data }, context);
      this.recordedCursor = position;
    } catch (err) {
      this.pending = [...attempts, ...this.pending].slice(-RECENT_ATTEMPTS);
      this.deps.logger.warn({ err, webhookId: this.target.id }, 'could not record webhook deliveries; will try again');
      this.scheduleRecord();
    }
  }

  /** Resolves when an event after `position` is appended, or the loop stops. */
  private appendAfter(position: Position): Promise<void> {
    return this.until(this.deps.head$.pipe(filter((head) => head > position)));
  }

  private sleep(ms: number): Promise<void> {
    return this.until(timer(ms));
  }

  /** Waits for `done$` or the stop, whichever comes first; the losing listener is removed. */
  private async until(done$: Observable<unknown>): Promise<void> {
    if (this.stopped) return;
    await firstValueFrom(race(done$, this.stop$), { defaultValue: undefined });
  }
}

function describeFailure(err: unknown, timeoutMs: number): string {
  if (err instanceof Error && err.name === 'TimeoutError') return `no answer within ${timeoutMs / 1000} s`;
  const cause = (err as { cause?: { code?: string; message?: string } }).cause;
  return cause?.code ?? cause?.message ?? (err instanceof Error ? err.message : String(err));
}
