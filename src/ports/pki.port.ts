/** Certificates for node agents: the platform's CA, server certificates for the agents' own keys, client certificates for the platform. */
export interface CaMaterial {
  readonly certPem: string;
  readonly keyPem: string;
}

export interface IssuedCertificate {
  readonly certPem: string;
  /** SHA-256 of the certificate's DER encoding, lower-case hex. */
  readonly fingerprint: string;
  readonly notAfter: string;
}

/** A certificate request that cannot be signed: unreadable, its signature broken, or not for a P-256 key. */
export class CsrError extends Error {}

export interface Pki {
  createCa(now: Date): Promise<CaMaterial>;
  fingerprint(certPem: string): string;
  /** Throws CsrError for a request that cannot be signed. */
  issueServerCertificate(ca: CaMaterial, csrPem: string, input: { nodeId: string; names: readonly string[]; now: Date }): Promise<IssuedCertificate>;
  issueClientCertificate(ca: CaMaterial, input: { nodeId: string; now: Date }): Promise<IssuedCertificate & { keyPem: string }>;
}
