import { createReadStream } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import { extname, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
import type { Context, Middleware } from 'koa';

/** Where `npm run build` puts the console (ui/vite.config.ts). */
export const CONSOLE_DIR = fileURLToPath(new URL('../../ui/dist/', import.meta.url));

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json; charset=utf-8',
  '.map': 'application/json; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.jpg': 'image/jpeg',
  '.jpeg': 'image/jpeg',
  '.gif': 'image/gif',
  '.webp': 'image/webp',
  '.ico': 'image/x-icon',
  '.woff': 'font/woff',
  '.woff2': 'font/woff2',
  '.ttf': 'font/ttf',
  '.otf': 'font/otf',
  '.txt': 'text/plain; charset=utf-8',
  '.wasm': 'application/wasm',
};
const COMPRESSIBLE = new Set(['.html', '.js', '.mjs', '.css', '.json', '.map', '.svg', '.txt']);
/** Files Vite names with a content hash: they never change under the same name. */
const HASHED = /^\/assets\//;
const IMMUTABLE = 'public, max-age=31536000, immutable';

interface Found {
  readonly path: string;
  readonly size: number;
  readonly mtime: Date;
}

async function findFile(root: string, urlPath: string): Promise<Found | null> {
  let decoded: string;
  try {
    decoded = decodeURIComponent(urlPath);
  } catch {
    return null;
  }
  if (decoded.includes('\0')) return null;
  const path = resolve(root, `.${decoded}`);
  if (path !== root && !path.startsWith(root.endsWith(sep) ? root : root + sep)) return null;
  try {
    const info = await stat(path);
    return info.isFile() ? { path, size: info.size, mtime: info.mtime } : null;
  } catch {
    return null;
  }
}

function notBuilt(ctx: Context): void {
  ctx.status = 503;
  ctx.type = 'text/html; charset=utf-8';
  ctx.set('Cache-Control', 'no-store');
  ctx.body =
    '<!doctype html><meta charset="utf-8"><title>TianQi</title>' +
    '<p>控制台尚未构建：请运行 <code>npm run build</code>，或用 <code>npm start</code> 启动（会自动构建）。</p>' +
    '<p>The console is not built yet: run <code>npm run build</code>, or start with <code>npm start</code> (it builds it).</p>';
}

/**
 * The console's Content-Security-Policy: its own scripts only (Vite emits no inline script), its
 * own API and socket.io over HTTP(S) and WebSocket, inline styles (Element Plus positions popups
 * with them) and data: images and fonts; no framing, no plugins, forms and <base> to itself.
 */
export const CONSOLE_CSP = [
  "default-src 'self'",
  "script-src 'self'",
  "style-src 'self' 'unsafe-inline'",
  "img-src 'self' data: blob:",
  "font-src 'self' data:",
  "connect-src 'self' ws: wss:",
  "object-src 'none'",
  "frame-ancestors 'none'",
  "base-uri 'self'",
  "form-action 'self'",
].join('; ');

/**
 * Serves the Vue console from `dir` (ui/dist): files with their content type, hashed assets cached
 * for a year, and every other path without a file extension answered with index.html (history-mode
 * routing). Never answers for /api/* or /socket.io/*: those fall through to their own 404s.
 */
export function serveConsole(dir: string = CONSOLE_DIR): Middleware {
  const root = resolve(dir);
  const gzipped = new Map<string, { mtime: number; body: Buffer }>();

  async function send(ctx: Context, file: Found, cacheControl: string): Promise<void> {
    const ext = extname(file.path).toLowerCase();
    const etag = `W/"${file.size.toString(16)}-${file.mtime.getTime().toString(16)}"`;
    ctx.set('Cache-Control', cacheControl);
    ctx.set('X-Content-Type-Options', 'nosniff');
    ctx.set('ETag', etag);
    ctx.lastModified = file.mtime;
    ctx.type = TYPES[ext] ?? 'application/octet-stream';
    ctx.vary('Accept-Encoding');
    if (ext === '.html') {
      ctx.set('X-Frame-Options', 'DENY');
      ctx.set('Referrer-Policy', 'same-origin');
      ctx.set('Content-Security-Policy', CONSOLE_CSP);
      ctx.set('Cross-Origin-Opener-Policy', 'same-origin');
      ctx.set('Permissions-Policy', 'camera=(), microphone=(), geolocation=(), payment=()');
    }
    ctx.status = 200;
    if (ctx.fresh) {
      ctx.status = 304;
      return;
    }
    if (COMPRESSIBLE.has(ext) && file.size > 1024 && ctx.acceptsEncodings('gzip', 'identity') === 'gzip') {
      let cached = gzipped.get(file.path);
      if (!cached || cached.mtime !== file.mtime.getTime()) {
        cached = { mtime: file.mtime.getTime(), body: gzipSync(await readFile(file.path)) };
        gzipped.set(file.path, cached);
      }
      ctx.set('Content-Encoding', 'gzip');
      ctx.length = cached.body.length;
      ctx.body = cached.body;
      return;
    }
    ctx.length = file.size;
    ctx.body = createReadStream(file.path);
  }

  return async (ctx, next) => {
    const path = ctx.path;
    if ((ctx.method !== 'GET' && ctx.method !== 'HEAD') || path.startsWith('/api/') || path === '/api' || path.startsWith('/socket.io/')) {
      await next();
      return;
    }
    const index = await findFile(root, '/index.html');
    if (!index) {
      notBuilt(ctx);
      return;
    }
    if (path !== '/' && path !== '/index.html') {
      const file = await findFile(root, path);
      if (file) {
        await send(ctx, file, HASHED.test(path) ? IMMUTABLE : 'no-cache');
        return;
      }
      // A missing file (a stale hashed asset, /favicon.ico…) is a 404, not the page.
      if (extname(path) !== '') {
        await next();
        return;
      }
    }
    // The page itself is revalidated on every load, so a new build is picked up at once.
    await send(ctx, index, 'no-cache');
  };
}
