import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium, type Browser, type BrowserContextOptions, type Page } from 'playwright-core';
import { ADMIN_PASSWORD, startTestApp, type TestApp } from './app.ts';
import { waitFor } from './fixtures.ts';
import { ensureServiceImage } from './test-image.ts';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
/** Where the browser tests leave their screenshots. */
export const SHOTS = join(ROOT, 'test/e2e/screenshots');

/** Debian's Chromium (never a downloaded browser). */
export const CHROMIUM = process.env.TIANQI_TEST_CHROMIUM ?? '/usr/bin/chromium';
export const hasChromium = existsSync(CHROMIUM);

export function launchChromium(): Promise<Browser> {
  return chromium.launch({ executablePath: CHROMIUM, args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking'] });
}

/**
 * The console built and the platform started on the engine at `socketPath`, with one running
 * instance `instanceName` of the busybox service image (spec cpu-1c, 1 s stop grace), made by the
 * admin: the set-up of the browser tests that look at every page.
 */
export async function startConsoleLab(socketPath: string, instanceName: string, pollIntervalMs: number): Promise<{ t: TestApp; admin: string; instanceId: string }> {
  mkdirSync(SHOTS, { recursive: true });
  execFileSync(join(ROOT, 'node_modules/.bin/tsx'), ['scripts/build-ui.ts'], { cwd: ROOT, stdio: 'pipe' });
  const t = await startTestApp({ TIANQI_POLL_INTERVAL_MS: String(pollIntervalMs) });
  const admin = await t.login('admin', ADMIN_PASSWORD);
  const image = (await t.api<{ id: string }>('POST', '/api/v1/images', { token: admin, body: { name: 'busybox', address: ensureServiceImage(socketPath) } })).body.id;
  const spec = (await t.api<{ id: string }>('POST', '/api/v1/specs', { token: admin, body: { name: 'cpu-1c', cpuCores: 1, memoryGb: 1, pricePerHour: 0.5, stopGraceSeconds: 1 } })).body.id;
  await t.api('POST', '/api/v1/nodes', { token: admin, body: { name: 'local', publicIp: '127.0.0.1', privateIp: '127.0.0.1', dockerEndpoint: `unix://${socketPath}` } });
  const instanceId = (await t.api<{ id: string }>('POST', '/api/v1/instances', { token: admin, body: { name: instanceName, imageId: image, specId: spec } })).body.id;
  await waitFor(() => t.api<{ status: string }>('GET', `/api/v1/instances/${instanceId}`, { token: admin }).then((r) => r.body.status), (status) => status === 'running', 60_000);
  return { t, admin, instanceId };
}

export interface SignedIn {
  readonly page: Page;
  readonly byTest: (id: string) => ReturnType<Page['locator']>;
  /** Errors the page raised or logged; a test ends with none. */
  readonly problems: string[];
  close(): Promise<void>;
}

/**
 * A new browser context signed in as the admin through the login form, in the console's own
 * language setting (kept in localStorage, not the browser's).
 */
export async function signInAsAdmin(browser: Browser, url: string, options: BrowserContextOptions & { language?: 'zh-CN' | 'en' } = {}): Promise<SignedIn> {
  const { language, ...contextOptions } = options;
  const context = await browser.newContext(contextOptions);
  if (language) await context.addInitScript(`localStorage.setItem('tianqi.locale', ${JSON.stringify(language)})`);
  const page = await context.newPage();
  const problems: string[] = [];
  page.on('pageerror', (err) => problems.push(err.message));
  // Docker makes and removes bridges for the other test files meanwhile: Chromium sees the host's
  // network change and drops requests in flight (the console retries them). Not the page's fault.
  page.on('console', (m) => {
    if (m.type() === 'error' && !m.text().includes('ERR_NETWORK_CHANGED')) problems.push(m.text());
  });
  const byTest = (id: string) => page.locator(`[data-test="${id}"]`);
  await page.goto(`${url}/login`);
  await byTest('login-username').fill('admin');
  await byTest('login-password').fill(ADMIN_PASSWORD);
  await byTest('login-submit').click();
  await page.waitForURL(/\/instances$/);
  return { page, byTest, problems, close: () => context.close() };
}

/** The page's visible text with these elements left out (the account's own name, monospace data). */
export function visibleText(page: Page, leaveOut = '[data-test="user-menu"]'): Promise<string> {
  return page.evaluate<string>(`(() => {
    const hidden = [...document.querySelectorAll(${JSON.stringify(leaveOut)})];
    for (const el of hidden) el.style.visibility = 'hidden';
    const all = document.body.innerText;
    for (const el of hidden) el.style.visibility = '';
    return all;
  })()`);
}

/** Four English words in a row: a sentence, not a name, an address or a command. */
export const ENGLISH_SENTENCE = /\b[A-Za-z]{2,}(?: [A-Za-z]{2,}){3,}\b/;

/** Chinese characters (and full-width forms). */
export const CJK = /[\u3400-\u9fff\uff00-\uffef]/;
/** User data that is Chinese whatever the language: the bootstrap admin's display name. */
export const ACCOUNT_NAMES = ['管理员'];
