import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.ts';
import { startTestApp, type TestApp } from '../support/app.ts';
import { removeContainersOf, setUpLab, waitFor, type Lab } from '../support/fixtures.ts';
import { json, raw, RawWebSocket, type RawAnswer } from '../support/raw-http.ts';
import { describeWithService } from '../support/services.ts';
import { ensureWebServiceImage } from '../support/test-image.ts';

const socketPath = process.env.TIANQI_TEST_DOCKER_SOCKET;
const helperBuilt = existsSync(join(loadConfig({}).helperDir, 'linux-amd64', 'tianqi-helper'));
const MB = 1024 * 1024;
const DOMAIN = 'svc.localhost';

interface Service { port: number; name: string; protocol: string; source: string; url: string | null; listening: boolean | null }
interface Echo { port: number; remote: string; remotePort: number; method: string; url: string; headers: Record<string, string> }

const cookiesOf = (answer: RawAnswer) => ([] as string[]).concat(answer.headers['set-cookie'] ?? []);
const code = (a: RawAnswer) => [a.status, json<{ error: { code: string } }>(a).error.code];

describeWithService(
  'Docker engine and a tianqi-helper build',
  Boolean(socketPath) && helperBuilt,
  'start dockerd (see .ci/run), set TIANQI_TEST_DOCKER_SOCKET, and have Go 1.23+ on PATH so helper/ builds',
  'Service ports through the signed-in proxy (自定义服务)',
  () => {
    let t: TestApp;
    let lab: Lab;
    let port: number;
    let imageId: string;
    const boxes: Record<string, string> = {};

    const create = async (owner: string, name: string, body: Record<string, unknown> = {}) => {
      const created = await t.api<{ id: string }>('POST', '/api/v1/instances', { token: lab.tokens[owner], body: { name, imageId, specId: lab.specId, ...body } });
      if (created.status !== 201) throw new Error(JSON.stringify(created.body));
      return created.body.id;
    };
    const running = (owner: string, id: string) => waitFor(
      () => t.api<{ status: string; containerId: string | null; statusReason: string }>('GET', `/api/v1/instances/${id}`, { token: lab.tokens[owner] }).then((r) => r.body),
      (i) => i.status !== 'creating' && (i.status !== 'running' || i.containerId !== null),
      60_000,
    );
    /** Where a service is reached on the wire: the port to dial and the Host header to send. */
    interface Place { port: number; host: string }
    const hostForm = (id: string, servicePort: number): Place => ({ port, host: `${servicePort}-${id}.${DOMAIN}:${port}` });
    /** A link as the console's button gets one. */
    const linkFor = async (token: string, id: string, servicePort: number, form: 'host' | 'port') => {
      const link = await t.api<{ url: string; form: string }>('POST', `/api/v1/instances/${id}/services/${servicePort}/link?form=${form}`, { token });
      expect(link.status, JSON.stringify(link.body)).toBe(200);
      const url = new URL(link.body.url);
      const place: Place = form === 'port' ? { port: Number(url.port), host: url.host } : { port, host: url.host };
      return { url, place, link: link.body };
    };
    /** A signed-in cookie for a service, the way a browser gets one: link, then its ticket. */
    const signIn = async (token: string, id: string, servicePort: number, form: 'host' | 'port' = 'port') => {
      const { url, place, link } = await linkFor(token, id, servicePort, form);
      const answer = await raw(place.port, 'GET', `${url.pathname}${url.search}`, { headers: { host: place.host } });
      expect(answer.status, answer.body.toString()).toBe(303);
      const cookie = cookiesOf(answer).map((c) => c.split(';')[0]!).filter((c) => c.startsWith('tianqi_service')).join('; ');
      return { cookie, answer, link, place, url };
    };
    const through = (place: Place, path: string, cookie: string, headers: Record<string, string> = {}) =>
      raw(place.port, 'GET', path, { headers: { host: place.host, cookie, ...headers } });

    beforeAll(async () => {
      t = await startTestApp({ TIANQI_SERVICE_DOMAIN: DOMAIN, TIANQI_SERVICE_TIMEOUT_MS: '2000', TIANQI_POLL_INTERVAL_MS: '60000' });
      port = t.app.httpPort;
      lab = await setUpLab(t, socketPath!, ['alice', 'bob']);
      const image = await t.api<{ id: string; ports: unknown[] }>('POST', '/api/v1/images', {
        token: lab.admin,
        body: {
          name: 'notebook', address: ensureWebServiceImage(socketPath),
          ports: [{ port: 8888, name: 'JupyterLab' }, { port: 6006, name: 'TensorBoard', protocol: 'http' }, { port: 5432, name: 'Postgres', protocol: 'tcp' }],
        },
      });
      expect(image.status, JSON.stringify(image.body)).toBe(201);
      imageId = image.body.id;
      boxes.alice = await create('alice', 'lab', { servicePorts: [{ port: 7860, name: 'Gradio' }] });
      boxes.bob = await create('bob', 'lab');
      for (const [owner, id] of Object.entries(boxes)) {
        const ready = await running(owner, id);
        if (ready.status !== 'running') throw new Error(`${owner}'s instance is ${ready.status}: ${ready.statusReason}`);
      }
      // the service has started once both its ports answer through the platform
      await waitFor(() => t.api<Service[]>('GET', `/api/v1/instances/${boxes.alice}/services`, { token: lab.tokens.alice }).then((r) => r.body),
        (s) => s.filter((x) => x.listening).length === 2, 30_000);
    }, 240_000);

    afterAll(async () => {
      await removeContainersOf(t, socketPath);
      await t?.stop();
    });

    describe('declared ports', () => {
      it('shows the image\'s ports and the instance\'s own, with where each is served and whether each listens', async () => {
        const services = await t.api<Service[]>('GET', `/api/v1/instances/${boxes.alice}/services`, { token: lab.tokens.alice });
        expect(services.status).toBe(200);
        expect(services.body.map((s) => [s.port, s.name, s.protocol, s.source, s.listening])).toEqual([
          [8888, 'JupyterLab', 'http', 'image', true],
          [6006, 'TensorBoard', 'http', 'image', true],
          [5432, 'Postgres', 'tcp', 'image', false],
          [7860, 'Gradio', 'http', 'instance', false],
        ]);
        expect(services.body[0]!.url).toBe(`http://8888-${boxes.alice}.${DOMAIN}:${port}/`);
        expect(services.body[2]!.url).toBeNull();
        const instance = await t.api<{ servicePorts: unknown[] }>('GET', `/api/v1/instances/${boxes.alice}`, { token: lab.tokens.alice });
        expect(instance.body.servicePorts).toHaveLength(4);
      });

      it('adds and removes the instance\'s own ports, as events on its history; refuses what is not allowed', async () => {
        const id = boxes.alice!;
        const added = await t.api<unknown[]>('POST', `/api/v1/instances/${id}/services`, { token: lab.tokens.alice, body: { port: 9000, name: 'vLLM' } });
        expect(added.status).toBe(201);
        expect(added.body).toContainEqual({ port: 9000, name: 'vLLM', protocol: 'http', source: 'instance' });
        const again = await t.api<{ error: { code: string } }>('POST', `/api/v1/instances/${id}/services`, { token: lab.tokens.alice, body: { port: 8888, name: 'x' } });
        expect([again.status, again.body.error.code]).toEqual([409, 'PORT_DECLARED']);
        const imagePort = await t.api<{ error: { code: string } }>('DELETE', `/api/v1/instances/${id}/services/8888`, { token: lab.tokens.alice });
        expect([imagePort.status, imagePort.body.error.code]).toEqual([409, 'IMAGE_PORT']);
        for (const body of [{ port: 70_000, name: 'x' }, { port: 0, name: 'x' }, { port: 8080, name: '' }, { port: 8080, name: 'x', protocol: 'udp' }, { port: 8080, name: 'x', extra: 1 }]) {
          expect((await t.api('POST', `/api/v1/instances/${id}/services`, { token: lab.tokens.alice, body })).status, JSON.stringify(body)).toBe(400);
        }
        expect((await t.api('DELETE', `/api/v1/instances/${id}/services/abc`, { token: lab.tokens.alice })).status).toBe(400);
        expect((await t.api('POST', `/api/v1/instances/${id}/services`, { token: lab.tokens.bob, body: { port: 9001, name: 'x' } })).status).toBe(404);
        // up to eight of its own (Gradio and vLLM are two)
        for (let p = 9001; p <= 9006; p++) {
          expect((await t.api('POST', `/api/v1/instances/${id}/services`, { token: lab.tokens.alice, body: { port: p, name: `app ${p}` } })).status).toBe(201);
        }
        const tooMany = await t.api<{ error: { code: string } }>('POST', `/api/v1/instances/${id}/services`, { token: lab.tokens.alice, body: { port: 9007, name: 'x' } });
        expect([tooMany.status, tooMany.body.error.code]).toEqual([409, 'TOO_MANY_PORTS']);
        // a port that was opened holds a platform port until it is removed
        const opened = await linkFor(lab.tokens.alice!, id, 9000, 'port');
        for (let p = 9000; p <= 9006; p++) expect((await t.api('DELETE', `/api/v1/instances/${id}/services/${p}`, { token: lab.tokens.alice })).status).toBe(204);
        expect(code(await raw(opened.place.port, 'GET', '/', { headers: { authorization: `Bearer ${lab.tokens.alice}` } }))).toEqual([404, 'NOT_FOUND']);
        const history = await t.api<{ summary: string }[]>('GET', `/api/v1/instances/${id}/history`, { token: lab.tokens.alice });
        expect(history.body.map((h) => h.summary)).toContain('service port 9000 (vLLM, http) added');
        expect(history.body.map((h) => h.summary)).toContain('service port 9000 removed');
        // a port the image declares cannot be given again at creation
        const clash = await t.api<{ error: { fields: Record<string, string> } }>('POST', '/api/v1/instances', {
          token: lab.tokens.alice, body: { name: 'clash', imageId, specId: lab.specId, servicePorts: [{ port: 8888, name: 'mine' }] },
        });
        expect(clash.status).toBe(400);
        expect(clash.body.error.fields.servicePorts).toMatch(/8888/);
      });
    });

    describe('the proxy', () => {
      it('serves no service on the console\'s origin: the old path form reaches nothing of the tenant\'s', async () => {
        for (const path of [`/svc/${boxes.alice}/8888/`, `/svc/${boxes.alice}/8888/sw.js`, `/svc/${boxes.alice}/8888/api/kernels`]) {
          const answer = await raw(port, 'GET', path, { headers: { authorization: `Bearer ${lab.tokens.alice}` } });
          expect(answer.body.toString(), path).not.toContain('x-tianqi-user');
          expect(answer.body.toString(), path).not.toContain('fetch');
          expect(answer.headers['service-worker-allowed']).toBeUndefined();
        }
        await expect(RawWebSocket.open(port, `/svc/${boxes.alice}/8888/ws`, { authorization: `Bearer ${lab.tokens.alice}` })).rejects.toThrow(/404/);
      });

      it('opens a service at / on a port of its own: the ticket is good once and becomes a cookie for that service only; no platform credential reaches it', async () => {
        const { cookie, answer, link, place } = await signIn(lab.tokens.alice!, boxes.alice!, 8888);
        expect(link.form).toBe('port');
        expect(link.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/\?tianqi_ticket=/);
        const { min, max } = t.app.config.services.ports!;
        expect(place.port).toBeGreaterThanOrEqual(min);
        expect(place.port).toBeLessThanOrEqual(max);
        expect(answer.headers.location).toBe('/');
        const set = cookiesOf(answer).find((c) => c.startsWith(`tianqi_service_${place.port}=`))!;
        expect(set).toMatch(/; Path=\/;/);
        expect(set).toMatch(/HttpOnly/);
        expect(set).toMatch(/SameSite=Lax/);
        expect(set).not.toMatch(/Domain/i);
        // the first time this browser meets this port's service, what an earlier one left there goes
        expect(answer.headers['clear-site-data']).toBe('"cache", "storage"');
        const marker = cookiesOf(answer).find((c) => c.startsWith(`tianqi_origin_${place.port}=`))!.split(';')[0]!;
        // a second redemption of the same ticket, by anyone, is refused
        const again = await raw(place.port, 'GET', `/?tianqi_ticket=${link.url.split('tianqi_ticket=')[1]}`, { headers: { host: place.host } });
        expect(code(again)).toEqual([401, 'LINK_EXPIRED']);
        // a later link for the same service: the same port, and no wiping of what it keeps
        const later = await signIn(lab.tokens.alice!, boxes.alice!, 8888);
        expect(later.place.port).toBe(place.port);
        const next = await linkFor(lab.tokens.alice!, boxes.alice!, 8888, 'port');
        const kept = await raw(place.port, 'GET', `/?${next.url.search.slice(1)}`, { headers: { host: place.host, cookie: marker } });
        expect(kept.headers['clear-site-data']).toBeUndefined();
        const echo = json<Echo>(await through(place, '/lab/tree?file=a.ipynb', `${cookie}; theme=dark; ${marker}; tianqi_anything=1`, {
          authorization: `Bearer ${lab.tokens.alice}`, 'x-tianqi-user': 'admin',
        }));
        expect(echo.port).toBe(8888);
        // the service sits at / of its origin: no prefix passed on
        expect(echo.url).toBe('/lab/tree?file=a.ipynb');
        expect(echo.headers.cookie).toBe('theme=dark');
        expect(echo.headers.authorization).toBeUndefined();
        expect(echo.headers['x-forwarded-prefix']).toBeUndefined();
        expect(echo.headers['x-tianqi-user']).toBe('alice');
        // another service of the same instance has a port of its own; the cookie does not open it
        const tensorboard = await linkFor(lab.tokens.alice!, boxes.alice!, 6006, 'port');
        expect(tensorboard.place.port).not.toBe(place.port);
        expect((await raw(tensorboard.place.port, 'GET', '/', { headers: { cookie } })).status).toBe(401);
      });

      it('binds a ticket to its form and service: a port-form ticket opens nothing in the host form, nor on another port', async () => {
        const portLink = await linkFor(lab.tokens.alice!, boxes.alice!, 8888, 'port');
        const ticket = portLink.url.searchParams.get('tianqi_ticket')!;
        const host = hostForm(boxes.alice!, 8888);
        expect(code(await raw(port, 'GET', `/?tianqi_ticket=${ticket}`, { headers: { host: host.host } }))).toEqual([401, 'LINK_EXPIRED']);
        const other = await linkFor(lab.tokens.alice!, boxes.alice!, 6006, 'port');
        expect(code(await raw(other.place.port, 'GET', `/?tianqi_ticket=${ticket}`))).toEqual([401, 'LINK_EXPIRED']);
        const hostLink = await linkFor(lab.tokens.alice!, boxes.alice!, 8888, 'host');
        expect(code(await raw(portLink.place.port, 'GET', `/?tianqi_ticket=${hostLink.url.searchParams.get('tianqi_ticket')}`))).toEqual([401, 'LINK_EXPIRED']);
        // the port-form ticket was not used up by those tries
        expect((await raw(portLink.place.port, 'GET', `/?tianqi_ticket=${ticket}`)).status).toBe(303);
      });

      it('refuses what a page of another origin sends with the user\'s cookie: changes and WebSockets (services of one host are one site)', async () => {
        const { cookie, place } = await signIn(lab.tokens.alice!, boxes.alice!, 8888);
        const other = await linkFor(lab.tokens.alice!, boxes.alice!, 6006, 'port');
        const own = `http://${place.host}`;
        const hostile = `http://${other.place.host}`;
        const post = (origin: string | undefined, headers: Record<string, string> = { cookie }) =>
          raw(place.port, 'POST', '/api/contents', { headers: { host: place.host, ...headers, ...(origin ? { origin } : {}), 'content-type': 'application/x-www-form-urlencoded' }, body: '_xsrf=tossed' });
        expect(code(await post(hostile))).toEqual([403, 'CROSS_ORIGIN']);
        expect(code(await post('null'))).toEqual([403, 'CROSS_ORIGIN']);
        expect(json<Echo>(await post(own)).method).toBe('POST');
        // a form from the service itself, and a script with a bearer token (no browser attaches that), pass
        expect(json<Echo>(await post(undefined)).method).toBe('POST');
        expect(json<Echo>(await post(hostile, { authorization: `Bearer ${lab.tokens.alice}` })).method).toBe('POST');
        // reading stays open to links from elsewhere
        expect((await through(place, '/tree', cookie, { origin: hostile })).status).toBe(200);
        await expect(RawWebSocket.open(place.port, '/api/kernels/1/channels', { cookie, origin: hostile })).rejects.toThrow(/403/);
        const ws = await RawWebSocket.open(place.port, '/api/kernels/1/channels', { cookie, origin: own });
        ws.close();
      });

      it('reaches a service on the container\'s loopback only (through the engine) and a platform token works for scripts', async () => {
        const { place } = await linkFor(lab.tokens.alice!, boxes.alice!, 6006, 'port');
        const echo = json<Echo>(await raw(place.port, 'GET', '/data/plugins', { headers: { authorization: `Bearer ${lab.tokens.alice}` } }));
        expect(echo.port).toBe(6006);
        // reached from inside the container
        expect(echo.remote).toBe('127.0.0.1');
        expect(echo.headers.authorization).toBeUndefined();
      });

      it('reaches a service that starts late on its own address, not through the engine: a refusal while it starts is not held against it', async () => {
        // The proxy's fast path (a TCP connection to the container's address) against the engine's
        // exec stream is 5-10 times the throughput: a service that once refused (the console's check
        // while the app starts) must not go the slow way once it listens (issue 27).
        const id = boxes.alice!;
        const bearer = { authorization: `Bearer ${lab.tokens.alice}` };
        expect((await t.api('POST', `/api/v1/instances/${id}/services`, { token: lab.tokens.alice, body: { port: 7007, name: 'late app' } })).status).toBe(201);
        try {
          const late = await linkFor(lab.tokens.alice!, id, 7007, 'port');
          expect(code(await raw(late.place.port, 'GET', '/', { headers: bearer }))).toEqual([502, 'SERVICE_UNREACHABLE']);
          const listed = await t.api<Service[]>('GET', `/api/v1/instances/${id}/services`, { token: lab.tokens.alice });
          expect(listed.body.find((s) => s.port === 7007)?.listening).toBe(false);
          const main = await linkFor(lab.tokens.alice!, id, 8888, 'port');
          expect((await raw(main.place.port, 'GET', '/listen?port=7007', { headers: bearer })).status).toBe(200);
          for (let i = 0; i < 3; i++) {
            const echo = json<Echo>(await raw(late.place.port, 'GET', '/', { headers: bearer }));
            expect(echo.port).toBe(7007);
            // the container's bridge gateway: this host, straight in
            expect(echo.remote).not.toMatch(/^127\./);
          }
        } finally {
          await t.api('DELETE', `/api/v1/instances/${id}/services/7007`, { token: lab.tokens.alice });
        }
      });

      it('never passes on a platform token, whatever its state: expired, of a disabled user, with a cookie beside it', async () => {
        const { cookie, place } = await signIn(lab.tokens.alice!, boxes.alice!, 8888);
        const tokens = (t.app.accounts as unknown as { tokens: { issue(u: string, p: string, now: number): string } }).tokens;
        const me = await t.api<{ id: string; passwordChangedAt: string }>('GET', '/api/v1/auth/me', { token: lab.tokens.alice });
        const expired = tokens.issue(me.body.id, me.body.passwordChangedAt ?? '', Date.now() - 13 * 3600_000);
        for (const bearer of [expired, lab.tokens.bob!, lab.admin]) {
          const echo = json<Echo>(await through(place, '/', cookie, { authorization: `Bearer ${bearer}` }));
          expect(echo.headers.authorization).toBeUndefined();
        }
        // the service's own bearer tokens pass
        expect(json<Echo>(await through(place, '/', cookie, { authorization: 'Bearer service-own-token' })).headers.authorization).toBe('Bearer service-own-token');
      });

      it('lets the owner and admins through, each on an origin of its own; other users\' cookies and tokens get nothing', async () => {
        const alice = await signIn(lab.tokens.alice!, boxes.alice!, 8888);
        const bob = await signIn(lab.tokens.bob!, boxes.bob!, 8888);
        expect(bob.place.port).not.toBe(alice.place.port);
        // bob's token and bob's cookie on alice's service; alice's cookie moved to bob's
        expect((await raw(alice.place.port, 'GET', '/', { headers: { authorization: `Bearer ${lab.tokens.bob}` } })).status).toBe(404);
        expect((await through(alice.place, '/', bob.cookie.replace(`_${bob.place.port}=`, `_${alice.place.port}=`))).status).toBe(401);
        expect((await through(bob.place, '/', alice.cookie.replace(`_${alice.place.port}=`, `_${bob.place.port}=`))).status).toBe(401);
        expect((await t.api('POST', `/api/v1/instances/${boxes.bob}/services/8888/link`, { token: lab.tokens.alice })).status).toBe(404);
        // no credentials: a JSON error for scripts, a page for browsers
        const none = await raw(alice.place.port, 'GET', '/');
        expect(code(none)).toEqual([401, 'UNAUTHORIZED']);
        const page = await raw(alice.place.port, 'GET', '/', { headers: { accept: 'text/html' } });
        expect(page.status).toBe(401);
        expect(page.body.toString()).toContain('请从控制台打开此服务');
        // a forged ticket (a cookie's value) is no ticket
        const forged = await raw(alice.place.port, 'GET', `/?tianqi_ticket=${alice.cookie.split('=')[1]}`);
        expect(code(forged)).toEqual([401, 'LINK_EXPIRED']);
        // an admin, in either form
        const admin = await signIn(lab.admin, boxes.alice!, 8888, 'host');
        expect(admin.link.url).toMatch(new RegExp(`^http://8888-${boxes.alice}\\.svc\\.localhost:${port}/\\?tianqi_ticket=`));
        const echo = json<Echo>(await through(admin.place, '/tree', admin.cookie));
        expect([echo.port, echo.url, echo.headers['x-tianqi-user']]).toEqual([8888, '/tree', 'admin']);
        const adminPort = await signIn(lab.admin, boxes.alice!, 8888, 'port');
        expect(json<Echo>(await through(adminPort.place, '/', adminPort.cookie)).headers['x-tianqi-user']).toBe('admin');
        // the host form's cookie is no good for another service's host
        expect((await through(hostForm(boxes.alice!, 6006), '/', admin.cookie)).status).toBe(401);
      });

      it('holds each service\'s cookies to it: no Domain, no platform cookie planted, HttpOnly ones kept from other services', async () => {
        const { cookie, place } = await signIn(lab.tokens.alice!, boxes.alice!, 8888);
        const set = cookiesOf(await through(place, '/cookies', cookie));
        expect(set).toEqual([`__tq${place.port}_app=1; Path=/; HttpOnly`, 'deep=2; Path=/lab', '_xsrf=x1; Path=/']);
        // the service sees its own HttpOnly cookie under its own name, and none held for another port
        const echo = json<Echo>(await through(place, '/', `${cookie}; __tq${place.port}_app=1; __tq1_sid=other; _xsrf=x1`));
        expect(echo.headers.cookie).toBe('app=1; _xsrf=x1');
        // a planted proxy cookie beside the real one does not lock the user out
        expect((await through(place, '/', `tianqi_service_${place.port}=planted; ${cookie}; tianqi_service_${place.port}=junk.x`)).status).toBe(200);
        // what a service may not tell the browser
        const sw = await through(place, '/sw.js', cookie);
        expect(sw.status).toBe(200);
        expect(sw.headers['service-worker-allowed']).toBeUndefined();
        expect(sw.headers['clear-site-data']).toBeUndefined();
        expect(sw.headers['strict-transport-security']).toBeUndefined();
        expect((await through(place, '/redirect-self', cookie)).headers.location).toBe('/lab?x=1');
        expect((await through(place, '/redirect-root', cookie)).headers.location).toBe('/login');
        expect((await through(place, '/redirect-away', cookie)).headers.location).toBe('https://example.org/elsewhere');
      });

      it('answers clearly for an undeclared port, a tcp port, nothing listening, a hang, a reset, and a platform port no service holds', async () => {
        const { cookie, place } = await signIn(lab.tokens.alice!, boxes.alice!, 8888);
        const token = { authorization: `Bearer ${lab.tokens.alice}` };
        const host = (p: number) => ({ ...token, host: `${p}-${boxes.alice}.${DOMAIN}` });
        expect(code(await raw(port, 'GET', '/', { headers: host(9999) }))).toEqual([404, 'NOT_FOUND']);
        expect(code(await raw(port, 'GET', '/', { headers: host(5432) }))).toEqual([409, 'NOT_HTTP']);
        const gradio = await linkFor(lab.tokens.alice!, boxes.alice!, 7860, 'port');
        expect(code(await raw(gradio.place.port, 'GET', '/', { headers: token }))).toEqual([502, 'SERVICE_UNREACHABLE']);
        expect(code(await through(place, '/reset', cookie))).toEqual([502, 'SERVICE_UNREACHABLE']);
        // what is not HTTP is never passed on; an answer cut short reaches the browser cut, not as whole
        const notHttp = await through(place, '/not-http', cookie);
        expect(code(notHttp)).toEqual([502, 'SERVICE_UNREACHABLE']);
        expect(json<{ error: { message: string } }>(notHttp).error.message).toMatch(/did not answer in HTTP/);
        await expect(through(place, '/cut', cookie)).rejects.toThrow(/cut off|socket hang up|aborted/);
        const started = Date.now();
        expect(code(await through(place, '/hang', cookie))).toEqual([504, 'SERVICE_TIMEOUT']);
        expect(Date.now() - started).toBeLessThan(10_000);
        const { min, max } = t.app.config.services.ports!;
        const origins = t.app.readStore.collection('service_origins');
        let free: number | undefined;
        for (let p = min; p <= max && free === undefined; p++) if (!(await origins.get(String(p)))) free = p;
        expect(code(await raw(free!, 'GET', '/', { headers: token }))).toEqual([404, 'NOT_FOUND']);
        // after all of that the service still answers
        expect(json<Echo>(await through(place, '/', cookie)).port).toBe(8888);
      });

      it('keeps its connections to the service open between requests, and passes on HEAD, chunked answers and a service closing one', async () => {
        const { cookie, place } = await signIn(lab.tokens.alice!, boxes.alice!, 8888);
        const first = json<Echo>(await through(place, '/', cookie));
        const second = json<Echo>(await through(place, '/', cookie));
        // the same connection carried both: the service saw one client port
        expect(second.remotePort).toBe(first.remotePort);
        const head = await raw(place.port, 'HEAD', '/bytes?n=1000', { headers: { host: place.host, cookie } });
        expect([head.status, head.headers['content-length'], head.body.length]).toEqual([200, '1000', 0]);
        const chunked = await through(place, '/chunked', cookie);
        expect([chunked.status, chunked.headers['transfer-encoding'], chunked.body.toString()]).toEqual([200, 'chunked', 'part 0\npart 1\npart 2\npart 3\npart 4\n']);
        // a service that closes a kept-alive connection right after its answer: the next request still gets through
        for (let i = 0; i < 5; i++) {
          expect((await through(place, '/then-close', cookie)).body.toString()).toBe('bye');
          expect(json<Echo>(await through(place, '/', cookie)).port).toBe(8888);
        }
      });

      it('streams 100 MB down and a 1 GB upload up byte-exact, without holding either in memory', async () => {
        const { cookie, place } = await signIn(lab.tokens.alice!, boxes.alice!, 8888);
        const down = await through(place, `/bytes?n=${100 * MB}`, cookie);
        expect(down.status).toBe(200);
        expect(down.body.length).toBe(100 * MB);
        const chunk = Buffer.alloc(4 * MB, 7);
        const hash = createHash('sha256');
        for (let i = 0; i < 256; i++) hash.update(chunk);
        const before = process.memoryUsage().rss;
        let peak = before;
        const body = Readable.from((function* () {
          for (let i = 0; i < 256; i++) {
            peak = Math.max(peak, process.memoryUsage().rss);
            yield chunk;
          }
        })());
        const up = await raw(place.port, 'POST', '/upload', { headers: { cookie, 'content-type': 'application/octet-stream' }, body, timeoutMs: 120_000 });
        expect(up.status).toBe(200);
        expect(json(up)).toEqual({ bytes: 1024 * MB, sha256: hash.digest('hex') });
        expect(peak - before).toBeLessThan(256 * MB);
      }, 180_000);

      it('joins WebSockets (Jupyter kernels, Gradio queues) in both forms, on a direct and a loopback-only port, signed in only', async () => {
        const { cookie, place } = await signIn(lab.tokens.alice!, boxes.alice!, 8888);
        const ws = await RawWebSocket.open(place.port, '/api/kernels/1/channels', { cookie, origin: `http://127.0.0.1:${place.port}` });
        ws.send('{"msg_type":"execute_request","code":"print(显存)"}');
        expect((await ws.next()).toString()).toBe('{"msg_type":"execute_request","code":"print(显存)"}');
        const big = Buffer.alloc(300_000, 3);
        ws.send(big);
        expect((await ws.next()).equals(big)).toBe(true);
        ws.close();
        const admin = await signIn(lab.admin, boxes.alice!, 8888, 'host');
        const hosted = await RawWebSocket.open(port, '/api/kernels/1/channels', {
          host: admin.place.host, cookie: admin.cookie, origin: `http://${admin.place.host}`,
          'sec-websocket-extensions': 'permessage-deflate; client_max_window_bits', 'user-agent': 'Mozilla/5.0', pragma: 'no-cache', 'cache-control': 'no-cache',
        });
        hosted.send('host form');
        expect((await hosted.next()).toString()).toBe('host form');
        hosted.close();
        const tb = await linkFor(lab.tokens.alice!, boxes.alice!, 6006, 'port');
        const loopback = await RawWebSocket.open(tb.place.port, '/ws', { authorization: `Bearer ${lab.tokens.alice}` });
        loopback.send('tensorboard');
        expect((await loopback.next()).toString()).toBe('tensorboard');
        loopback.close();
        await expect(RawWebSocket.open(place.port, '/ws')).rejects.toThrow(/401/);
        await expect(RawWebSocket.open(place.port, '/ws', { authorization: `Bearer ${lab.tokens.bob}` })).rejects.toThrow(/404/);
        // socket.io still has its own upgrades
        expect((await raw(port, 'GET', '/socket.io/?EIO=4&transport=polling')).status).toBe(200);
      });
    });
  },
);

