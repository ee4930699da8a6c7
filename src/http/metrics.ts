import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { Observable } from 'rxjs';
import type { EventStore, RecordedEvent } from '../ports/event-store.port.ts';

export interface MetricsSources {
  readonly eventStore: EventStore;
  /** Processed position per projection. */
  readonly projectionPositions: () => ReadonlyMap<string, number>;
  readonly instancesByStatus: () => Promise<Record<string, number>>;
  readonly nodesByStatus: () => Promise<Record<string, number>>;
}

/**
 * Prometheus metrics (`GET /metrics`): commands by type and outcome with latency, events
 * appended, projection lag, instances and nodes by status, open terminal and SSH sessions,
 * webhook deliveries by outcome.
 */
export class PlatformMetrics {
  readonly registry = new Registry();
  private readonly commands = new Counter({ name: 'tianqi_commands_total', help: 'Commands handled, by type and outcome', labelNames: ['type', 'outcome'], registers: [this.registry] });
  private readonly commandSeconds = new Histogram({
    name: 'tianqi_command_duration_seconds', help: 'Command latency (load, decide, append, read-your-writes)', labelNames: ['type'],
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5], registers: [this.registry],
  });
  private readonly appended = new Counter({ name: 'tianqi_events_appended_total', help: 'Events appended to the log', registers: [this.registry] });
  private readonly sessions = new Gauge({ name: 'tianqi_terminal_sessions_open', help: 'Open shells, by way in (web terminal or SSH)', labelNames: ['via'], registers: [this.registry] });
  private readonly deliveries = new Counter({ name: 'tianqi_webhook_deliveries_total', help: 'Webhook delivery attempts, by outcome', labelNames: ['outcome'], registers: [this.registry] });

  constructor(sources: MetricsSources) {
    collectDefaultMetrics({ register: this.registry, prefix: 'tianqi_' });
    new Gauge({
      name: 'tianqi_projection_lag_events', help: 'Events in the log a projection has not processed yet', labelNames: ['projection'], registers: [this.registry],
      async collect() {
        const head = (await sources.eventStore.headPosition()) ?? 0;
        for (const [name, position] of sources.projectionPositions()) this.set({ projection: name }, Math.max(0, head - position));
      },
    });
    new Gauge({
      name: 'tianqi_instances', help: 'Instances by status', labelNames: ['status'], registers: [this.registry],
      async collect() {
        this.reset();
        for (const [status, count] of Object.entries(await sources.instancesByStatus())) this.set({ status }, count);
      },
    });
    new Gauge({
      name: 'tianqi_nodes', help: 'Compute nodes by Docker connection status', labelNames: ['docker_status'], registers: [this.registry],
      async collect() {
        this.reset();
        for (const [status, count] of Object.entries(await sources.nodesByStatus())) this.set({ docker_status: status }, count);
      },
    });
    for (const via of ['web', 'ssh']) this.sessions.set({ via }, 0);
  }

  observeCommand = (type: string, outcome: string, seconds: number): void => {
    this.commands.inc({ type, outcome });
    this.commandSeconds.observe({ type }, seconds);
  };

  observeAppended = (events: number): void => {
    this.appended.inc(events);
  };

  /** Sessions and deliveries are facts in the log; this process counts the ones it sees live. */
  follow(events$: Observable<RecordedEvent>) {
    return events$.subscribe((e) => {
      const via = (e.data as { via?: string }).via ?? 'web';
      if (e.type === 'TerminalSessionOpened') this.sessions.inc({ via });
      else if (e.type === 'TerminalSessionClosed') this.sessions.dec({ via });
      else if (e.type === 'WebhookDeliveriesRecorded') {
        for (const attempt of (e.data as { attempts: { status: number | null }[] }).attempts) {
          const ok = typeof attempt.status === 'number' && attempt.status >= 200 && attempt.status < 300;
          this.deliveries.inc({ outcome: ok ? 'delivered' : 'failed' });
        }
      }
    });
  }
}
