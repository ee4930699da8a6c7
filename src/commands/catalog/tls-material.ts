import { X509Certificate, createPrivateKey, type KeyObject } from 'node:crypto';

const PEM_BLOCK = /-----BEGIN ([A-Z0-9 ]+)-----\r?\n([\s\S]*?)\r?\n-----END \1-----/g;

function pemBlocks(text: string): { label: string; pem: string }[] {
  return [...text.matchAll(PEM_BLOCK)].map((m) => ({ label: m[1]!, pem: m[0] }));
}

/** A CA bundle: one or more PEM certificates. Returns a reason when it is not one. */
export function checkCaBundle(text: string): string | null {
  const blocks = pemBlocks(text);
  if (blocks.length === 0) return 'must be a PEM certificate (-----BEGIN CERTIFICATE-----)';
  for (const block of blocks) {
    if (block.label !== 'CERTIFICATE') return `must hold only certificates, found ${block.label}`;
    try {
      const cert = new X509Certificate(block.pem);
      if (!cert.ca) return 'is not a CA certificate (basicConstraints CA:FALSE)';
    } catch {
      return 'is not a readable PEM certificate';
    }
  }
  return null;
}

export function parseCertificate(text: string): X509Certificate | string {
  const blocks = pemBlocks(text);
  if (blocks.length === 0 || blocks[0]!.label !== 'CERTIFICATE') return 'must be a PEM certificate (-----BEGIN CERTIFICATE-----)';
  try {
    return new X509Certificate(blocks[0]!.pem);
  } catch {
    return 'is not a readable PEM certificate';
  }
}

export function parsePrivateKey(text: string): KeyObject | string {
  const blocks = pemBlocks(text);
  if (blocks.length !== 1 || !/PRIVATE KEY$/.test(blocks[0]!.label)) {
    return 'must be one PEM private key (PKCS#8, RSA or EC)';
  }
  if (/ENCRYPTED/.test(blocks[0]!.label) || /Proc-Type: 4,ENCRYPTED/.test(blocks[0]!.pem)) {
    return 'must not be passphrase-protected';
  }
  try {
    return createPrivateKey(blocks[0]!.pem);
  } catch {
    return 'is not a readable PEM private key';
  }
}

/**
 * Validates the TLS material of a node form. Returns a reason per bad field (`tlsCa`, `tlsCert`,
 * `tlsKey`); a client certificate and key that do not belong together are reported on `tlsKey`.
 * Reasons never quote the material.
 */
export function tlsMaterialProblems(input: { tlsCa?: string; tlsCert?: string; tlsKey?: string }): Record<string, string> {
  const problems: Record<string, string> = {};
  if (input.tlsCa) {
    const reason = checkCaBundle(input.tlsCa);
    if (reason) problems.tlsCa = reason;
  }
  const cert = input.tlsCert ? parseCertificate(input.tlsCert) : undefined;
  if (typeof cert === 'string') problems.tlsCert = cert;
  const key = input.tlsKey ? parsePrivateKey(input.tlsKey) : undefined;
  if (typeof key === 'string') problems.tlsKey = key;
  if (cert instanceof X509Certificate && key && typeof key !== 'string' && !cert.checkPrivateKey(key)) {
    problems.tlsKey = 'does not match the client certificate';
  }
  if (cert instanceof X509Certificate && new Date(cert.validTo).getTime() < Date.now()) {
    problems.tlsCert = `expired on ${new Date(cert.validTo).toISOString().slice(0, 10)}`;
  }
  return problems;
}
