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

interface Service { port: number; name: string; protocol: string; source: string; path: string | null; hostUrl: string | null; listening: boolean | null }
interface Echo { port: number; method: string; url: string; headers: Record<string, string> }

const cookieOf = (answer: RawAnswer) => String(answer.headers['set-cookie']?.[0] ?? '').split(';')[0]!;

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
    /** A signed-in cookie for a service, the way the console's button gets one: link, then its ticket. */
    const signIn = async (token: string, id: string, servicePort: number, host?: string) => {
      const link = await t.api<{ url: string; form: string }>('POST', `/api/v1/instances/${id}/services/${servicePort}/link${host ? '' : '?form=path'}`, { token });
      expect(link.status, JSON.stringify(link.body)).toBe(200);
      const url = new URL(link.body.url, t.url);
      const answer = await raw(port, 'GET', `${url.pathname}${url.search}`, { headers: host ? { host } : {} });
      expect(answer.status).toBe(303);
      return { cookie: cookieOf(answer), answer, link: link.body };
    };
    const through = (path: string, cookie: string, headers: Record<string, string> = {}) => raw(port, 'GET', path, { headers: { cookie, ...headers } });

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
      it('shows the image\'s ports and the instance\'s own, with links and whether each listens', async () => {
        const services = await t.api<Service[]>('GET', `/api/v1/instances/${boxes.alice}/services`, { token: lab.tokens.alice });
        expect(services.status).toBe(200);
        expect(services.body.map((s) => [s.port, s.name, s.protocol, s.source, s.listening])).toEqual([
          [8888, 'JupyterLab', 'http', 'image', true],
          [6006, 'TensorBoard', 'http', 'image', true],
          [5432, 'Postgres', 'tcp', 'image', false],
          [7860, 'Gradio', 'http', 'instance', false],
        ]);
        const jupyter = services.body[0]!;
        expect(jupyter.path).toBe(`/svc/${boxes.alice}/8888/`);
        expect(jupyter.hostUrl).toBe(`http://8888-${boxes.alice}.${DOMAIN}:${port}/`);
        expect(services.body[2]!.path).toBeNull();
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
        for (let p = 9000; p <= 9006; p++) expect((await t.api('DELETE', `/api/v1/instances/${id}/services/${p}`, { token: lab.tokens.alice })).status).toBe(204);
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
      it('opens a service from a link: the ticket becomes a cookie for that service only, and neither it nor the token reaches the service', async () => {
        const { cookie, answer } = await signIn(lab.tokens.alice!, boxes.alice!, 8888);
        expect(answer.headers.location).toBe(`/svc/${boxes.alice}/8888/`);
        const set = String(answer.headers['set-cookie']);
        expect(set).toContain(`Path=/svc/${boxes.alice}/8888/`);
        expect(set).toMatch(/HttpOnly/);
        expect(set).toMatch(/SameSite=Lax/);
        const echo = json<Echo>(await through(`/svc/${boxes.alice}/8888/lab/tree?file=a.ipynb`, `${cookie}; theme=dark`, { authorization: `Bearer ${lab.tokens.alice}` }));
        expect(echo.port).toBe(8888);
        // the whole path, as a service with a base path expects it
        expect(echo.url).toBe(`/svc/${boxes.alice}/8888/lab/tree?file=a.ipynb`);
        expect(echo.headers.cookie).toBe('theme=dark');
        expect(echo.headers.authorization).toBeUndefined();
        expect(echo.headers['x-forwarded-prefix']).toBe(`/svc/${boxes.alice}/8888`);
        expect(echo.headers['x-tianqi-user']).toBe('alice');
        // the same cookie does not open another port of the same instance
        expect((await through(`/svc/${boxes.alice}/6006/`, cookie)).status).toBe(401);
        // the base path without its slash moves to it
        const bare = await through(`/svc/${boxes.alice}/8888`, cookie);
        expect([bare.status, bare.headers.location]).toEqual([308, `/svc/${boxes.alice}/8888/`]);
      });

      it('reaches a service on the container\'s loopback only (through the engine) and a platform token works for scripts', async () => {
        const echo = json<Echo>(await raw(port, 'GET', `/svc/${boxes.alice}/6006/data/plugins`, { headers: { authorization: `Bearer ${lab.tokens.alice}` } }));
        expect(echo.port).toBe(6006);
        expect(echo.headers.authorization).toBeUndefined();
      });

      it('lets only the owner through; admins only in the host form; other users\' cookies and tokens get nothing', async () => {
        const alice = await signIn(lab.tokens.alice!, boxes.alice!, 8888);
        const bob = await signIn(lab.tokens.bob!, boxes.bob!, 8888);
        // bob's token and bob's cookie on alice's instance; alice's cookie moved to bob's
        expect((await raw(port, 'GET', `/svc/${boxes.alice}/8888/`, { headers: { authorization: `Bearer ${lab.tokens.bob}` } })).status).toBe(404);
        expect((await through(`/svc/${boxes.alice}/8888/`, bob.cookie)).status).toBe(401);
        expect((await through(`/svc/${boxes.bob}/8888/`, alice.cookie)).status).toBe(401);
        const linkForBob = await t.api('POST', `/api/v1/instances/${boxes.bob}/services/8888/link`, { token: lab.tokens.alice });
        expect(linkForBob.status).toBe(404);
        const adminPathLink = await t.api<{ error: { code: string } }>('POST', `/api/v1/instances/${boxes.alice}/services/8888/link?form=path`, { token: lab.admin });
        expect([adminPathLink.status, adminPathLink.body.error.code]).toEqual([403, 'HOST_FORM_ONLY']);
        // no credentials: a JSON error for scripts, a page for browsers
        const none = await raw(port, 'GET', `/svc/${boxes.alice}/8888/`);
        expect([none.status, json<{ error: { code: string } }>(none).error.code]).toEqual([401, 'UNAUTHORIZED']);
        const page = await raw(port, 'GET', `/svc/${boxes.alice}/8888/`, { headers: { accept: 'text/html' } });
        expect(page.status).toBe(401);
        expect(page.body.toString()).toContain('请从控制台打开此服务');
        // a forged or stale ticket
        const forged = await raw(port, 'GET', `/svc/${boxes.alice}/8888/?tianqi_ticket=${alice.cookie.split('=')[1]}`);
        expect([forged.status, json<{ error: { code: string } }>(forged).error.code]).toEqual([401, 'LINK_EXPIRED']);
        // an admin is sent to the host form, where the service has an origin of its own
        const admin = await signIn(lab.admin, boxes.alice!, 8888, `8888-${boxes.alice}.${DOMAIN}:${port}`);
        expect(admin.link.form).toBe('host');
        expect(admin.link.url).toMatch(new RegExp(`^http://8888-${boxes.alice}\\.svc\\.localhost:${port}/\\?tianqi_ticket=`));
        expect(String(admin.answer.headers['set-cookie'])).toMatch(/Path=\/;/);
        const echo = json<Echo>(await through('/tree', admin.cookie, { host: `8888-${boxes.alice}.${DOMAIN}:${port}` }));
        expect([echo.port, echo.url, echo.headers['x-tianqi-user']]).toEqual([8888, '/tree', 'admin']);
        const inPath = await raw(port, 'GET', `/svc/${boxes.alice}/8888/`, { headers: { authorization: `Bearer ${lab.admin}` } });
        expect([inPath.status, json<{ error: { code: string } }>(inPath).error.code]).toEqual([403, 'HOST_FORM_ONLY']);
        // the host form's cookie is no good for another service's host
        expect((await through('/', admin.cookie, { host: `6006-${boxes.alice}.${DOMAIN}` })).status).toBe(401);
      });

      it('holds the service\'s cookies to its own prefix and keeps its redirects to itself here', async () => {
        const { cookie } = await signIn(lab.tokens.alice!, boxes.alice!, 8888);
        const prefix = `/svc/${boxes.alice}/8888`;
        const cookies = (await through(`${prefix}/cookies`, cookie)).headers['set-cookie'];
        expect(cookies).toEqual([`app=1; Path=${prefix}/; HttpOnly`, `deep=2; Path=${prefix}/lab`]);
        expect((await through(`${prefix}/redirect-self`, cookie)).headers.location).toBe(`${prefix}/lab?x=1`);
        expect((await through(`${prefix}/redirect-root`, cookie)).headers.location).toBe(`${prefix}/login`);
        expect((await through(`${prefix}/redirect-away`, cookie)).headers.location).toBe('https://example.org/elsewhere');
      });

      it('answers clearly for an undeclared port, a tcp port, nothing listening, a hang, a reset and a stopped instance', async () => {
        const { cookie } = await signIn(lab.tokens.alice!, boxes.alice!, 8888);
        const code = (a: RawAnswer) => [a.status, json<{ error: { code: string } }>(a).error.code];
        const token = { authorization: `Bearer ${lab.tokens.alice}` };
        expect(code(await raw(port, 'GET', `/svc/${boxes.alice}/9999/`, { headers: token }))).toEqual([404, 'SERVICE_NOT_FOUND']);
        expect(code(await raw(port, 'GET', `/svc/${boxes.alice}/5432/`, { headers: token }))).toEqual([409, 'NOT_HTTP']);
        expect(code(await raw(port, 'GET', `/svc/${boxes.alice}/7860/`, { headers: token }))).toEqual([502, 'SERVICE_UNREACHABLE']);
        expect(code(await through(`/svc/${boxes.alice}/8888/reset`, cookie))).toEqual([502, 'SERVICE_UNREACHABLE']);
        const started = Date.now();
        expect(code(await through(`/svc/${boxes.alice}/8888/hang`, cookie))).toEqual([504, 'SERVICE_TIMEOUT']);
        expect(Date.now() - started).toBeLessThan(10_000);
        // not an instance id at all, or a port beyond 65535: not the proxy's, the console's 404 or page
        expect((await raw(port, 'GET', `/svc/${boxes.alice}/70000/`, { headers: token })).headers['content-type']).not.toMatch(/json/);
        // after all of that the service still answers
        expect(json<Echo>(await through(`/svc/${boxes.alice}/8888/`, cookie)).port).toBe(8888);
      });

      it('streams 100 MB down and a 1 GB upload up byte-exact, without holding either in memory', async () => {
        const { cookie } = await signIn(lab.tokens.alice!, boxes.alice!, 8888);
        const down = await through(`/svc/${boxes.alice}/8888/bytes?n=${100 * MB}`, cookie);
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
        const up = await raw(port, 'POST', `/svc/${boxes.alice}/8888/upload`, { headers: { cookie, 'content-type': 'application/octet-stream' }, body, timeoutMs: 120_000 });
        expect(up.status).toBe(200);
        expect(json(up)).toEqual({ bytes: 1024 * MB, sha256: hash.digest('hex') });
        expect(peak - before).toBeLessThan(256 * MB);
      }, 180_000);

      it('joins WebSockets (Jupyter kernels, Gradio queues) on a direct and a loopback-only port, signed in only', async () => {
        const { cookie } = await signIn(lab.tokens.alice!, boxes.alice!, 8888);
        const ws = await RawWebSocket.open(port, `/svc/${boxes.alice}/8888/api/kernels/1/channels`, { cookie, origin: `http://127.0.0.1:${port}` });
        ws.send('{"msg_type":"execute_request","code":"print(显存)"}');
        expect((await ws.next()).toString()).toBe('{"msg_type":"execute_request","code":"print(显存)"}');
        const big = Buffer.alloc(300_000, 3);
        ws.send(big);
        const echoed: Buffer[] = [await ws.next()];
        expect(Buffer.concat(echoed).equals(big)).toBe(true);
        ws.close();
        const admin = await signIn(lab.admin, boxes.alice!, 8888, `8888-${boxes.alice}.${DOMAIN}:${port}`);
        const hosted = await RawWebSocket.open(port, '/api/kernels/1/channels', {
          host: `8888-${boxes.alice}.${DOMAIN}:${port}`, cookie: admin.cookie, origin: `http://8888-${boxes.alice}.${DOMAIN}:${port}`,
          'sec-websocket-extensions': 'permessage-deflate; client_max_window_bits', 'user-agent': 'Mozilla/5.0', pragma: 'no-cache', 'cache-control': 'no-cache',
        });
        hosted.send('host form');
        expect((await hosted.next()).toString()).toBe('host form');
        hosted.close();
        const loopback = await RawWebSocket.open(port, `/svc/${boxes.alice}/6006/ws`, { authorization: `Bearer ${lab.tokens.alice}` });
        loopback.send('tensorboard');
        expect((await loopback.next()).toString()).toBe('tensorboard');
        loopback.close();
        await expect(RawWebSocket.open(port, `/svc/${boxes.alice}/8888/ws`)).rejects.toThrow(/401/);
        await expect(RawWebSocket.open(port, `/svc/${boxes.alice}/8888/ws`, { authorization: `Bearer ${lab.tokens.bob}` })).rejects.toThrow(/404/);
        // socket.io still has its own upgrades
        const other = await raw(port, 'GET', '/socket.io/?EIO=4&transport=polling');
        expect(other.status).toBe(200);
      });

      it('refuses the next request once the user is disabled or the instance stops', async () => {
        const extra = await t.api<{ id: string }>('POST', '/api/v1/users', { token: lab.admin, body: { username: 'carol', password: 'carol-password' } });
        const carol = await t.login('carol', 'carol-password');
        lab.tokens.carol = carol;
        const id = await create('carol', 'short');
        expect((await running('carol', id)).status).toBe('running');
        await waitFor(() => t.api<Service[]>('GET', `/api/v1/instances/${id}/services`, { token: carol }).then((r) => r.body), (s) => s[0]!.listening === true, 30_000);
        const { cookie } = await signIn(carol, id, 8888);
        expect((await through(`/svc/${id}/8888/`, cookie)).status).toBe(200);
        expect((await t.api('POST', `/api/v1/instances/${id}/stop`, { token: carol })).status).toBe(200);
        const stopped = await through(`/svc/${id}/8888/`, cookie);
        expect([stopped.status, json<{ error: { code: string } }>(stopped).error.code]).toEqual([409, 'NOT_RUNNING']);
        expect((await t.api('POST', `/api/v1/instances/${id}/start`, { token: carol })).status).toBe(200);
        await waitFor(() => through(`/svc/${id}/8888/`, cookie), (a) => a.status === 200, 30_000);
        expect((await t.api('PATCH', `/api/v1/users/${extra.body.id}`, { token: lab.admin, body: { disabled: true } })).status).toBe(200);
        expect((await through(`/svc/${id}/8888/`, cookie)).status).toBe(401);
      }, 120_000);
    });
  },
);
