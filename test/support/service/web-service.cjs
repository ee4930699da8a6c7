// A web service for the proxy tests, run by the node binary inside a test container: HTTP on
// 0.0.0.0:8888 and on the container's loopback only at 127.0.0.1:6006, a WebSocket echo on both.
'use strict';
const http = require('node:http');
const crypto = require('node:crypto');

function handler(req, res) {
  const url = new URL(req.url, 'http://x');
  const path = url.pathname.replace(/^\/svc\/[^/]+\/\d+/, '');
  if (path === '/bytes') {
    const total = Number(url.searchParams.get('n') || 0);
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': total });
    const chunk = Buffer.alloc(256 * 1024, 'x');
    let sent = 0;
    const pump = () => {
      while (sent < total) {
        const part = chunk.subarray(0, Math.min(chunk.length, total - sent));
        sent += part.length;
        if (!res.write(part)) return res.once('drain', pump);
      }
      res.end();
    };
    return pump();
  }
  if (path === '/upload') {
    const hash = crypto.createHash('sha256');
    let bytes = 0;
    req.on('data', (d) => { bytes += d.length; hash.update(d); });
    req.on('end', () => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ bytes, sha256: hash.digest('hex') }));
    });
    return;
  }
  if (path === '/cookies') {
    res.writeHead(200, {
      'set-cookie': ['app=1; Path=/; Domain=127.0.0.1; HttpOnly', 'tianqi_service=stolen; Path=/', 'tianqi_service_28000=planted; Path=/; Domain=localhost',
        '__tq28000_sid=planted; Path=/', 'deep=2; Path=/lab', '_xsrf=x1; Path=/'],
      'content-type': 'text/plain',
    });
    return res.end('cookies');
  }
  if (path.endsWith('/sw.js')) {
    // A service worker script that asks to rule the whole origin, and to wipe the browser's data.
    res.writeHead(200, { 'content-type': 'text/javascript', 'service-worker-allowed': '/', 'clear-site-data': '"*"', 'strict-transport-security': 'max-age=31536000' });
    return res.end("self.addEventListener('fetch', () => {});");
  }
  if (path === '/drip') {
    // An answer that never ends (a log stream, server-sent events): a line every 100 ms.
    res.writeHead(200, { 'content-type': 'text/event-stream' });
    const timer = globalThis.setInterval(() => res.write('data: tick\n\n'), 100);
    res.on('close', () => globalThis.clearInterval(timer));
    return;
  }
  if (path === '/redirect-self') { res.writeHead(302, { location: 'http://127.0.0.1:8888/lab?x=1' }); return res.end(); }
  if (path === '/redirect-root') { res.writeHead(302, { location: '/login' }); return res.end(); }
  if (path === '/redirect-away') { res.writeHead(302, { location: 'https://example.org/elsewhere' }); return res.end(); }
  if (path === '/listen') {
    // An app that starts late, on all addresses (Jupyter with --ip=0.0.0.0 a moment after the container).
    return serve('0.0.0.0', Number(url.searchParams.get('port')), () => { res.writeHead(200, { 'content-type': 'text/plain' }); res.end('listening'); });
  }
  if (path === '/chunked') {
    // An answer of unknown length: chunked coding, in parts.
    res.writeHead(200, { 'content-type': 'text/plain' });
    for (let i = 0; i < 5; i++) res.write(`part ${i}\n`);
    return res.end();
  }
  if (path === '/then-close') {
    // A kept-alive connection the service closes just after its answer (its keep-alive timeout).
    res.writeHead(200, { 'content-type': 'text/plain', 'content-length': 3 });
    res.end('bye', () => globalThis.setImmediate(() => req.socket.destroy()));
    return;
  }
  if (path === '/not-http') {
    // Bytes that are no HTTP answer, then the close.
    req.socket.end('SSH-2.0-OpenSSH_9.2\r\n\r\n');
    return;
  }
  if (path === '/cut') {
    // A length promised and not kept: the service dies in the middle of its answer.
    req.socket.write('HTTP/1.1 200 OK\r\ncontent-length: 1000\r\ncontent-type: text/plain\r\n\r\nonly this');
    globalThis.setImmediate(() => req.socket.destroy());
    return;
  }
  if (path === '/hang') return;
  if (path === '/reset') return req.socket.destroy();
  res.writeHead(200, { 'content-type': 'application/json' });
  // remote: who connected, the bridge's gateway for the platform's direct route, this loopback for its tunnel through the engine.
  res.end(JSON.stringify({ port: req.socket.localPort, remote: req.socket.remoteAddress, remotePort: req.socket.remotePort, method: req.method, url: req.url, headers: req.headers }));
}

/** The WebSocket handshake (RFC 6455) and an echo of each text or binary frame, unmasked back. */
function upgrade(req, socket) {
  const key = req.headers['sec-websocket-key'];
  const accept = crypto.createHash('sha1').update(key + '258EAFA5-E914-47DA-95CA-C5AB0DC85B11').digest('base64');
  socket.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\n\r\n`);
  let pending = Buffer.alloc(0);
  socket.on('data', (data) => {
    pending = Buffer.concat([pending, data]);
    for (;;) {
      if (pending.length < 2) return;
      const opcode = pending[0] & 0x0f;
      let length = pending[1] & 0x7f;
      let offset = 2;
      if (length === 126) { if (pending.length < 4) return; length = pending.readUInt16BE(2); offset = 4; }
      else if (length === 127) { if (pending.length < 10) return; length = Number(pending.readBigUInt64BE(2)); offset = 10; }
      const masked = (pending[1] & 0x80) !== 0;
      const need = offset + (masked ? 4 : 0) + length;
      if (pending.length < need) return;
      const mask = masked ? pending.subarray(offset, offset + 4) : null;
      const payload = Buffer.from(pending.subarray(offset + (masked ? 4 : 0), need));
      if (mask) for (let i = 0; i < payload.length; i++) payload[i] ^= mask[i % 4];
      pending = pending.subarray(need);
      if (opcode === 8) return socket.end(Buffer.from([0x88, 0]));
      if (opcode === 9) { socket.write(frame(10, payload)); continue; }
      if (opcode === 1 || opcode === 2) socket.write(frame(opcode, payload));
    }
  });
  socket.on('error', () => socket.destroy());
}

function frame(opcode, payload) {
  const head = payload.length < 126 ? Buffer.from([0x80 | opcode, payload.length])
    : payload.length < 65536 ? Buffer.from([0x80 | opcode, 126, payload.length >> 8, payload.length & 0xff])
      : Buffer.concat([Buffer.from([0x80 | opcode, 127]), (() => { const b = Buffer.alloc(8); b.writeBigUInt64BE(BigInt(payload.length)); return b; })()]);
  return Buffer.concat([head, payload]);
}

function serve(host, port, done) {
  const server = http.createServer(handler);
  server.on('upgrade', upgrade);
  server.listen(port, host, () => {
    console.log(`listening on ${host}:${port}`);
    done();
  });
}

for (const [host, port] of [['0.0.0.0', 8888], ['127.0.0.1', 6006]]) serve(host, port, () => {});
process.on('SIGTERM', () => process.exit(0));
