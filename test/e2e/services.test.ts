import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium, type Browser } from 'playwright-core';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.ts';
import { startTestApp, type TestApp } from '../support/app.ts';
import { removeContainersOf, setUpLab, waitFor, type Lab } from '../support/fixtures.ts';
import { describeWithService } from '../support/services.ts';
import { ensureWebServiceImage } from '../support/test-image.ts';

/**
 * 自定义服务 in a real browser: the console's "打开 JupyterLab" opens a real HTTP service in a
 * container through the proxy, signed in, and a WebSocket from that page echoes through it. The
 * platform's service domain is `localhost`: Chromium resolves every `*.localhost` to this machine,
 * so each service gets an origin of its own without DNS.
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
      t = await startTestApp({ TIANQI_SERVICE_DOMAIN: 'localhost', TIANQI_POLL_INTERVAL_MS: '60000' });
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

    it('opens JupyterLab from its tile, signed in, on an origin of its own, a WebSocket from the page echoes, and a stranger gets the sign-in page', async () => {
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
      await page.goto(`${t.url}/instances/${instanceId}`);
      await page.getByRole('tab', { name: '服务' }).click();
      const tile = page.locator('[data-test="service-8888"]');
      await expect.poll(() => tile.locator('[data-test="service-listening"]').count()).toBe(1);
      expect(await tile.textContent()).toContain('打开 JupyterLab');
      const [service] = await Promise.all([context.waitForEvent('page'), tile.locator('[data-test="service-open"]').click()]);
      // about:blank first (opened at the click), then the link, then the service without the ticket
      await service.waitForURL((u) => u.host.startsWith('8888-') && u.search === '');
      await service.waitForLoadState('load');
      const url = new URL(service.url());
      // the ticket is gone from the address bar; the service has its own origin
      expect(url.host).toBe(`8888-${instanceId}.localhost:${t.app.httpPort}`);
      expect(url.search).toBe('');
      const echo = JSON.parse(await service.locator('body').innerText()) as { port: number; headers: Record<string, string> };
      expect(echo.port).toBe(8888);
      expect(echo.headers['x-tianqi-user']).toBe('lisi');
      expect(echo.headers.cookie).toBeUndefined();
      // the console's sign-in is not on the service's origin
      expect(await service.evaluate('Object.keys(localStorage).length')).toBe(0);
      const reply = await service.evaluate(`new Promise((resolve, reject) => {
        const ws = new WebSocket(location.origin.replace('http', 'ws') + '/api/kernels/1/channels');
        ws.onopen = () => ws.send('执行 print(1)');
        ws.onmessage = (m) => resolve(String(m.data));
        ws.onerror = () => reject(new Error('WebSocket failed'));
      })`);
      expect(reply).toBe('执行 print(1)');
      // another browser (not signed in) gets the sign-in page, not the service
      const stranger = await (await browser.newContext()).newPage();
      const answer = await stranger.goto(url.toString());
      expect(answer?.status()).toBe(401);
      expect(await stranger.locator('h1').textContent()).toContain('请从控制台打开此服务');
      expect(problems).toEqual([]);
      await context.close();
    }, 120_000);
  },
);
