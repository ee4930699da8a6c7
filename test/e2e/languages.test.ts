import { join } from 'node:path';
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, expect, it } from 'vitest';
import type { TestApp } from '../support/app.ts';
import { ACCOUNT_NAMES, CJK, ENGLISH_SENTENCE, hasChromium, launchChromium, SHOTS, signInAsAdmin, startConsoleLab, visibleText } from '../support/browser.ts';
import { removeContainersOf } from '../support/fixtures.ts';
import { describeWithService } from '../support/services.ts';

const socketPath = process.env.TIANQI_TEST_DOCKER_SOCKET;

/**
 * The desktop console (1440 × 900) in each language: in English no Chinese is left on any page
 * and no form label wraps; in Chinese an instance's history and status are in Chinese, without
 * English sentences (addresses, commands and user data aside).
 */
describeWithService('Chromium and a Docker engine', Boolean(socketPath) && hasChromium, 'install chromium and set TIANQI_TEST_DOCKER_SOCKET', 'the console in both languages', () => {
  let t: TestApp;
  let browser: Browser;
  let instanceId: string;

  beforeAll(async () => {
    let admin: string;
    ({ t, admin, instanceId } = await startConsoleLab(socketPath!, 'lang-demo', 60_000));
    // A history with a stop somebody asked for and a start.
    await t.api('POST', `/api/v1/instances/${instanceId}/stop?wait=true`, { token: admin });
    await t.api('POST', `/api/v1/instances/${instanceId}/start`, { token: admin });
    browser = await launchChromium();
  }, 180_000);

  afterAll(async () => {
    await browser?.close();
    await removeContainersOf(t, socketPath);
    await t?.stop();
  });

  const signedIn = (language: 'zh-CN' | 'en') => signInAsAdmin(browser, t.url, { viewport: { width: 1440, height: 900 }, locale: language, language });

  /** Form labels whose text takes more than one line in the open dialog. */
  const wrappedLabels = (page: Page) => page.evaluate<string[]>(`(() => {
    const out = [];
    for (const label of document.querySelectorAll('.el-overlay-dialog:not([style*="display: none"]) .el-form-item__label')) {
      if (!label.textContent.trim() || label.offsetParent === null) continue;
      const style = getComputedStyle(label);
      const line = parseFloat(style.lineHeight) || 20;
      if (label.scrollHeight > line * 1.5 || label.scrollWidth > label.clientWidth + 1) out.push(label.textContent.trim());
    }
    return out;
  })()`);

  it('English: no Chinese on any page, and no form label wraps', async () => {
    const { page, byTest, problems, close } = await signedIn('en');
    for (const path of ['/instances', '/dashboard', '/nodes', '/specs', '/images', '/users', '/usage', '/webhooks', '/ssh-keys', `/instances/${instanceId}`, `/instances/${instanceId}?tab=history`]) {
      await page.goto(`${t.url}${path}`);
      await page.waitForLoadState('networkidle');
      await page.waitForTimeout(200);
      const line = (await visibleText(page)).split('\n').find((l) => CJK.test(l) && !ACCOUNT_NAMES.includes(l.trim()));
      expect(line, `Chinese on ${path} in English`).toBeUndefined();
    }
    const dialogs: [string, string, string][] = [
      ['/instances', 'open-create', 'create-dialog'],
      ['/nodes', 'node-create', 'node-dialog'],
      ['/specs', 'spec-create', 'spec-dialog'],
      ['/users', 'user-create', 'user-dialog'],
      ['/images', 'image-create', 'image-dialog'],
    ];
    const wrapped: Record<string, string[]> = {};
    for (const [path, button, dialog] of dialogs) {
      await page.goto(`${t.url}${path}`);
      await byTest(button).click();
      await byTest(dialog).waitFor();
      await page.waitForTimeout(400);
      const labels = await wrappedLabels(page);
      if (labels.length > 0) wrapped[dialog] = labels;
      if (dialog === 'node-dialog' || dialog === 'spec-dialog') await page.screenshot({ path: join(SHOTS, `${dialog}-en.tmp.png`) });
      await page.keyboard.press('Escape');
      await byTest(dialog).waitFor({ state: 'hidden' });
    }
    expect(wrapped, 'form labels that wrap in English').toEqual({});
    expect(problems).toEqual([]);
    await close();
  }, 120_000);

  it('Chinese: the instance\'s status and history are in Chinese, without English sentences', async () => {
    const { page, byTest, problems, close } = await signedIn('zh-CN');
    await page.goto(`${t.url}/instances/${instanceId}?tab=history`);
    const panel = byTest('history-panel');
    await panel.locator('.summary').first().waitFor();
    const summaries = await panel.locator('.summary').allTextContents();
    expect(summaries.length).toBeGreaterThan(5);
    // Image addresses and names are data: taken out before looking for English.
    const words = summaries.map((s) => s.replaceAll('tianqi-test/busybox-service:1', '').replaceAll('lang-demo', ''));
    expect(words.filter((s) => ENGLISH_SENTENCE.test(s)), 'English sentences in the Chinese history').toEqual([]);
    expect(summaries).toContain('已由 admin 停止');
    expect(summaries).toContain('admin 请求停止');
    await page.screenshot({ path: join(SHOTS, 'history-zh.tmp.png') });
    expect(problems).toEqual([]);
    await close();
  }, 60_000);

  it('Chinese: no English sentence on the pages people read (server words, addresses and commands aside)', async () => {
    const { page, problems, close } = await signedIn('zh-CN');
    const found: Record<string, string[]> = {};
    for (const path of ['/instances', '/dashboard', '/nodes', '/specs', '/images', '/users', '/usage', '/webhooks', '/ssh-keys', `/instances/${instanceId}`, `/instances/${instanceId}?tab=history`]) {
      await page.goto(`${t.url}${path}`);
      await page.waitForLoadState('networkidle');
      await page.waitForTimeout(200);
      // Data and technical strings (image addresses, commands, IDs) are in monospace: left out.
      const text = await visibleText(page, '.mono, code, pre, [data-test="user-menu"]');
      const lines = text.split('\n').map((l) => l.replaceAll('tianqi-test/busybox-service:1', '').replaceAll('lang-demo', '')).filter((l) => ENGLISH_SENTENCE.test(l));
      if (lines.length > 0) found[path] = lines;
    }
    expect(found, 'English sentences on Chinese pages').toEqual({});
    expect(problems).toEqual([]);
    await close();
  }, 90_000);

  it('a tablet (820 × 1180, touch) uses the web terminal', async () => {
    const { page, problems, close } = await signInAsAdmin(browser, t.url, { viewport: { width: 820, height: 1180 }, isMobile: true, hasTouch: true, deviceScaleFactor: 2, locale: 'zh-CN' });
    await page.goto(`${t.url}/instances/${instanceId}?tab=terminal`);
    await page.locator('[data-test="terminal-state"].connected').waitFor({ timeout: 20_000 });
    await page.locator('.xterm').tap();
    await expect.poll(() => page.locator('.xterm-rows').textContent(), { timeout: 15_000 }).toMatch(/[#$]\s*$/);
    await page.keyboard.type('echo $((6*7))');
    await page.keyboard.press('Enter');
    await page.locator('.xterm-rows > div').filter({ hasText: /^\s*42\s*$/ }).first().waitFor({ timeout: 15_000 });
    // The terminal fits the tablet's width.
    const box = (await page.locator('.xterm').boundingBox())!;
    expect(box.x + box.width).toBeLessThanOrEqual(820);
    await page.screenshot({ path: join(SHOTS, 'tablet-terminal.tmp.png') });
    expect(problems).toEqual([]);
    await close();
  }, 60_000);
});
