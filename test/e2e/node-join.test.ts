import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium, type Browser, type Page } from 'playwright-core';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.ts';
import { ADMIN_PASSWORD, startTestApp, type TestApp } from '../support/app.ts';
import { SecondEngine, dockerd } from '../support/second-engine.ts';
import { freePort } from '../support/ports.ts';
import { describeWithService } from '../support/services.ts';

const CHROMIUM = process.env.TIANQI_TEST_CHROMIUM ?? '/usr/bin/chromium';
const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const SHOTS = join(ROOT, 'test/e2e/screenshots');
const helperBuilt = existsSync(join(loadConfig({}).helperDir, 'linux-amd64', 'tianqi-helper'));
const hasCurl = spawnSync('sh', ['-c', 'command -v curl'], { stdio: 'ignore' }).status === 0;
const canRun = existsSync(CHROMIUM) && Boolean(dockerd) && process.getuid?.() === 0 && helperBuilt && hasCurl;

/**
 * 添加节点 in the console, in both languages: the admin fills in the node, copies the command the
 * dialog shows, runs it on "the GPU server" (here: this machine, against a second dockerd, the
 * agent in the foreground), and the dialog moves on by itself to the cards and readiness checks.
 */
describeWithService('Chromium, root, dockerd, curl and a tianqi-helper build', canRun, 'install chromium and curl, run as root with docker.io, build helper/', 'the console\'s 添加节点 flow', () => {
  const engine = new SecondEngine();
  let t: TestApp;
  let browser: Browser;
  const agents: ChildProcess[] = [];

  beforeAll(async () => {
    mkdirSync(SHOTS, { recursive: true });
    execFileSync(join(ROOT, 'node_modules/.bin/tsx'), ['scripts/build-ui.ts'], { cwd: ROOT, stdio: 'pipe' });
    await engine.start();
    t = await startTestApp({ TIANQI_POLL_INTERVAL_MS: '60000' });
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking'] });
  }, 180_000);

  afterAll(async () => {
    for (const a of agents) {
      try { process.kill(-a.pid!, 'SIGKILL'); } catch { /* gone */ }
    }
    await browser?.close();
    await t?.stop();
    await engine.destroy();
  });

  async function joinThroughConsole(page: Page, name: string, texts: { button: string; ready: string; agentCheck: string }) {
    const problems: string[] = [];
    page.on('pageerror', (err) => problems.push(err.message));
    // Docker makes and removes bridges for the other test files meanwhile: Chromium sees the host's
    // network change and drops requests in flight (the console retries them). Not the page's fault.
    page.on('console', (m) => { if (m.type() === 'error' && !m.text().includes('ERR_NETWORK_CHANGED')) problems.push(m.text()); });
    const byTest = (id: string) => page.locator(`[data-test="${id}"]`);
    await page.goto(`${t.url}/login`);
    await byTest('login-username').fill('admin');
    await byTest('login-password').fill(ADMIN_PASSWORD);
    await byTest('login-submit').click();
    await page.waitForURL(/\/instances$/);
    if (texts.button === 'Add node') {
      await byTest('language-switch').click();
      await byTest('lang-en').click();
    }
    await byTest('menu-nodes').click();
    await expect.poll(() => byTest('node-join').textContent()).toBe(texts.button);
    await byTest('node-join').click();
    await byTest('join-name').fill(name);
    await byTest('join-public-ip').fill('127.0.0.1');
    const port = await freePort();
    await page.locator('[data-test="join-dialog"] .el-input-number input').fill(String(port));
    await byTest('join-create').click();
    const command = (await byTest('join-command').textContent())!.trim();
    expect(command).toMatch(/^curl -sSL '.*\/api\/v1\/join\/tqj\.[^']+\/install\.sh' \| sh$/);
    await byTest('join-waiting').waitFor();
    await page.screenshot({ path: join(SHOTS, `node-join-command-${name}.tmp.png`), animations: 'disabled' });

    const dir = mkdtempSync(join(tmpdir(), 'tianqi-agent-ui-'));
    const agent = spawn('sh', ['-c', command], {
      env: { ...process.env, TIANQI_AGENT_DIR: dir, TIANQI_AGENT_BIN: join(dir, 'tianqi-helper'), TIANQI_AGENT_INIT: 'none', DOCKER_SOCKET: engine.socket },
      stdio: 'ignore', detached: true,
    });
    agents.push(agent);
    // The dialog moves on by itself once the node answers: no reload, no click.
    await byTest('join-ready-step').waitFor({ timeout: 60_000 });
    expect(await byTest('join-ready-step').textContent()).toContain(texts.ready);
    const agentCheck = page.locator('[data-test="join-readiness"] li[data-code="AGENT"]');
    expect(await agentCheck.textContent()).toContain(texts.agentCheck);
    expect(await agentCheck.locator('.ok').count()).toBe(1);
    await page.screenshot({ path: join(SHOTS, `node-join-ready-${name}.tmp.png`), animations: 'disabled' });
    await byTest('join-done').click();
    await page.locator(`[data-test="node-status-${name}"][data-status="connected"]`).waitFor();
    expect(problems).toEqual([]);
  }

  it('zh-CN: 添加节点 → 命令 → 已连接, with the readiness checks', async () => {
    const context = await browser.newContext({ viewport: { width: 1440, height: 900 }, locale: 'zh-CN' });
    await joinThroughConsole(await context.newPage(), 'gpu-zh', { button: '添加节点', ready: '已连接', agentCheck: '节点代理' });
    await context.close();
  }, 120_000);

  it('English: Add node → command → connected', async () => {
    const context = await browser.newContext({ viewport: { width: 1440, height: 900 }, locale: 'en-US' });
    await joinThroughConsole(await context.newPage(), 'gpu-en', { button: 'Add node', ready: 'is connected', agentCheck: 'Node agent' });
    await context.close();
  }, 120_000);
});
