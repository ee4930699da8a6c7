import { existsSync } from 'node:fs';
import { request } from 'node:http';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.ts';
import { startTestApp, type TestApp } from '../support/app.ts';
import { removeContainersOf, setUpLab, waitFor, type Lab } from '../support/fixtures.ts';
import { RawWebSocket } from '../support/raw-http.ts';
import { describeWithService } from '../support/services.ts';
import { ensureWebServiceImage } from '../support/test-image.ts';

const socketPath = process.env.TIANQI_TEST_DOCKER_SOCKET;
const helperBuilt = existsSync(join(loadConfig({}).helperDir, 'linux-amd64', 'tianqi-helper'));

/** An open connection through the proxy, and when it ended (ms since the epoch). */
interface Open { ended: Promise<number>; alive(): boolean }

/**
 * Proxied sockets follow the account and the instance, as SSH, /live, /logs and /terminal do: an
 * open WebSocket and a streaming answer (server-sent events) end within 1 s of a password change,
 * a disable, a deletion, a demotion that removes the right, the credential's expiry and the
 * instance's stop — and nobody else's connection ends with them.
 */
describeWithService(
  'Docker engine and a tianqi-helper build',
  Boolean(socketPath) && helperBuilt,
  'start dockerd (see .ci/run), set TIANQI_TEST_DOCKER_SOCKET, and have Go 1.23+ on PATH so helper/ builds',
  'proxied service connections end with the right to them',
  () => {
    let t: TestApp;
    let lab: Lab;
    let imageId: string;
    const ids: Record<string, string> = {};
    const userIds: Record<string, string> = {};

    const user = async (name: string, role: 'user' | 'admin' = 'user') => {
      const created = await t.api<{ id: string }>('POST', '/api/v1/users', { token: lab.admin, body: { username: `${name}-user`, password: `${name}-password`, role } });
      if (created.status !== 201) throw new Error(JSON.stringify(created.body));
      userIds[name] = created.body.id;
      lab.tokens[name] = await t.login(`${name}-user`, `${name}-password`);
    };
    const instanceOf = async (owner: string) => {
      const created = await t.api<{ id: string }>('POST', '/api/v1/instances', { token: lab.tokens[owner], body: { name: `web-${owner}`, imageId, specId: lab.specId } });
      ids[owner] = created.body.id;
      await waitFor(() => t.api<{ listening: boolean }[]>('GET', `/api/v1/instances/${created.body.id}/services`, { token: lab.tokens[owner] }).then((r) => r.body),
        (s) => Array.isArray(s) && s[0]?.listening === true, 90_000);
    };
    /** The port the service is given (port form) and a cookie for it, as a browser gets them. */
    const portOf = async (token: string, id: string) => {
      const link = await t.api<{ url: string }>('POST', `/api/v1/instances/${id}/services/8888/link?form=port`, { token });
      return Number(new URL(link.body.url).port);
    };
    /** A WebSocket and a server-sent-events stream, both open through the proxy with this bearer token. */
    const openBoth = async (token: string, id: string): Promise<Open[]> => {
      const port = await portOf(token, id);
      const ws = await RawWebSocket.open(port, '/api/kernels/1/channels', { authorization: `Bearer ${token}` });
      ws.send('hello');
      expect((await ws.next()).toString()).toBe('hello');
      let wsOpen = true;
      const wsEnded = ws.closed().then(() => { wsOpen = false; return Date.now(); });
      const drip = await new Promise<Open>((resolve, reject) => {
        const req = request({ host: '127.0.0.1', port, path: '/drip', headers: { authorization: `Bearer ${token}` }, agent: false }, (res) => {
          let open = true;
          const ended = new Promise<number>((done) => {
            const end = () => { open = false; done(Date.now()); };
            res.once('end', end).once('aborted', end).once('error', end).once('close', end);
          });
          res.once('data', () => resolve({ ended, alive: () => open }));
        });
        req.on('error', reject);
        req.end();
      });
      return [{ ended: wsEnded, alive: () => wsOpen }, drip];
    };
    const endedWithin = async (opened: Open[], since: number) => {
      const ends = await Promise.all(opened.map((o) => Promise.race([o.ended, new Promise<number>((r) => setTimeout(() => r(Infinity), 5_000))])));
      return ends.map((e) => e - since);
    };

    beforeAll(async () => {
      t = await startTestApp({ TIANQI_POLL_INTERVAL_MS: '60000' });
      lab = await setUpLab(t, socketPath!, ['alice']);
      const image = await t.api<{ id: string }>('POST', '/api/v1/images', { token: lab.admin, body: { name: 'notebook', address: ensureWebServiceImage(socketPath), ports: [{ port: 8888, name: 'JupyterLab' }] } });
      imageId = image.body.id;
      await user('pw');
      await user('dis');
      await user('ops', 'admin');
      await user('lead', 'admin');
      await Promise.all(['alice', 'pw', 'dis'].map(instanceOf));
    }, 240_000);

    afterAll(async () => {
      await removeContainersOf(t, socketPath);
      await t?.stop();
    });

    const timings: Record<string, number[]> = {};
    afterAll(() => {
      console.log(`proxied connections ended after (ms, [WebSocket, stream]): ${JSON.stringify(timings)}`);
    });

    it('a password change, a disable, a deletion and a demotion end that user\'s connections within 1 s, and only theirs', async () => {
      const bystander = await openBoth(lab.tokens.alice!, ids.alice!);

      const pw = await openBoth(lab.tokens.pw!, ids.pw!);
      let since = Date.now();
      expect((await t.api('POST', '/api/v1/auth/password', { token: lab.tokens.pw, body: { currentPassword: 'pw-password', newPassword: 'pw-password-2' } })).status).toBe(204);
      timings.passwordChanged = await endedWithin(pw, since);

      const dis = await openBoth(lab.tokens.dis!, ids.dis!);
      since = Date.now();
      expect((await t.api('PATCH', `/api/v1/users/${userIds.dis}`, { token: lab.admin, body: { disabled: true } })).status).toBe(200);
      timings.disabled = await endedWithin(dis, since);

      // admins in someone else's instance
      const ops = await openBoth(lab.tokens.ops!, ids.alice!);
      since = Date.now();
      expect((await t.api('DELETE', `/api/v1/users/${userIds.ops}`, { token: lab.admin })).status).toBe(204);
      timings.deleted = await endedWithin(ops, since);

      const lead = await openBoth(lab.tokens.lead!, ids.alice!);
      since = Date.now();
      expect((await t.api('PATCH', `/api/v1/users/${userIds.lead}`, { token: lab.admin, body: { role: 'user' } })).status).toBe(200);
      timings.demoted = await endedWithin(lead, since);

      for (const [what, ms] of Object.entries(timings)) for (const m of ms) expect(m, what).toBeLessThan(1_000);
      // alice's own connections went on through all of that
      expect(bystander.map((o) => o.alive())).toEqual([true, true]);
    }, 60_000);

    it('a credential that expires ends its connections at its expiry', async () => {
      const me = { body: (await t.app.readStore.collection<{ id: string; passwordChangedAt: string }>('users').find({ username: 'alice' }))[0]! };
      const tokens = (t.app.accounts as unknown as { tokens: { issue(u: string, p: string, now: number): string } }).tokens;
      // a token issued so that it has 1.5 s left
      const short = tokens.issue(me.body.id, me.body.passwordChangedAt, Date.now() - 12 * 3600_000 + 1_500);
      const opened = await openBoth(short, ids.alice!);
      const expiresAt = JSON.parse(Buffer.from(short.split('.')[1]!, 'base64url').toString()).exp * 1000;
      timings.expired = await endedWithin(opened, expiresAt);
      for (const m of timings.expired) expect(m).toBeLessThan(1_000);
    }, 30_000);

    it('the instance\'s stop ends its connections within 1 s', async () => {
      const opened = await openBoth(lab.tokens.alice!, ids.alice!);
      const stop = await t.api('POST', `/api/v1/instances/${ids.alice}/stop?wait=true`, { token: lab.tokens.alice });
      expect(stop.status).toBeLessThan(300);
      const stopped = await waitFor(() => t.app.eventStore.readStream(`instance-${ids.alice}`), (events) => events.some((e) => e.type === 'InstanceStateObserved' && (e.data as { status: string }).status === 'exited'), 30_000);
      const at = Date.parse(stopped.findLast((e) => e.type === 'InstanceStateObserved')!.metadata.time);
      timings.stopped = await endedWithin(opened, at);
      for (const m of timings.stopped) expect(m).toBeLessThan(1_000);
    }, 60_000);
  },
);
