import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Browser } from 'playwright-core';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.ts';
import { startTestApp, type TestApp } from '../support/app.ts';
import { ENGLISH_SENTENCE, hasChromium, launchChromium, signInAsAdmin } from '../support/browser.ts';
import { SecondEngine, dockerd } from '../support/second-engine.ts';
import { freePort } from '../support/ports.ts';
import { describeWithService } from '../support/services.ts';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const SHOTS = join(ROOT, 'test/e2e/screenshots');
const helperBuilt = existsSync(join(loadConfig({}).helperDir, 'linux-amd64', 'tianqi-helper'));
const hasCurl = spawnSync('sh', ['-c', 'command -v curl'], { stdio: 'ignore' }).status === 0;
const canRun = hasChromium && Boolean(dockerd) && process.getuid?.() === 0 && helperBuilt && hasCurl;

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
    browser = await launchChromium();
  }, 180_000);

  afterAll(async () => {
    for (const a of agents) {
      try { process.kill(-a.pid!, 'SIGKILL'); } catch { /* gone */ }
    }
    await browser?.close();
    await t?.stop();
    await engine.destroy();
  });

  async function joinThroughConsole(language: 'zh-CN' | 'en', name: string, texts: { button: string; ready: string; agentCheck: string }) {
    const { page, byTest, problems, close } = await signInAsAdmin(browser, t.url, { viewport: { width: 1440, height: 900 }, language });
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
    // Every check's detail in the reader's language (no English sentence in Chinese).
    if (language === 'zh-CN') expect(await byTest('join-readiness').textContent()).not.toMatch(ENGLISH_SENTENCE);
    await page.screenshot({ path: join(SHOTS, `node-join-ready-${name}.tmp.png`), animations: 'disabled' });
    await byTest('join-done').click();
    await page.locator(`[data-test="node-status-${name}"][data-status="connected"]`).waitFor();
    expect(problems).toEqual([]);
    await close();
  }

  it('zh-CN: 添加节点 → 命令 → 已连接, with the readiness checks', async () => {
    await joinThroughConsole('zh-CN', 'gpu-zh', { button: '添加节点', ready: '已连接', agentCheck: '节点代理' });
  }, 120_000);

  it('English: Add node → command → connected', async () => {
    await joinThroughConsole('en', 'gpu-en', { button: 'Add node', ready: 'is connected', agentCheck: 'Node agent' });
  }, 120_000);
});
