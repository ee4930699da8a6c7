import { X509Certificate } from 'node:crypto';
import { once } from 'node:events';
import { connect, createServer, type TLSSocket } from 'node:tls';
import { describe, expect, it } from 'vitest';
import { certificateFingerprint, createCa, createCsr, CsrError, issueClientCertificate, issueServerCertificate } from './platform-pki.ts';

/** A real TLS handshake: the server asks for a client certificate of `serverCa`; resolves with who connected, or the error. */
async function handshake(server: { cert: string; key: string; ca: string }, client: { cert: string; key: string; ca: string }, servername = '127.0.0.1') {
  const listener = createServer({ ...server, requestCert: true, rejectUnauthorized: true }, (socket) => socket.end('hello'));
  listener.on('tlsClientError', () => undefined);
  listener.listen(0, '127.0.0.1');
  await once(listener, 'listening');
  const port = (listener.address() as { port: number }).port;
  try {
    return await new Promise<string>((resolve, reject) => {
      const socket: TLSSocket = connect({ host: '127.0.0.1', port, ...(servername === '127.0.0.1' ? {} : { servername }), ...client }, () => {
        socket.once('data', (d: Buffer) => { resolve(d.toString()); socket.destroy(); });
      });
      socket.once('error', reject);
      socket.once('end', () => reject(new Error('closed by the server')));
    });
  } finally {
    listener.close();
  }
}

describe('the platform CA', () => {
  it('issues a server certificate for the agent\'s own key and a client certificate that verify against it, in a real TLS handshake', async () => {
    const ca = await createCa();
    const caCert = new X509Certificate(ca.certPem);
    expect(caCert.ca).toBe(true);
    const agent = await createCsr();
    const server = await issueServerCertificate(ca, agent.csrPem, { nodeId: 'n1', names: ['127.0.0.1', 'gpu-01.lab'] });
    const serverCert = new X509Certificate(server.certPem);
    expect(serverCert.verify(caCert.publicKey)).toBe(true);
    expect(serverCert.checkIP('127.0.0.1')).toBe('127.0.0.1');
    expect(serverCert.checkHost('gpu-01.lab')).toBe('gpu-01.lab');
    expect(serverCert.checkHost('gpu-02.lab')).toBeUndefined();
    expect(server.fingerprint).toBe(certificateFingerprint(server.certPem));
    const client = await issueClientCertificate(ca, { nodeId: 'n1' });
    expect(new X509Certificate(client.certPem).verify(caCert.publicKey)).toBe(true);
    expect(Date.parse(client.notAfter) - Date.now()).toBeGreaterThan(700 * 86_400_000);

    const answer = await handshake(
      { cert: server.certPem, key: agent.keyPem, ca: ca.certPem },
      { cert: client.certPem, key: client.keyPem, ca: ca.certPem },
    );
    expect(answer).toBe('hello');

    // A client of another CA is refused by the server; a server of another CA by the client.
    const other = await createCa();
    const stranger = await issueClientCertificate(other, { nodeId: 'n1' });
    await expect(handshake({ cert: server.certPem, key: agent.keyPem, ca: ca.certPem }, { cert: stranger.certPem, key: stranger.keyPem, ca: ca.certPem })).rejects.toThrow();
    await expect(handshake({ cert: server.certPem, key: agent.keyPem, ca: ca.certPem }, { cert: client.certPem, key: client.keyPem, ca: other.certPem })).rejects.toThrow(/certificate/);
    // The certificate names the node's addresses only.
    await expect(handshake({ cert: server.certPem, key: agent.keyPem, ca: ca.certPem }, { cert: client.certPem, key: client.keyPem, ca: ca.certPem }, 'gpu-02.lab')).rejects.toThrow(/altnames|Hostname/);
  });

  it('refuses a certificate request that is unreadable or whose signature does not hold', async () => {
    const ca = await createCa();
    await expect(issueServerCertificate(ca, 'not a csr', { nodeId: 'n1', names: ['10.0.0.1'] })).rejects.toThrow(CsrError);
    const { csrPem } = await createCsr();
    const body = csrPem.replace(/-----[^-]+-----/g, '').replace(/\s+/g, '');
    const der = Buffer.from(body, 'base64');
    der[der.length - 5] = der[der.length - 5]! ^ 0xff; // inside the signature
    const tampered = `-----BEGIN CERTIFICATE REQUEST-----\n${der.toString('base64')}\n-----END CERTIFICATE REQUEST-----\n`;
    await expect(issueServerCertificate(ca, tampered, { nodeId: 'n1', names: ['10.0.0.1'] })).rejects.toThrow(CsrError);
  });
});
