import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium, type Browser } from 'playwright-core';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.ts';
import { ADMIN_PASSWORD, startTestApp, type TestApp } from '../support/app.ts';
import { removeContainersOf, setUpLab, waitFor, type Lab } from '../support/fixtures.ts';
import { describeWithService } from '../support/services.ts';
import { ensureWebServiceImage } from '../support/test-image.ts';

/**
 * 自定义服务 in a real browser, on a platform with no settings for services (the default: the
 * port form): the console's "打开 JupyterLab" opens a real HTTP service in a container through the
 * proxy, signed in, on a port of its own; a WebSocket from that page echoes through it. Then the
 * page turns hostile — as a tenant's page sent to an admin would — and tries to reach the
 * console's sign-in, the API with the victim's credentials, a service worker over the console or
 * another service, and another service's content: every attempt fails.
 */
const CHROMIUM = process.env.TIANQI_TEST_CHROMIUM ?? '/usr/bin/chromium';
const socketPath = process.env.TIANQI_TEST_DOCKER_SOCKET;
const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const helperBuilt = existsSync(join(loadConfig({}).helperDir, 'linux-amd64', 'tianqi-helper'));

describeWithService(
  'Chromium, a Docker engine and a tianqi-helper build',
  Boolean(socketPath) && existsSync(CHROMIUM) && helperBuilt,
  'install Debian chromium (apt-get install chromium), set TIANQI_TEST_DOCKER_SOCKET and have Go on PATH (see .ci/run)',
  'service links in a real browser',
  () => {
    let t: TestApp;
    let lab: Lab;
    let browser: Browser;
    let instanceId: string;

    beforeAll(async () => {
      execFileSync(join(ROOT, 'node_modules/.bin/tsx'), ['scripts/build-ui.ts'], { cwd: ROOT, stdio: 'pipe' });
      t = await startTestApp({ TIANQI_POLL_INTERVAL_MS: '60000' });
      lab = await setUpLab(t, socketPath!, ['lisi']);
      const image = await t.api<{ id: string }>('POST', '/api/v1/images', {
        token: lab.admin, body: { name: 'notebook', address: ensureWebServiceImage(socketPath), ports: [{ port: 8888, name: 'JupyterLab' }, { port: 6006, name: 'TensorBoard' }] },
      });
      const created = await t.api<{ id: string }>('POST', '/api/v1/instances', { token: lab.tokens.lisi, body: { name: 'notebook', imageId: image.body.id, specId: lab.specId } });
      instanceId = created.body.id;
      await waitFor(() => t.api<{ listening: boolean }[]>('GET', `/api/v1/instances/${instanceId}/services`, { token: lab.tokens.lisi }).then((r) => r.body),
        (s) => Array.isArray(s) && s.length === 2 && s.every((x) => x.listening), 90_000);
      browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking'] });
    }, 240_000);

    afterAll(async () => {
      await browser?.close();
      await removeContainersOf(t, socketPath);
      await t?.stop();
    });

    it('opens JupyterLab from its tile, signed in, on a port of its own; a WebSocket from the page echoes; a stranger gets the sign-in page', async () => {
      const context = await browser.newContext({ locale: 'zh-CN' });
      const page = await context.newPage();
      page.setDefaultTimeout(20_000);
      const problems: string[] = [];
      page.on('pageerror', (err) => problems.push(err.message));
      await page.goto(`${t.url}/login`);
      await page.locator('[data-test="login-username"]').fill('lisi');
      await page.locator('[data-test="login-password"]').fill('lisi-password');
      await page.locator('[data-test="login-submit"]').click();
      await page.waitForURL(/\/instances$/);
      // the tab is in the address and survives a reload
      await page.goto(`${t.url}/instances/${instanceId}?tab=services`);
      await page.reload();
      const tile = page.locator('[data-test="service-8888"]');
      await expect.poll(() => tile.locator('[data-test="service-listening"]').count()).toBe(1);
      expect(await tile.textContent()).toContain('打开 JupyterLab');
      const [service] = await Promise.all([context.waitForEvent('page'), tile.locator('[data-test="service-open"]').click()]);
      // about:blank first (opened at the click), then the link, then the service without the ticket
      await service.waitForURL((u) => u.protocol === 'http:' && u.search === '' && u.port !== String(t.app.httpPort));
      await service.waitForLoadState('load');
      const url = new URL(service.url());
      const { min, max } = t.app.config.services.ports!;
      expect(Number(url.port)).toBeGreaterThanOrEqual(min);
      expect(Number(url.port)).toBeLessThanOrEqual(max);
      expect(url.pathname).toBe('/');
      const echo = JSON.parse(await service.locator('body').innerText()) as { port: number; url: string; headers: Record<string, string> };
      expect([echo.port, echo.url]).toEqual([8888, '/']);
      expect(echo.headers['x-tianqi-user']).toBe('lisi');
      expect(echo.headers.cookie).toBeUndefined();
      const reply = await service.evaluate(`new Promise((resolve, reject) => {
        const ws = new WebSocket(location.origin.replace('http', 'ws') + '/api/kernels/1/channels');
        ws.onopen = () => ws.send('执行 print(1)');
        ws.onmessage = (m) => resolve(String(m.data));
        ws.onerror = () => reject(new Error('WebSocket failed'));
      })`);
      expect(reply).toBe('执行 print(1)');
      // the tile now shows where the service lives
      await expect.poll(() => tile.textContent()).toContain(url.port);
      // another browser (not signed in) gets the sign-in page, not the service
      const stranger = await (await browser.newContext()).newPage();
      const answer = await stranger.goto(url.toString());
      expect(answer?.status()).toBe(401);
      expect(await stranger.locator('h1').textContent()).toContain('请从控制台打开此服务');
      expect(problems).toEqual([]);
      await context.close();
    }, 120_000);

    it('a hostile service page opened by an admin reaches neither the console nor another service', async () => {
      const context = await browser.newContext({ locale: 'zh-CN' });
      const consolePage = await context.newPage();
      consolePage.setDefaultTimeout(20_000);
      await consolePage.goto(`${t.url}/login`);
      await consolePage.locator('[data-test="login-username"]').fill('admin');
      await consolePage.locator('[data-test="login-password"]').fill(ADMIN_PASSWORD);
      await consolePage.locator('[data-test="login-submit"]').click();
      await consolePage.waitForURL(/\/instances$/);
      expect(await consolePage.evaluate(`localStorage.getItem('tianqi.token')`)).toBeTruthy();
      // the tenant's link (with the tenant's own ticket) sent to the admin, and another service open beside it
      const link = await t.api<{ url: string }>('POST', `/api/v1/instances/${instanceId}/services/8888/link`, { token: lab.tokens.lisi });
      const other = await t.api<{ url: string }>('POST', `/api/v1/instances/${instanceId}/services/6006/link`, { token: lab.admin });
      const otherOrigin = new URL(other.body.url).origin;
      // the admin has the other service open too: this browser holds its cookie
      const otherPage = await context.newPage();
      await otherPage.goto(other.body.url);
      await otherPage.waitForURL((u) => u.search === '');
      const hostile = await context.newPage();
      await hostile.goto(link.body.url);
      await hostile.waitForURL((u) => u.search === '');
      const attempts = await hostile.evaluate(`(async (consoleOrigin, otherOrigin) => {
        const outcome = async (f) => { try { return 'succeeded: ' + String(await f()); } catch (e) { return 'failed: ' + (e && e.name); } };
        return {
          readConsoleStorage: await outcome(() => localStorage.getItem('tianqi.token') ?? (() => { throw new Error('none'); })()),
          readOwnCookies: await outcome(() => document.cookie.includes('tianqi') ? document.cookie : (() => { throw new Error('none'); })()),
          callApiWithCredentials: await outcome(async () => (await fetch(consoleOrigin + '/api/v1/users', { credentials: 'include' })).text()),
          registerWorkerOnConsole: await outcome(() => navigator.serviceWorker.register(consoleOrigin + '/sw.js', { scope: consoleOrigin + '/' })),
          registerWorkerOnOtherService: await outcome(() => navigator.serviceWorker.register(otherOrigin + '/sw.js', { scope: otherOrigin + '/' })),
          registerWorkerBeyondItsPath: await outcome(() => navigator.serviceWorker.register('/static/sw.js', { scope: '/' })),
          fetchOtherService: await outcome(async () => (await fetch(otherOrigin + '/', { credentials: 'include' })).text()),
          openOtherServiceWebSocket: await outcome(() => new Promise((resolve, reject) => {
            const ws = new WebSocket(otherOrigin.replace('http', 'ws') + '/ws');
            ws.onopen = () => resolve('opened');
            ws.onerror = () => reject(new Error('refused'));
          })),
          readConsoleFrame: await outcome(() => new Promise((resolve, reject) => {
            const frame = document.createElement('iframe');
            frame.src = consoleOrigin + '/instances';
            frame.onload = () => { try { resolve(frame.contentWindow.localStorage.getItem('tianqi.token')); } catch (e) { reject(e); } };
            document.body.append(frame);
            setTimeout(() => reject(new Error('timeout')), 5000);
          })),
        };
      })(${JSON.stringify(t.url)}, ${JSON.stringify(otherOrigin)})`) as Record<string, string>;
      console.log(`hostile service page, each attempt: ${JSON.stringify(attempts)}`);
      for (const [attempt, result] of Object.entries(attempts)) expect(result, attempt).toMatch(/^failed/);
      // the console still works, and its origin has no service worker
      expect(await consolePage.evaluate('navigator.serviceWorker.getRegistrations().then((r) => r.length)')).toBe(0);
      await context.close();
    }, 120_000);
  },
);
