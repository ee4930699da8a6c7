import { join } from 'node:path';
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, expect, it } from 'vitest';
import type { TestApp } from '../support/app.ts';
import { ACCOUNT_NAMES, CJK, ENGLISH_SENTENCE, hasChromium, launchChromium, SHOTS, signInAsAdmin, startConsoleLab, visibleText } from '../support/browser.ts';
import { removeContainersOf } from '../support/fixtures.ts';
import { describeWithService } from '../support/services.ts';

const socketPath = process.env.TIANQI_TEST_DOCKER_SOCKET;
const PHONE = { width: 390, height: 844 };

/**
 * The console on a phone (390 × 844), in both languages: the menu is a drawer behind a button,
 * the instance list is cards with their own buttons, dialogs take the width, and no page scrolls
 * sideways. In English no Chinese is left on any page (the test data is ASCII).
 */
describeWithService('Chromium and a Docker engine', Boolean(socketPath) && hasChromium, 'install chromium and set TIANQI_TEST_DOCKER_SOCKET', 'the console on a phone', () => {
  let t: TestApp;
  let browser: Browser;
  let instanceId: string;

  beforeAll(async () => {
    // A reconcile pass every 2 s: the charts have points to draw.
    ({ t, instanceId } = await startConsoleLab(socketPath!, 'phone-demo', 2000));
    browser = await launchChromium();
  }, 180_000);

  afterAll(async () => {
    await browser?.close();
    await removeContainersOf(t, socketPath);
    await t?.stop();
  });

  /** How far the page scrolls sideways (0: not at all). */
  const sideways = (page: Page) => page.evaluate<number>('Math.max(document.documentElement.scrollWidth, document.body.scrollWidth) - window.innerWidth');

  const phone = (language: 'zh-CN' | 'en') =>
    signInAsAdmin(browser, t.url, { viewport: PHONE, deviceScaleFactor: 2, isMobile: true, hasTouch: true, locale: language, language });

  for (const locale of ['zh-CN', 'en'] as const) {
    it(`${locale}: a drawer menu, the list as cards, full-width dialogs, nothing sideways`, async () => {
      const { page, byTest, problems, close } = await phone(locale);
      const suffix = locale === 'en' ? '-en' : '';
      // The sidebar is a drawer behind the menu button.
      expect(await page.locator('.aside:visible').count()).toBe(0);
      await byTest('instance-card-phone-demo').waitFor();
      expect(await sideways(page)).toBeLessThanOrEqual(0);
      await page.waitForTimeout(300);
      await page.screenshot({ path: join(SHOTS, `phone-instances${suffix}.tmp.png`) });
      await byTest('menu-button').click();
      await byTest('nav-drawer').locator('[data-test="menu-nodes"]').waitFor();
      await page.waitForTimeout(300);
      await page.screenshot({ path: join(SHOTS, `phone-menu${suffix}.tmp.png`) });
      await byTest('nav-drawer').locator('[data-test="menu-nodes"]').click();
      await page.waitForURL(/\/nodes$/);
      await expect.poll(() => page.locator('.nav-drawer:visible').count()).toBe(0);

      for (const path of ['/dashboard', '/nodes', '/specs', '/images', '/users', '/webhooks', '/ssh-keys', '/usage', `/instances/${instanceId}`, '/instances']) {
        await page.goto(`${t.url}${path}`);
        await page.waitForLoadState('networkidle');
        await page.waitForTimeout(200);
        expect(await sideways(page), `${path} scrolls sideways`).toBeLessThanOrEqual(0);
        if (locale === 'en') {
          // The signed-in account's own name (管理员, the bootstrap admin's) is data, not console words.
          const text = await visibleText(page);
          const line = text.split('\n').find((l) => CJK.test(l) && !ACCOUNT_NAMES.includes(l.trim()));
          expect(line && /.{0,60}[\u3400-\u9fff\uff00-\uffef]+.{0,20}/.exec(line)?.[0], `Chinese on ${path} in English`).toBeUndefined();
        } else {
          // Data and technical strings (image addresses, commands, IDs) are in monospace: left out.
          const text = (await visibleText(page, '.mono, code, pre, [data-test="user-menu"]')).replaceAll('tianqi-test/busybox-service:1', '');
          expect(text.split('\n').filter((l) => ENGLISH_SENTENCE.test(l)), `English sentences on ${path} in Chinese`).toEqual([]);
        }
        if (path.startsWith('/instances/')) {
          // 监控图表: CPU, memory and network drawn from the series, one chart a row on a phone.
          await page.locator('[data-test="chart-cpu"] .dot').first().waitFor({ timeout: 30_000 });
          await page.locator('[data-test="chart-network"]').waitFor();
          const chart = (await byTest('chart-cpu').boundingBox())!;
          expect(chart.x + chart.width).toBeLessThanOrEqual(PHONE.width);
          await byTest('charts-panel').screenshot({ path: join(SHOTS, `phone-charts${suffix}.tmp.png`) });
          // The facts fit the screen (one column), not clipped by their card.
          const facts = (await byTest('facts').boundingBox())!;
          expect(facts.x + facts.width).toBeLessThanOrEqual(PHONE.width);
        }
        if (path === '/nodes' || path.startsWith('/instances/')) await page.screenshot({ path: join(SHOTS, `phone-${path === '/nodes' ? 'nodes' : 'detail'}${suffix}.tmp.png`) });
      }

      // The create dialog takes the width of the screen.
      await byTest('open-create').click();
      const dialog = page.locator('[data-test="create-dialog"]');
      await dialog.waitFor();
      const box = (await page.locator('.el-dialog:visible').boundingBox())!;
      expect(box.width).toBeLessThanOrEqual(PHONE.width);
      expect(box.width).toBeGreaterThan(PHONE.width * 0.9);
      expect(await sideways(page)).toBeLessThanOrEqual(0);
      // Every field of the form is as wide as the dialog's body allows, under its label.
      const fields = await dialog.locator('.el-form-item__content').evaluateAll((els) => els.map((e) => e.getBoundingClientRect().width));
      expect(Math.min(...fields)).toBeGreaterThan(box.width * 0.6);
      await page.waitForTimeout(400);
      await page.screenshot({ path: join(SHOTS, `phone-create${suffix}.tmp.png`) });
      await page.keyboard.press('Escape');

      if (locale === 'zh-CN') {
        // The card's own buttons work: stop answers at once, the card shows it stopped when it is.
        await byTest('stop-phone-demo').click();
        await page.locator('[data-test="status-phone-demo"][data-status="exited"]').waitFor({ timeout: 30_000 });
        await byTest('start-phone-demo').click();
        await page.locator('[data-test="status-phone-demo"][data-status="running"]').waitFor({ timeout: 30_000 });
      }
      expect(problems).toEqual([]);
      await close();
    }, 120_000);
  }
});
