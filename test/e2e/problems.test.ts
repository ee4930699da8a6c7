import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium, type Browser } from 'playwright-core';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { ADMIN_PASSWORD, startTestApp, type TestApp } from '../support/app.ts';
import { describeWithService } from '../support/services.ts';

const CHROMIUM = process.env.TIANQI_TEST_CHROMIUM ?? '/usr/bin/chromium';
const ROOT = fileURLToPath(new URL('../../', import.meta.url));

/**
 * What the platform lacks is on the console's node page, as `npm start` printed it: here a
 * platform whose helper directory is empty (no build for either architecture).
 */
describeWithService(
  'Chromium',
  existsSync(CHROMIUM),
  'install Debian chromium (apt-get install chromium)',
  'the node page says what the platform lacks',
  () => {
    let t: TestApp;
    let browser: Browser;
    const empty = mkdtempSync(join(tmpdir(), 'tianqi-no-helper-'));

    beforeAll(async () => {
      execFileSync(join(ROOT, 'node_modules/.bin/tsx'), ['scripts/build-ui.ts'], { cwd: ROOT, stdio: 'pipe' });
      t = await startTestApp({ TIANQI_HELPER_DIR: empty });
      browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run'] });
    }, 120_000);

    afterAll(async () => {
      await browser?.close();
      await t?.stop();
      rmSync(empty, { recursive: true, force: true });
    });

    it('shows the missing helper builds with what to run, in the chosen language, to admins only', async () => {
      const admin = await t.login('admin', ADMIN_PASSWORD);
      const problems = await t.api<{ code: string; fatal: boolean; text: string }[]>('GET', '/api/v1/system/problems', { token: admin });
      expect(problems.status).toBe(200);
      expect(problems.body.find((p) => p.code === 'HELPER_MISSING')?.text).toMatch(/linux\/amd64 and linux\/arm64.*npm run build:helper/s);
      await t.api('POST', '/api/v1/users', { token: admin, body: { username: 'wangwu', password: 'wangwu-password' } });
      expect((await t.api('GET', '/api/v1/system/problems', { token: await t.login('wangwu', 'wangwu-password') })).status).toBe(403);

      const page = await (await browser.newContext({ locale: 'zh-CN' })).newPage();
      page.setDefaultTimeout(20_000);
      await page.goto(`${t.url}/login`);
      await page.locator('[data-test="login-username"]').fill('admin');
      await page.locator('[data-test="login-password"]').fill(ADMIN_PASSWORD);
      await page.locator('[data-test="login-submit"]').click();
      await page.waitForURL(/\/instances$/);
      await page.goto(`${t.url}/nodes`);
      const alert = page.locator('[data-test="system-problem"]').filter({ hasText: 'tianqi-helper' });
      await alert.first().waitFor();
      expect(await alert.first().textContent()).toContain('缺少 tianqi-helper 构建');
      expect(await alert.first().textContent()).toContain('npm run build:helper');
    }, 60_000);
  },
);
