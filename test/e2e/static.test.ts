import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { get as httpGet, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import Koa from 'koa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { serveConsole } from '../../src/http/static.ts';

/** serveConsole over a made-up ui/dist: what the browser gets for each kind of path. */
describe('console static files', () => {
  let dir: string;
  let missing: string;
  let server: Server;
  let url: string;
  const big = `console.log(${JSON.stringify('天启'.repeat(2000))});\n`;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'tianqi-dist-'));
    missing = join(dir, 'not-built');
    mkdirSync(join(dir, 'assets'));
    writeFileSync(join(dir, 'index.html'), '<!doctype html><title>天启</title><div id="app"></div>');
    writeFileSync(join(dir, 'assets', 'index-AbC123.js'), big);
    writeFileSync(join(dir, 'assets', 'index-AbC123.css'), 'body{margin:0}');
    writeFileSync(join(dir, 'favicon.svg'), '<svg xmlns="http://www.w3.org/2000/svg"/>');
    writeFileSync(join(tmpdir(), 'tianqi-secret.txt'), 'secret');
    const app = new Koa();
    app.use(async (ctx, next) => {
      await next();
      if (ctx.status === 404 && !ctx.body) {
        ctx.body = 'next said 404';
        ctx.status = 404;
      }
    });
    app.use(async (ctx, next) => {
      if (ctx.path.startsWith('/unbuilt')) {
        ctx.path = ctx.path.slice('/unbuilt'.length) || '/';
        await serveConsole(missing)(ctx, next);
      } else {
        await next();
      }
    });
    app.use(serveConsole(dir));
    server = await new Promise<Server>((resolve) => {
      const s = app.listen(0, '127.0.0.1', () => resolve(s));
    });
    const address = server.address();
    url = `http://127.0.0.1:${typeof address === 'object' && address ? address.port : 0}`;
  });

  afterAll(async () => {
    await new Promise((resolve) => server.close(resolve));
    rmSync(dir, { recursive: true, force: true });
    rmSync(join(tmpdir(), 'tianqi-secret.txt'), { force: true });
  });

  const get = (path: string, headers: Record<string, string> = {}) => fetch(`${url}${path}`, { headers: { 'accept-encoding': 'identity', ...headers } });
  /** Plain node:http: fetch decodes gzip itself and turns a conditional request into a no-cache one. */
  const raw = (path: string, headers: Record<string, string>) =>
    new Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: Buffer }>((resolve, reject) => {
      httpGet(`${url}${path}`, { headers }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
      }).on('error', reject);
    });

  it('answers the page for / and for any client-side route, revalidated on every load', async () => {
    for (const path of ['/', '/instances', '/instances/0b6d3c1e-7a4f-4d2e-9d67-0f1c2b3a4d5e', '/nodes?x=1']) {
      const r = await get(path);
      expect(r.status, path).toBe(200);
      expect(r.headers.get('content-type')).toBe('text/html; charset=utf-8');
      expect(r.headers.get('cache-control')).toBe('no-cache');
      expect(await r.text()).toContain('<div id="app">');
      // the console's own scripts only, no framing (the browser suite runs the console under it)
      expect(r.headers.get('content-security-policy')).toMatch(/default-src 'self'; script-src 'self';.*frame-ancestors 'none'/);
      expect(r.headers.get('x-frame-options')).toBe('DENY');
      expect(r.headers.get('x-content-type-options')).toBe('nosniff');
    }
  });

  it('serves files with their content types, hashed assets cached for a year', async () => {
    const js = await get('/assets/index-AbC123.js');
    expect(js.headers.get('content-type')).toBe('text/javascript; charset=utf-8');
    expect(js.headers.get('cache-control')).toBe('public, max-age=31536000, immutable');
    expect(await js.text()).toBe(big);
    expect((await get('/assets/index-AbC123.css')).headers.get('content-type')).toBe('text/css; charset=utf-8');
    const svg = await get('/favicon.svg');
    expect(svg.headers.get('content-type')).toBe('image/svg+xml');
    expect(svg.headers.get('cache-control')).toBe('no-cache');
  });

  it('never answers for the API, socket.io, missing files or paths outside the folder', async () => {
    for (const path of ['/api/v1/nope', '/api/health-not', '/socket.io/?EIO=4', '/assets/index-Old999.js', '/favicon.ico', '/..%2f..%2ftianqi-secret.txt', '/%2e%2e/tianqi-secret.txt']) {
      const r = await get(path);
      expect(r.status, path).toBe(404);
      expect(await r.text(), path).not.toContain('secret');
    }
    expect((await fetch(`${url}/instances`, { method: 'POST' })).status).toBe(404);
  });

  it('compresses text for browsers that accept gzip and answers 304 to a revalidation', async () => {
    const r = await raw('/assets/index-AbC123.js', { 'accept-encoding': 'gzip, deflate, br' });
    expect(r.headers['content-encoding']).toBe('gzip');
    expect(r.headers.vary).toContain('Accept-Encoding');
    expect(r.body.length).toBeLessThan(Buffer.byteLength(big) / 4);
    expect(gunzipSync(r.body).toString()).toBe(big);
    const etag = String(r.headers.etag);
    expect((await raw('/assets/index-AbC123.js', { 'if-none-match': etag })).status).toBe(304);
    expect((await raw('/instances', { 'if-none-match': etag })).status).toBe(200);
    const head = await fetch(`${url}/instances`, { method: 'HEAD' });
    expect(head.status).toBe(200);
    expect(head.headers.get('content-type')).toBe('text/html; charset=utf-8');
  });

  it('says how to build the console when ui/dist is missing', async () => {
    const r = await get('/unbuilt/instances');
    expect(r.status).toBe(503);
    expect(await r.text()).toContain('npm run build');
  });
});
