// @peculiar/x509 resolves its ASN.1 schemas through tsyringe, which needs the Reflect metadata API.
import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import { createHash, randomBytes, webcrypto, X509Certificate, type webcrypto as WebCrypto } from 'node:crypto';
import { isIP } from 'node:net';
import { CsrError, type CaMaterial, type IssuedCertificate, type Pki } from '../../ports/pki.port.ts';

type CryptoKey = WebCrypto.CryptoKey;

x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);

/** ECDSA P-256 with SHA-256: what Docker, Go's TLS stack and every browser accept, and small. */
const ALGORITHM = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;
const DAY = 86_400_000;
/** Certificates start an hour back, so that a node whose clock is a little behind accepts them at once. */
const BACKDATE = 3_600_000;

export const CA_DAYS = 3_650;
/** Node certificates (server and client): two years; rotating them is one call (`POST /nodes/:id/rotate-certificates`). */
export const NODE_CERT_DAYS = 730;

export { CsrError };

function serial(): string {
  // Positive, 16 bytes of randomness (RFC 5280 allows up to 20 octets).
  const bytes = randomBytes(16);
  bytes[0] = bytes[0]! & 0x7f;
  return bytes.toString('hex');
}

async function exportPkcs8(key: CryptoKey): Promise<string> {
  const der = Buffer.from(await webcrypto.subtle.exportKey('pkcs8', key));
  return `-----BEGIN PRIVATE KEY-----\n${der.toString('base64').replace(/.{64}/g, '$&\n').replace(/\n?$/, '\n')}-----END PRIVATE KEY-----\n`;
}

async function importPkcs8(pem: string): Promise<CryptoKey> {
  const der = Buffer.from(pem.replace(/-----[^-]+-----/g, '').replace(/\s+/g, ''), 'base64');
  return webcrypto.subtle.importKey('pkcs8', der, ALGORITHM, false, ['sign']);
}

/** The SHA-256 of a certificate's DER encoding, lower-case hex: how the agent pins the platform's client. */
export function certificateFingerprint(certPem: string): string {
  return createHash('sha256').update(new X509Certificate(certPem).raw).digest('hex');
}

function validity(now: Date, days: number) {
  return { notBefore: new Date(now.getTime() - BACKDATE), notAfter: new Date(now.getTime() + days * DAY) };
}

/** The platform's own certificate authority: it signs the node agents' server certificates and the platform's client certificates. */
export async function createCa(now = new Date(), label = randomBytes(4).toString('hex')): Promise<CaMaterial> {
  const keys = await webcrypto.subtle.generateKey(ALGORITHM, true, ['sign', 'verify']);
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serial(),
    name: `CN=TianQi platform CA ${label}, O=TianQi GPU Manager`,
    ...validity(now, CA_DAYS),
    signingAlgorithm: ALGORITHM,
    keys,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  return { certPem: cert.toString('pem'), keyPem: await exportPkcs8(keys.privateKey) };
}

/** Subject alternative names for a node's server certificate: IP addresses as IPs, the rest as DNS names. */
function altNames(names: readonly string[]): x509.JsonGeneralName[] {
  const unique = [...new Set(names.map((n) => n.trim().replace(/^\[|\]$/g, '')).filter(Boolean))];
  return unique.map((n) => (isIP(n) ? { type: 'ip', value: n } : { type: 'dns', value: n }));
}

async function issue(ca: CaMaterial, subject: string, publicKey: CryptoKey, extensions: x509.Extension[], now: Date, days: number): Promise<IssuedCertificate> {
  const caCert = new x509.X509Certificate(ca.certPem);
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: serial(),
    subject,
    issuer: caCert.subject,
    ...validity(now, days),
    signingAlgorithm: ALGORITHM,
    publicKey,
    signingKey: await importPkcs8(ca.keyPem),
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      await x509.SubjectKeyIdentifierExtension.create(publicKey),
      await x509.AuthorityKeyIdentifierExtension.create(caCert),
      ...extensions,
    ],
  });
  const pem = cert.toString('pem');
  return { certPem: pem, fingerprint: certificateFingerprint(pem), notAfter: cert.notAfter.toISOString() };
}

/**
 * A server certificate for a node agent, for the key in its certificate request (the key never
 * leaves the node). Throws CsrError when the request is unreadable, not ECDSA P-256 / RSA, or its
 * signature does not hold (the agent did not have the key).
 */
export async function issueServerCertificate(ca: CaMaterial, csrPem: string, input: { nodeId: string; names: readonly string[]; now?: Date; days?: number }): Promise<IssuedCertificate> {
  let csr: x509.Pkcs10CertificateRequest;
  try {
    csr = new x509.Pkcs10CertificateRequest(csrPem);
  } catch {
    throw new CsrError('the certificate request is not a readable PEM PKCS#10 request');
  }
  let ok = false;
  try {
    ok = await csr.verify();
  } catch {
    ok = false;
  }
  if (!ok) throw new CsrError('the certificate request\'s signature does not hold');
  const algorithm = csr.publicKey.algorithm as { name: string; namedCurve?: string };
  if (algorithm.name !== 'ECDSA' || algorithm.namedCurve !== 'P-256') throw new CsrError('the certificate request must be for an ECDSA P-256 key');
  const publicKey = await csr.publicKey.export(ALGORITHM, ['verify']);
  return issue(ca, `CN=tianqi-agent ${input.nodeId}`, publicKey, [
    new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
    new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
    new x509.SubjectAlternativeNameExtension(altNames(input.names)),
  ], input.now ?? new Date(), input.days ?? NODE_CERT_DAYS);
}

/** A client certificate and key for the platform to reach one node's agent with (one per node, so removing a node revokes only its own). */
export async function issueClientCertificate(ca: CaMaterial, input: { nodeId: string; now?: Date; days?: number }): Promise<IssuedCertificate & { keyPem: string }> {
  const keys = await webcrypto.subtle.generateKey(ALGORITHM, true, ['sign', 'verify']);
  const issued = await issue(ca, `CN=tianqi-platform node ${input.nodeId}`, keys.publicKey, [
    new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
    new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.clientAuth]),
  ], input.now ?? new Date(), input.days ?? NODE_CERT_DAYS);
  return { ...issued, keyPem: await exportPkcs8(keys.privateKey) };
}

/** A certificate request for a fresh key, as the agent makes one (tests, and the platform's own checks). */
export async function createCsr(commonName = 'tianqi-agent'): Promise<{ csrPem: string; keyPem: string }> {
  const keys = await webcrypto.subtle.generateKey(ALGORITHM, true, ['sign', 'verify']);
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({ name: `CN=${commonName}`, keys, signingAlgorithm: ALGORITHM });
  return { csrPem: csr.toString('pem'), keyPem: await exportPkcs8(keys.privateKey) };
}

/** The Pki port over the functions above. */
export const platformPki: Pki = {
  createCa: (now) => createCa(now),
  fingerprint: certificateFingerprint,
  issueServerCertificate,
  issueClientCertificate,
};
