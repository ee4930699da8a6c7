import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { SqliteEventStore } from '../../adapters/eventstore/sqlite.event-store.ts';
import { MemoryReadStore } from '../../adapters/readstore/memory.read-store.ts';
import { balanceStream } from '../../domain/billing/balance.decider.ts';
import { createLogger } from '../../logger.ts';
import { balancesProjection } from '../../projections/balances.projection.ts';
import { ProjectionRunner } from '../../projections/projection-runner.ts';
import { usageProjection } from '../../projections/usage.projection.ts';
import { CommandBus } from '../command-bus.ts';
import { Balances } from './balances.ts';

const dir = mkdtempSync(join(tmpdir(), 'tianqi-ledger-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const T = (iso: string) => Date.parse(`2026-12-${iso}Z`);
const TICK = 10 * 60_000;
const USER = 'u-1';

/** The platform as the ledger sees it: the SQLite log, the real projections, the Balances use case, a clock the test moves. */
class Platform {
  events!: SqliteEventStore;
  store!: MemoryReadStore;
  runner!: ProjectionRunner;
  balances!: Balances;
  now = T('01T00:00:00');

  async open(): Promise<void> {
    this.events = new SqliteEventStore(join(dir, 'events.db'));
    this.store = new MemoryReadStore();
    this.runner = new ProjectionRunner(this.events, this.store, [usageProjection, balancesProjection], createLogger('silent'));
    await this.runner.start();
    const bus = new CommandBus(this.events, { waitForProjections: (p) => this.runner.waitFor(p) });
    this.balances = new Balances(bus, this.store, { enabled: true, lowBalance: 10 }, () => this.now);
  }

  /** A restart: everything in memory is gone, the read models are folded again from the log. */
  async restart(): Promise<void> {
    await this.runner.stop();
    await this.events.close();
    await this.open();
  }

  /** What the instances' and catalog's streams say happened, at the clock's time. */
  async fact(stream: string, type: string, data: object): Promise<void> {
    const { position } = await this.events.append(stream, [{ type, data, metadata: { time: new Date(this.now).toISOString() } }], 'any');
    await this.runner.waitFor(position);
  }
}

describe('prepaid balance: a month replayed against a hand-computed ledger', () => {
  it('warns, stops for arrears and ends the month at the exact balance, across a restart', async () => {
    const p = new Platform();
    await p.open();
    const running = (id: string, status: 'running' | 'exited') => p.fact(`instance-${id}`, 'InstanceStateObserved', { status });
    const request = async (id: string, spec: string, price: number, node: string) => {
      await p.fact(`instance-${id}`, 'InstanceRequested', { instanceId: id, ownerId: USER, ownerName: 'zhangsan', name: id, specId: spec, spec: { pricePerHour: price } });
      await p.fact(`instance-${id}`, 'InstancePlaced', { nodeId: node, gpus: [] });
    };
    await p.fact('spec-s15', 'SpecCreated', { specId: 's15', pricePerHour: 1.5 });
    await p.fact('spec-s08', 'SpecCreated', { specId: 's08', pricePerHour: 0.8 });
    await p.fact('spec-s025', 'SpecCreated', { specId: 's025', pricePerHour: 0.25 });
    await p.fact('spec-s2', 'SpecCreated', { specId: 's2', pricePerHour: 2 });
    for (const [id, spec, price, node] of [['a', 's15', 1.5, 'n1'], ['b', 's08', 0.8, 'n2'], ['c', 's025', 0.25, 'n2'], ['d', 's2', 2, 'n2']] as const) await request(id, spec, price, node);

    // The script of the month, by the clock: [when, what].
    const script: [number, () => Promise<unknown>][] = [
      [T('01T00:00:00'), () => p.balances.adjust(USER, 100, '首次充值', 'admin', {})],
      [T('01T10:00:00'), () => running('a', 'running')],
      [T('01T20:00:00'), () => running('a', 'exited')], // a: 10 h × 1.5 = 15
      [T('03T08:00:00'), () => running('b', 'running')],
      [T('04T08:00:00'), () => p.fact('spec-s08', 'SpecUpdated', { pricePerHour: 1.2 })], // b: 24 h × 0.8 = 19.2
      [T('05T08:00:00'), () => running('b', 'exited')], // b: 24 h × 1.2 = 28.8
      [T('10T00:00:00'), () => running('a', 'running')],
      [T('10T02:00:00'), () => p.fact('node-n1', 'NodeConnectionChecked', { status: 'failed' })],
      [T('10T03:00:00'), () => p.fact('node-n1', 'NodeConnectionChecked', { status: 'connected' })],
      [T('10T06:00:00'), () => running('a', 'exited')], // a: 5 h × 1.5 = 7.5 (the outage hour not billed)
      [T('12T00:00:00'), () => p.balances.adjust(USER, -5, '退回误充', 'admin', {})],
      [T('15T00:00:00'), () => running('c', 'running')],
      [T('15T00:00:07'), () => running('c', 'exited')], // c: 7 s × 0.25 / 3600 = 0.000486… → 0.0005
      [T('16T00:00:00'), () => p.restart()],
      [T('20T00:00:00'), () => running('d', 'running')], // d: 2 per hour until the arrears stop
      [T('22T00:00:00'), () => p.balances.adjust(USER, 50, '续费', 'admin', {})],
      [T('23T00:00:00'), () => running('d', 'running')],
      [T('23T01:00:00'), () => running('d', 'exited')], // d: 1 h × 2 = 2
    ];

    const decided: { at: string; type: string; data: unknown }[] = [];
    let seen = 0;
    for (let at = T('01T00:00:00'); at <= T('31T23:50:00'); at += TICK) {
      for (const [when, act] of script) if (when > at - TICK && when <= at && when !== at) { p.now = when; await act(); }
      p.now = at;
      for (const [when, act] of script) if (when === at) await act();
      // The arrears plugin's tick: check the account; while it is used up, stop what runs.
      const { state } = await p.balances.check(USER, {});
      if (state.exhausted && (await p.store.collection<{ id: string; running: boolean }>('usage').get('d'))?.running) await running('d', 'exited');
      const stream = await p.events.readStream(balanceStream(USER));
      for (const e of stream.slice(seen)) if (e.type !== 'BalanceAdjusted') decided.push({ at: e.metadata.time, type: e.type, data: e.data });
      seen = stream.length;
    }

    // By hand: credits 100 − 5 + 50 = 145. Usage: a 15 + 7.5, b 19.2 + 28.8, c 0.0005,
    // d (12 h 20 min to the tick that found it used up) 24.6666… + 2 = 26.6667 → 97.1672.
    expect(decided).toEqual([
      // 24.4995 at 20T00:00, 2 an hour: 10.1662 at 07:10, 9.8328 at 07:20.
      { at: '2026-12-20T07:20:00.000Z', type: 'BalanceLowWarned', data: { balance: 98_328, threshold: 100_000 } },
      // 0.6662 at 12:10, −0.1672 at 12:20 (95 − 95.1672).
      { at: '2026-12-20T12:20:00.000Z', type: 'BalanceExhausted', data: { balance: -1_672 } },
    ]);
    await p.restart();
    const s = await p.balances.statement(USER);
    expect(s).toMatchObject({ openedAt: '2026-12-01T00:00:00.000Z', credited: 145, usage: 97.1672, balance: 47.8328, warned: false, exhausted: false });
    expect(Object.fromEntries(s.instances.map((i) => [i.instanceId, [i.seconds, i.cost]]))).toEqual({
      a: [15 * 3600, 22.5], b: [48 * 3600, 48], c: [7, 0.0005], d: [13 * 3600 + 20 * 60, 26.6667],
    });
    expect(s.adjustments.map((a) => [a.amount, a.reason])).toEqual([[50, '续费'], [-5, '退回误充'], [100, '首次充值']]);
    await p.runner.stop();
    await p.events.close();
  }, 120_000);

  it('refuses a zero or over-precise amount and a missing reason, appending nothing', async () => {
    const events = new SqliteEventStore(':memory:');
    const store = new MemoryReadStore();
    const balances = new Balances(new CommandBus(events), store, { enabled: true, lowBalance: 10 });
    await expect(balances.adjust('u', 0, 'x', 'admin', {})).rejects.toMatchObject({ fields: { amount: expect.any(String) } });
    await expect(balances.adjust('u', 10, '  ', 'admin', {})).rejects.toMatchObject({ fields: { reason: expect.any(String) } });
    const off = new Balances(new CommandBus(events), store, { enabled: false, lowBalance: 10 });
    await expect(off.adjust('u', 10, 'x', 'admin', {})).rejects.toMatchObject({ code: 'PREPAID_OFF' });
    expect(await events.headPosition()).toBeUndefined();
    await events.close();
  });
});
