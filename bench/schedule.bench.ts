// 定时关机 on the real clock: instances on the local dockerd, each with a stop a few seconds
// ahead, staggered; how late each fired (the InstanceScheduledStopFired event's time against the
// schedule's) and how late its container was seen stopped. The baseline is the same stop asked
// for by hand at the same moment (POST /stop): what the schedule adds on top of a stop.
import { startTestApp } from '../test/support/app.ts';
import { removeContainersOf, runningInstance, setUpLab, waitFor } from '../test/support/fixtures.ts';
import { percentile } from './stats.ts';

const dockerSocket = process.env.TIANQI_TEST_DOCKER_SOCKET ?? '/var/run/docker.sock';
const INSTANCES = 20;
const round = (n: number) => Math.round(n * 10) / 10;

export async function scheduleBench(): Promise<Record<string, number>> {
  const t = await startTestApp({ TIANQI_LOG_LEVEL: 'warn', TIANQI_POLL_INTERVAL_MS: '60000' });
  try {
    const lab = await setUpLab(t, dockerSocket, ['alice']);
    const token = lab.tokens.alice!;
    const ids: string[] = [];
    for (let i = 0; i < INSTANCES + 1; i++) ids.push((await runningInstance(t, token, lab, `sched-${i}`)).id);
    const manual = ids.pop()!;

    // Staggered over 4 s, starting 3 s ahead: ticks meet them at every phase.
    const start = Date.now() + 3_000;
    const due = new Map<string, number>();
    for (const [i, id] of ids.entries()) {
      const at = start + Math.round((i * 4_000) / INSTANCES);
      due.set(id, at);
      const r = await t.api('PUT', `/api/v1/instances/${id}/scheduled-stop`, { token, body: { at: new Date(at).toISOString() } });
      if (r.status !== 200) throw new Error(`schedule: ${r.status} ${JSON.stringify(r.body)}`);
    }
    const asked = Date.now();
    const byHand = await t.api('POST', `/api/v1/instances/${manual}/stop`, { token });
    if (byHand.status !== 200) throw new Error(`stop: ${byHand.status}`);
    const manualStopMs = Date.now() - asked;

    const fired: number[] = [];
    const stopped: number[] = [];
    for (const id of ids) {
      await waitFor(() => t.api<{ status: string; pending: string | null }>('GET', `/api/v1/instances/${id}`, { token }).then((r) => r.body),
        (v) => v.status === 'exited' && v.pending === null, 60_000);
      const events = await t.app.eventStore.readStream(`instance-${id}`);
      const at = due.get(id)!;
      fired.push(Date.parse(events.find((e) => e.type === 'InstanceScheduledStopFired')!.metadata.time) - at);
      const seen = events.filter((e) => e.type === 'InstanceOperationCompleted').at(-1)!;
      stopped.push(Date.parse(seen.metadata.time) - at);
    }
    await removeContainersOf(t, dockerSocket);
    return {
      scheduledStops: INSTANCES,
      // How late the scheduler fired, by the event's time (target: within 5 s; the tick is 1 s).
      firedLateP50Ms: round(percentile(fired, 50)),
      firedLateP99Ms: round(percentile(fired, 99)),
      // How late the stop was done (the engine's stop included).
      stoppedLateP50Ms: round(percentile(stopped, 50)),
      stoppedLateP99Ms: round(percentile(stopped, 99)),
      // The same stop by hand, the request to its answer: what a stop costs without the schedule.
      manualStopMs: round(manualStopMs),
    };
  } finally {
    await t.stop();
  }
}
