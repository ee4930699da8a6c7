import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import Dockerode from 'dockerode';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import { afterAll, afterEach, beforeAll, expect, it } from 'vitest';
import { ADMIN_PASSWORD, startTestApp, type TestApp } from '../support/app.ts';
import { removeContainersOf } from '../support/fixtures.ts';
import { describeWithService } from '../support/services.ts';
import { ensureServiceImage } from '../support/test-image.ts';

/**
 * The Vue console end to end in Debian's headless Chromium (driven by playwright-core, never a
 * downloaded browser), against the whole platform and a real dockerd. Screenshots of each main page
 * land in test/e2e/screenshots/<page>.tmp.png (ignored by git; the committed <page>.png are copies).
 */
const CHROMIUM = process.env.TIANQI_TEST_CHROMIUM ?? '/usr/bin/chromium';
const socketPath = process.env.TIANQI_TEST_DOCKER_SOCKET;
const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const SHOTS = join(ROOT, 'test/e2e/screenshots');
const USER = { username: 'zhangsan', password: 'zhangsan-password' };
const INSTANCE = 'e2e-demo';

describeWithService(
  'Chromium and a Docker engine',
  Boolean(socketPath) && existsSync(CHROMIUM),
  'install Debian chromium and CJK fonts (apt-get install chromium fonts-noto-cjk) and set TIANQI_TEST_DOCKER_SOCKET (see .ci/run)',
  'console in a real browser',
  () => {
    let t: TestApp;
    let browser: Browser;
    let context: BrowserContext;
    let page: Page;
    let imageAddress: string;
    /** Console errors and uncaught exceptions in the page; every test ends with none. */
    const problems: string[] = [];
    /** Warnings (Vue's, Element Plus'…) are printed at the end, not failed on. */
    const warnings: string[] = [];
    /** Browser log lines a step expects (the network error of a deliberate 400, say). */
    const expected: RegExp[] = [];

    /** Dialogs meant to be in a screenshot (the create dialog, the node form). */
    let dialogsOpen = 0;
    /** A screenshot without the toasts that come and go. */
    const shot = async (name: string) => {
      // Closing dialogs fade out: wait until they are gone.
      await expect.poll(() => page.locator('.el-overlay-dialog:visible').count()).toBeLessThanOrEqual(dialogsOpen);
      await page.screenshot({ path: join(SHOTS, `${name}.tmp.png`), animations: 'disabled', style: '.el-message { display: none !important; }' });
    };

    const byTest = (id: string) => page.locator(`[data-test="${id}"]`);
    const go = (path: string) => page.goto(`${t.url}${path}`);

    /** Signs in through the form; the header then shows the user's display name (admin: 管理员). */
    async function login(username: string, password: string, shown = username) {
      // After a sign-out the app is on its login page already: no reload, as for a real user.
      if (!new URL(page.url()).pathname.startsWith('/login')) await go('/login');
      await byTest('login-username').fill(username);
      await byTest('login-password').fill(password);
      await byTest('login-submit').click();
      await page.waitForURL(/\/instances$/);
      await expect.poll(() => byTest('current-user').textContent()).toBe(shown);
    }

    async function logout() {
      await byTest('user-menu').click();
      await byTest('logout').click();
      await page.waitForURL(/\/login/);
    }

    /** Picks an option of an Element Plus select by its visible text. */
    async function choose(select: string, option: string) {
      await byTest(select).click();
      await page.locator('.el-select-dropdown__item:visible', { hasText: option }).first().click();
    }

    async function fillNumber(id: string, value: number) {
      const input = page.locator(`[data-test="${id}"] input`);
      await input.fill(String(value));
      await input.blur();
    }

    beforeAll(async () => {
      mkdirSync(SHOTS, { recursive: true });
      // Builds ui/dist when it is missing or older than its sources (what `npm start` does too),
      // after a vue-tsc typecheck of ui/.
      execFileSync(join(ROOT, 'node_modules/.bin/tsx'), ['scripts/build-ui.ts', '--typecheck'], { cwd: ROOT, stdio: 'pipe' });
      imageAddress = ensureServiceImage(socketPath);
      // Prepaid (预付费): the new user's balance is credited in its dialog before they create anything.
      t = await startTestApp({ TIANQI_POLL_INTERVAL_MS: '60000', TIANQI_PREPAID: '1' });
      browser = await chromium.launch({
        executablePath: CHROMIUM,
        args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
      });
      context = await browser.newContext({ viewport: { width: 1440, height: 900 }, locale: 'zh-CN', acceptDownloads: true });
      page = await context.newPage();
      page.setDefaultTimeout(15_000);
      page.on('console', (message) => {
        if (message.type() === 'warning') warnings.push(message.text());
        if (message.type() !== 'error') return;
        const text = message.text();
        if (!expected.some((pattern) => pattern.test(text))) problems.push(`console: ${text}`);
      });
      page.on('pageerror', (err) => problems.push(`page error: ${err.message}`));
    }, 180_000);

    afterEach(() => {
      expect(problems, 'browser console errors').toEqual([]);
    });

    afterAll(async () => {
      if (warnings.length > 0) console.warn(`browser warnings:\n${[...new Set(warnings)].join('\n')}`);
      await browser?.close();
      await removeContainersOf(t, socketPath);
      await t?.stop();
    });

    it('signs the admin in, in Chinese, with the admin menus', async () => {
      await go('/');
      await page.waitForURL(/\/login/);
      await expect.poll(() => page.locator('h1').textContent()).toBe('登录控制台');
      await shot('login');
      await login('admin', ADMIN_PASSWORD, '管理员');
      for (const menu of ['menu-instances', 'menu-images', 'menu-specs', 'menu-nodes', 'menu-users', 'menu-webhooks', 'menu-ssh-keys']) {
        await expect.poll(() => byTest(menu).count(), { message: menu }).toBe(1);
      }
      expect(await byTest('menu').textContent()).toContain('算力节点');
    }, 60_000);

    it('adds an image, a CPU-only spec and a node on the local dockerd through the forms', async () => {
      await byTest('menu-images').click();
      await byTest('image-create').click();
      await byTest('image-name').fill('busybox');
      await byTest('image-address').fill(imageAddress);
      await byTest('image-save').click();
      await page.locator('[data-test="images-table"] .el-table__row', { hasText: imageAddress }).waitFor();
      await shot('images');

      await byTest('menu-specs').click();
      await byTest('spec-create').click();
      await byTest('spec-name').fill('cpu-1c');
      await fillNumber('spec-gpu-count', 0);
      await fillNumber('spec-cpu', 1);
      await fillNumber('spec-memory', 1);
      await fillNumber('spec-price', 0.5);
      // 空闲自动关机 after 120 idle minutes (the defaults for the thresholds), owners may opt out
      await byTest('spec-idle').click();
      await fillNumber('spec-idle-minutes', 120);
      await byTest('spec-save').click();
      await page.locator('[data-test="specs-table"] .el-table__row', { hasText: 'cpu-1c' }).waitFor();
      await shot('specs');

      await byTest('menu-nodes').click();
      await byTest('node-create').click();
      await byTest('node-name').fill('local');
      await byTest('node-public-ip').fill('not-an-ip');
      await byTest('node-private-ip').fill('127.0.0.1');
      await byTest('node-endpoint').fill(`unix://${socketPath}`);
      await byTest('node-tls').click();
      await fillNumber('node-cpu-cores', 64);
      await fillNumber('node-memory-gb', 64);
      // The API's 400 names the field; the form shows it under the field (the browser logs the 400).
      expected.push(/status of 400/);
      await byTest('node-save').click();
      const fieldError = page.locator('[data-test="node-dialog"] .el-form-item.is-error .el-form-item__error');
      await fieldError.first().waitFor();
      expect(await fieldError.allTextContents()).toEqual([expect.stringMatching(/IPv4|IP/)]);
      await fieldError.first().scrollIntoViewIfNeeded();
      dialogsOpen = 1;
      await shot('node-form-error');
      dialogsOpen = 0;
      expected.pop();
      await byTest('node-public-ip').fill('127.0.0.1');
      await byTest('node-save').click();
      await page.locator('[data-test="node-status-local"][data-status="connected"]').waitFor();
      expect(await byTest('node-status-local').textContent()).toContain('已连接');
      await byTest('node-test-local').click();
      await page.locator('.el-message--success', { hasText: '连接正常' }).waitFor();
      // A change made elsewhere arrives over /live: no reload.
      const admin = await t.login('admin', ADMIN_PASSWORD);
      const [node] = (await t.api<{ id: string }[]>('GET', '/api/v1/nodes', { token: admin })).body;
      await t.api('PATCH', `/api/v1/nodes/${node!.id}`, { token: admin, body: { region: '华东一区' } });
      await page.locator('[data-test="nodes-table"] .el-table__row', { hasText: '华东一区' }).waitFor();
      await shot('nodes');
    }, 90_000);

    it('adds a plain user and a webhook', async () => {
      await byTest('menu-users').click();
      await byTest('user-create').click();
      await byTest('user-username').fill(USER.username);
      await byTest('user-password').fill(USER.password);
      await byTest('user-save').click();
      await page.locator('[data-test="users-table"] .el-table__row', { hasText: USER.username }).waitFor();
      await shot('users');

      // 用户组: one added in its dialog
      await byTest('groups-open').click();
      await byTest('group-name').fill('NLP 组');
      await byTest('group-add').click();
      await page.locator('[data-test="groups-table"] .el-table__row', { hasText: 'NLP 组' }).waitFor();
      await page.keyboard.press('Escape');
      await byTest('groups-dialog').waitFor({ state: 'hidden' });
      // 配额: one instance at once for the new user, and the group, set in its dialog
      await byTest(`quota-${USER.username}`).click();
      await expect.poll(() => byTest('quota-used').textContent()).toContain('当前占用：0 个实例');
      await byTest('quota-limit-instances').click();
      await fillNumber('quota-max-instances', 1);
      await byTest('quota-group').click();
      await page.locator('.el-select-dropdown__item:visible', { hasText: 'NLP 组' }).click();
      await byTest('quota-save').click();
      await byTest('quota-dialog').waitFor({ state: 'hidden' });
      const admin = await t.login('admin', ADMIN_PASSWORD);
      const users = (await t.api<{ id: string; username: string }[]>('GET', '/api/v1/users', { token: admin })).body;
      const quota = await t.api<{ limits: unknown }>('GET', `/api/v1/users/${users.find((u) => u.username === USER.username)!.id}/quota`, { token: admin });
      expect(quota.body.limits).toEqual({ maxInstances: 1, maxGpus: null, maxGpuHoursPerMonth: null });
      const groups = (await t.api<{ id: string; name: string }[]>('GET', '/api/v1/groups', { token: admin })).body;
      expect((quota.body as { groupId?: string }).groupId).toBe(groups.find((g) => g.name === 'NLP 组')!.id);

      // 余额: 充值 200 with a reason in the balance dialog; the statement shows it
      await byTest(`balance-${USER.username}`).click();
      await expect.poll(() => byTest('balance-value').textContent()).toContain('¥0');
      await fillNumber('balance-amount', 200);
      await byTest('balance-reason').fill('实验室经费');
      await byTest('balance-save').click();
      await expect.poll(() => byTest('balance-value').textContent()).toContain('¥200');
      await expect.poll(() => byTest('balance-adjustments').textContent()).toContain('实验室经费');
      await page.keyboard.press('Escape');
      await byTest('balance-dialog').waitFor({ state: 'hidden' });
      const balance = await t.api<{ balance: number; adjustments: { amount: number; reason: string }[] }>('GET', `/api/v1/users/${users.find((u) => u.username === USER.username)!.id}/balance`, { token: admin });
      expect(balance.body).toMatchObject({ balance: 200, adjustments: [{ amount: 200, reason: '实验室经费' }] });

      await byTest('menu-webhooks').click();
      await byTest('webhook-create').click();
      await byTest('webhook-url').fill('http://127.0.0.1:59999/tianqi-hook');
      await byTest('webhook-generate').click();
      await byTest('webhook-save').click();
      await page.locator('[data-test="webhooks-table"] .el-table__row', { hasText: '127.0.0.1:59999' }).waitFor();
    }, 60_000);

    it('creates an instance with the dialog and sees it reach running without reloading', async () => {
      await byTest('menu-instances').click();
      await byTest('open-create').click();
      // Nothing chosen yet: each required field says what it needs, in a sentence.
      await byTest('create-submit').click();
      const required = page.locator('[data-test="create-dialog"] .el-form-item.is-error .el-form-item__error');
      await required.first().waitFor();
      expect(await required.allTextContents()).toEqual(expect.arrayContaining(['请选择镜像', '请选择一个规格']));
      await choose('create-image', 'busybox');
      await byTest('spec-cpu-1c').click();
      await byTest('node-local').waitFor();
      expect(await byTest('node-local').textContent()).toContain('CPU 余');
      await byTest('node-auto').click();
      expect(await byTest('create-price').textContent()).toContain('¥0.50');
      // The name is checked as it is typed.
      await byTest('create-name').fill('坏 名字');
      const nameError = page.locator('[data-test="create-dialog"] .el-form-item.is-error .el-form-item__error');
      await nameError.first().waitFor();
      expect(await nameError.first().textContent()).toContain('仅支持字母、数字');
      await byTest('create-name').fill(INSTANCE);
      // (Gone from the page, not only fading out.)
      await expect.poll(() => page.locator('[data-test="create-dialog"] .el-form-item__error').count()).toBe(0);
      dialogsOpen = 1;
      await shot('create-instance');
      dialogsOpen = 0;
      const navigations: string[] = [];
      page.on('framenavigated', (frame) => {
        if (frame === page.mainFrame()) navigations.push(frame.url());
      });
      await byTest('create-submit').click();
      await byTest(`instance-${INSTANCE}`).waitFor();
      // Pushed over /live: no reload, no polling.
      await page.locator(`[data-test="status-${INSTANCE}"][data-status="running"]`).waitFor({ timeout: 60_000 });
      expect(navigations).toEqual([]);
      await page.waitForTimeout(300);
      await shot('instances');
    }, 90_000);

    it('shows the facts, live stats, logs, SSH command and history of the instance', async () => {
      await byTest(`instance-${INSTANCE}`).click();
      await page.waitForURL(/\/instances\/[^/]+$/);
      expect(await byTest('instance-name').textContent()).toBe(INSTANCE);
      expect(await byTest('facts').textContent()).toContain(imageAddress);
      // the spec's idle policy in words, and the owner's switch: off for this instance, on again
      await expect.poll(() => byTest('idle-control').textContent()).toContain('空闲 120 分钟');
      await byTest('idle-switch').click();
      await expect.poll(async () => (await t.api<{ idleOptOut: boolean }[]>('GET', '/api/v1/instances', { token: await t.login('admin', ADMIN_PASSWORD) })).body[0]!.idleOptOut).toBe(true);
      await byTest('idle-switch').click();
      await expect.poll(async () => (await t.api<{ idleOptOut: boolean }[]>('GET', '/api/v1/instances', { token: await t.login('admin', ADMIN_PASSWORD) })).body[0]!.idleOptOut).toBe(false);
      await byTest('stats-cpu').waitFor({ timeout: 20_000 });
      expect(await byTest('stats-pids').textContent()).toMatch(/^\d+$/);
      await shot('instance-detail');

      await page.locator('.el-tabs__item', { hasText: '日志' }).click();
      await page.locator('[data-test="logs-screen"] .line', { hasText: 'ready' }).first().waitFor();
      await shot('instance-logs');
      // 日志下载: the whole log as a file.
      const [download] = await Promise.all([page.waitForEvent('download'), byTest('logs-download').click()]);
      expect(download.suggestedFilename()).toMatch(new RegExp(`^${INSTANCE}-\\d{14}\\.log$`));
      const saved = join(SHOTS, '..', 'download.tmp.log');
      await download.saveAs(saved);
      expect(readFileSync(saved, 'utf8')).toMatch(/ stdout ready$/m);
      rmSync(saved, { force: true });

      await page.locator('.el-tabs__item', { hasText: 'SSH 连接' }).click();
      await byTest('ssh-panel').waitFor();
      await expect.poll(() => byTest('ssh-panel').textContent()).toMatch(/ssh -p|TIANQI_SSH_PORT=0/);
      // With the jump host on: file transfer, port forwarding and the VS Code config block too.
      if (!(await byTest('ssh-panel').textContent())?.includes('TIANQI_SSH_PORT=0')) {
        expect(await byTest('ssh-sftp').textContent()).toContain('sftp -P');
        expect(await byTest('ssh-forward').textContent()).toContain('-L 8888:127.0.0.1:8888');
        expect(await byTest('ssh-config').textContent()).toContain(`Host tianqi-${INSTANCE}`);
      }

      await page.locator('.el-tabs__item', { hasText: '操作历史' }).click();
      await page.locator('[data-test="history-panel"] .el-timeline-item').first().waitFor();
      await shot('instance-history');
    }, 60_000);

    it('schedules a stop (定时关机) from the detail page, sees when, and cancels it', async () => {
      await byTest('schedule-stop').click();
      await byTest('schedule-dialog').waitFor();
      await fillNumber('schedule-hours', 3);
      const before = Date.now();
      await byTest('schedule-save').click();
      await byTest('scheduled-stop').waitFor();
      expect(await byTest('scheduled-stop').textContent()).toMatch(/^将于 \d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} 自动关机$/);
      const id = new URL(page.url()).pathname.split('/').pop()!;
      const token = await t.login('admin', ADMIN_PASSWORD);
      const read = async () => (await t.api<{ scheduledStop: { at: string; byUsername: string } | null }>('GET', `/api/v1/instances/${id}`, { token })).body;
      const view = await read();
      expect(view.scheduledStop!.byUsername).toBe('admin');
      expect(Math.abs(Date.parse(view.scheduledStop!.at) - before - 3 * 3_600_000)).toBeLessThan(60_000);
      await shot('instance-scheduled-stop');

      await byTest('schedule-stop').click();
      await expect.poll(() => byTest('schedule-current').textContent()).toContain('admin 设置');
      await byTest('schedule-cancel').click();
      await byTest('scheduled-stop').waitFor({ state: 'detached' });
      expect((await read()).scheduledStop).toBeNull();
    }, 60_000);

    it('opens a terminal in the instance and runs a command', async () => {
      await page.locator('.el-tabs__item', { hasText: '终端' }).click();
      await page.locator('[data-test="terminal-state"].connected').waitFor({ timeout: 20_000 });
      await page.locator('.xterm').click();
      // The shell's prompt first, so the line is not typed ahead of it.
      // (Read through locators: the console's Content-Security-Policy allows no eval, and Playwright's string predicates need it.)
      await expect.poll(() => page.locator('.xterm-rows').textContent(), { timeout: 15_000 }).toMatch(/[#$]\s*$/);
      await page.keyboard.type('echo $((6*7))');
      await page.keyboard.press('Enter');
      await page.locator('.xterm-rows > div').filter({ hasText: /^\s*42\s*$/ }).first().waitFor({ timeout: 15_000 });
      await shot('terminal');

      // The terminal follows the window: the shell sees the new size.
      const sizes = async () => (await page.locator('.xterm-rows > div').allTextContents()).map((row) => row.trim()).filter((line) => /^\d+ \d+$/.test(line));
      await page.keyboard.type('stty size');
      await page.keyboard.press('Enter');
      await expect.poll(sizes).toHaveLength(1);
      const [before] = await sizes();
      await page.setViewportSize({ width: 1100, height: 700 });
      await page.keyboard.type('stty size');
      await page.keyboard.press('Enter');
      await expect.poll(sizes).toHaveLength(2);
      const after = (await sizes())[1]!;
      expect(after).not.toBe(before);
      const [rows, cols] = after.split(' ').map(Number) as [number, number];
      expect(rows).toBeLessThan(Number(before!.split(' ')[0]));
      expect(cols).toBeLessThan(Number(before!.split(' ')[1]));
      await page.setViewportSize({ width: 1440, height: 900 });

      // The shell ends with `exit`; the reconnect button opens a new one.
      await page.keyboard.type('exit');
      await page.keyboard.press('Enter');
      await page.locator('[data-test="terminal-state"].exited').waitFor();
      await byTest('terminal-reconnect').click();
      await page.locator('[data-test="terminal-state"].connected').waitFor();
      await expect.poll(() => page.locator('.xterm-rows').textContent(), { timeout: 15_000 }).toMatch(/[#$]\s*$/);
      await page.keyboard.type('echo $((6*8))');
      await page.keyboard.press('Enter');
      await page.locator('.xterm-rows > div').filter({ hasText: /^\s*48\s*$/ }).first().waitFor({ timeout: 15_000 });
    }, 60_000);

    it('stops the instance from the list and sees it exited', async () => {
      await byTest('menu-instances').click();
      await byTest(`stop-${INSTANCE}`).click();
      await page.locator(`[data-test="status-${INSTANCE}"][data-status="exited"]`).waitFor({ timeout: 30_000 });
      expect(await byTest(`status-${INSTANCE}`).textContent()).toContain('已停止');
      // Said as the stop somebody asked for, in the reader's words — not as a red SIGKILL.
      await expect.poll(() => byTest(`reason-${INSTANCE}`).textContent()).toBe('由 admin 停止');
    }, 60_000);

    it('switches to English and back', async () => {
      await byTest('language-switch').click();
      await byTest('lang-en').click();
      await expect.poll(() => byTest('menu').textContent()).toContain('Nodes');
      await expect.poll(() => byTest(`reason-${INSTANCE}`).textContent()).toBe('Stopped by admin');
      await page.waitForTimeout(300);
      await shot('instances-en');
      await byTest('language-switch').click();
      await byTest('lang-zh').click();
      await expect.poll(() => byTest('menu').textContent()).toContain('算力节点');
    }, 30_000);

    it('shows the admin an overview: instances, nodes, cards and this month\'s usage', async () => {
      await byTest('menu-dashboard').click();
      await byTest('dashboard').waitFor();
      await expect.poll(() => byTest('tile-nodes').textContent()).toContain('1 / 1');
      expect(await byTest('tile-nodes').textContent()).toContain('全部节点正常');
      expect(await byTest('tile-usage').textContent()).toMatch(/本月用量¥\d/);
      expect(await byTest('tile-instances').textContent()).toMatch(/已停止 1/);
      expect(await byTest('cards-table').textContent()).toContain('暂无 GPU 节点');
      await shot('dashboard');
    }, 30_000);

    it('shows usage and the webhook delivery log to the admin', async () => {
      await byTest('menu-usage').click();
      await byTest('usage-table').waitFor();
      await expect.poll(() => page.locator('[data-test="usage-table"]').textContent()).toContain('admin');
      await shot('usage');
      await byTest('menu-webhooks').click();
      await page.locator('[data-test="webhooks-table"] .el-button', { hasText: '投递记录' }).first().click();
      await page.locator('.el-drawer').waitFor();
      await page.waitForTimeout(500);
      await shot('webhooks');
      await page.keyboard.press('Escape');
    }, 30_000);

    it('shows a plain user neither the admin menus nor the admin’s instance', async () => {
      await logout();
      await login(USER.username, USER.password);
      await page.locator('[data-test="instances-table"] .el-table__empty-text').waitFor();
      for (const menu of ['menu-images', 'menu-specs', 'menu-nodes', 'menu-users', 'menu-webhooks']) {
        expect(await byTest(menu).count(), menu).toBe(0);
      }
      expect(await byTest(`instance-${INSTANCE}`).count()).toBe(0);
      // their own notifications (webhooks and group bots for their instances), none of the platform's
      expect(await byTest('menu-notifications').count()).toBe(1);
      await shot('user-instances');
      // Admin pages typed in the address bar lead back to the instances.
      await go('/nodes');
      await page.waitForURL(/\/instances$/);
      expect(await byTest('menu-nodes').count()).toBe(0);
    }, 60_000);

    it('deletes the instance after a confirmation naming its volume', async () => {
      await logout();
      await login('admin', ADMIN_PASSWORD, '管理员');
      const instance = (await t.api<{ id: string; containerId: string; containerName: string }[]>('GET', `/api/v1/instances?q=${INSTANCE}`, {
        token: await t.login('admin', ADMIN_PASSWORD),
      })).body[0]!;
      await byTest(`more-${INSTANCE}`).click();
      await byTest(`delete-${INSTANCE}`).click();
      expect(await byTest('delete-volume').textContent()).toBe(`${instance.containerName}-data`);
      await shot('delete-confirm');
      await page.locator('.el-message-box__btns .el-button--danger').click();
      await byTest(`instance-${INSTANCE}`).waitFor({ state: 'detached', timeout: 30_000 });
      const docker = new Dockerode({ socketPath });
      await expect.poll(async () => (await docker.listContainers({ all: true, filters: { id: [instance.containerId] } })).length, { timeout: 20_000 }).toBe(0);
    }, 60_000);
  },
);
