import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ADMIN_PASSWORD, startTestApp, type TestApp } from '../support/app.ts';

const LABEL = '[a-zA-Z_][a-zA-Z0-9_]*="(?:\\\\.|[^"\\\\])*"';
const SAMPLE = new RegExp(`^(?<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\\{(?<labels>${LABEL}(?:,${LABEL})*,?)?\\})? (?<value>-?[0-9.eE+-]+|NaN|\\+Inf|-Inf)(?: -?\\d+)?$`);

/** Parses the Prometheus text format strictly: every line a comment, a blank or a sample. */
function parsePrometheus(text: string): Map<string, { labels: string; value: number }[]> {
  const samples = new Map<string, { labels: string; value: number }[]>();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('# HELP ') || line.startsWith('# TYPE ')) continue;
    const m = SAMPLE.exec(line);
    if (!m) throw new Error(`not Prometheus text: ${line}`);
    const { name, labels = '', value } = m.groups!;
    const list = samples.get(name!) ?? [];
    list.push({ labels, value: Number(value) });
    samples.set(name!, list);
  }
  return samples;
}

describe('GET /metrics', () => {
  let t: TestApp;
  let admin: string;
  const scraperToken = 'scrape-me-please-0123456789';
  beforeAll(async () => {
    t = await startTestApp({ TIANQI_METRICS_TOKEN: scraperToken });
    admin = await t.login('admin', ADMIN_PASSWORD);
    await t.api('POST', '/api/v1/users', { token: admin, body: { username: 'metric', password: 'metric-pass' } });
    await t.api('POST', '/api/v1/users', { token: admin, body: { username: 'x', password: 'short' } });
  });
  afterAll(() => t.stop());

  it('serves Prometheus text with commands, events, projection lag, instances, nodes and sessions', async () => {
    const response = await fetch(`${t.url}/metrics`, { headers: { authorization: `Bearer ${admin}` } });
    expect(response.status).toBe(200);
    expect(response.headers.get('content-type')).toMatch(/text\/plain; version=0\.0\.4/);
    const samples = parsePrometheus(await response.text());
    const commands = samples.get('tianqi_commands_total')!;
    expect(commands.find((c) => c.labels.includes('type="RegisterUser"') && c.labels.includes('outcome="ok"'))!.value).toBeGreaterThanOrEqual(2);
    expect(samples.get('tianqi_command_duration_seconds_count')!.length).toBeGreaterThan(0);
    expect(samples.get('tianqi_events_appended_total')![0]!.value).toBeGreaterThanOrEqual(4);
    expect(samples.get('tianqi_projection_lag_events')!.find((s) => s.labels === 'projection="users"')!.value).toBe(0);
    expect(samples.get('tianqi_instances')!.map((s) => s.labels).sort()).toEqual(['status="creating"', 'status="exited"', 'status="failed"', 'status="running"']);
    expect(samples.get('tianqi_nodes')!.length).toBe(3);
    expect(samples.get('tianqi_terminal_sessions_open')!.map((s) => s.labels).sort()).toEqual(['via="ssh"', 'via="web"']);
    expect(samples.has('tianqi_process_cpu_user_seconds_total')).toBe(true);
  });

  it('is for admins and the configured scraper token only', async () => {
    expect((await fetch(`${t.url}/metrics`)).status).toBe(401);
    const user = await t.login('metric', 'metric-pass');
    expect((await fetch(`${t.url}/metrics`, { headers: { authorization: `Bearer ${user}` } })).status).toBe(403);
    expect((await fetch(`${t.url}/metrics`, { headers: { authorization: `Bearer ${scraperToken}` } })).status).toBe(200);
    expect((await fetch(`${t.url}/metrics`, { headers: { authorization: `Bearer ${scraperToken}x` } })).status).toBe(401);
  });
});
