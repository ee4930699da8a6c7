// Mutual-TLS front for an already running Docker engine that .ci/run reuses but whose own TCP
// listener (if any) does not use this run's certificates. Byte-level proxy, so hijacked streams
// (attach, exec) pass through unchanged. Node built-ins only.
//
//   node .ci/docker-tls-proxy.mjs <listen-host> <listen-port> <docker-socket> <ca.pem> <server.pem> <server-key.pem>
import { readFileSync } from 'node:fs';
import net from 'node:net';
import process from 'node:process';
import tls from 'node:tls';

const [host, port, socketPath, caFile, certFile, keyFile] = process.argv.slice(2);
if (!keyFile) {
  process.stderr.write('usage: docker-tls-proxy.mjs <host> <port> <docker-socket> <ca.pem> <server.pem> <server-key.pem>\n');
  process.exit(2);
}

const server = tls.createServer(
  {
    ca: readFileSync(caFile),
    cert: readFileSync(certFile),
    key: readFileSync(keyFile),
    requestCert: true,
    rejectUnauthorized: true, // like dockerd --tlsverify: a client certificate of this CA is required
    allowHalfOpen: true,
  },
  (client) => {
    const upstream = net.connect({ path: socketPath, allowHalfOpen: true });
    client.pipe(upstream);
    upstream.pipe(client);
    const close = () => {
      client.destroy();
      upstream.destroy();
    };
    client.on('error', close);
    upstream.on('error', close);
    client.on('close', () => upstream.end());
    upstream.on('close', () => client.end());
  },
);
server.on('tlsClientError', (error) => process.stderr.write(`tls client rejected: ${error.message}\n`));
server.listen(Number(port), host, () => process.stderr.write(`docker TLS proxy on ${host}:${port} -> ${socketPath}\n`));
for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => process.exit(0));
}
