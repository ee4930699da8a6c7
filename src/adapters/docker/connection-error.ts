import type { ConnectionFailureKind } from '../../ports/docker.port.ts';

/** What was being tried, so that a reason can name the address and the likely fix. */
export interface ConnectionAttempt {
  /** A socket path or `host:port`. */
  readonly target: string;
  readonly transport: 'unix' | 'tcp';
  readonly tls: boolean;
  readonly caCertificate: boolean;
  readonly clientCertificate: boolean;
}

export interface ConnectionFailure {
  readonly kind: ConnectionFailureKind;
  readonly reason: string;
}

/** Node's codes for a server certificate that does not verify against the CA we hold. */
const UNTRUSTED_CERTIFICATE = new Set([
  'SELF_SIGNED_CERT_IN_CHAIN',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'CERT_SIGNATURE_FAILURE',
  'CERT_UNTRUSTED',
  'CERT_REJECTED',
  'INVALID_CA',
]);

/** TLS alerts an engine sends when it does not accept the client certificate (or its absence). */
const CLIENT_CERTIFICATE_ALERTS = new Set([
  'bad certificate',
  'certificate required',
  'unknown ca',
  'certificate unknown',
  'unsupported certificate',
  'certificate revoked',
  'certificate expired',
  'access denied',
]);

const UNREACHABLE = new Set(['EHOSTUNREACH', 'ENETUNREACH', 'EHOSTDOWN', 'ENETDOWN', 'EADDRNOTAVAIL']);

const MAX_DETAIL = 200;

/**
 * Turns whatever a failed ping/info threw (a Node socket or TLS error, an OpenSSL error, a
 * docker-modem HTTP error) into a kind and an English reason naming the cause. Pure, never throws.
 */
export function classifyConnectionError(error: unknown, attempt: ConnectionAttempt): ConnectionFailure {
  const { code, message, statusCode, body } = factsOf(error);
  const { target } = attempt;

  if (statusCode !== undefined) return httpFailure(statusCode, body ?? message, attempt);

  if (UNTRUSTED_CERTIFICATE.has(code)) {
    const hint = attempt.caCertificate
      ? 'check the CA certificate'
      : "no CA certificate was given, so only public CAs were trusted: add the engine's CA";
    return certificate(`TLS certificate rejected: ${clip(message)} (${hint})`);
  }
  if (code === 'CERT_HAS_EXPIRED') return certificate(`TLS certificate rejected: the engine's certificate has expired (${message})`);
  if (code === 'CERT_NOT_YET_VALID') {
    return certificate(`TLS certificate rejected: the engine's certificate is not valid yet (${message}; check both clocks)`);
  }
  if (code === 'ERR_TLS_CERT_ALTNAME_INVALID') {
    return certificate(`TLS certificate rejected: ${message} (connect by a name or address the engine's certificate lists)`);
  }
  if (code === 'ERR_OSSL_X509_KEY_VALUES_MISMATCH') {
    return certificate('the client certificate and the client key do not belong together');
  }
  if (code.startsWith('ERR_OSSL_') && /PEM|DECODER|ASN1|x509/i.test(message)) {
    return certificate(`the CA certificate, client certificate or key could not be read (${openSslReason(error, message)}); paste them as PEM`);
  }

  const alert = tlsAlertOf(message);
  if (alert !== undefined) {
    if (CLIENT_CERTIFICATE_ALERTS.has(alert)) {
      return certificate(
        attempt.clientCertificate
          ? `the engine refused the client certificate (TLS alert: ${alert}; check that the engine's CA issued it)`
          : `the engine refused the client certificate: none was given and it requires one (TLS alert: ${alert})`,
      );
    }
    return { kind: 'protocol', reason: `the TLS handshake with ${target} failed (TLS alert: ${alert})` };
  }
  if (/wrong version number|packet length too long|unknown protocol/i.test(message)) {
    return { kind: 'protocol', reason: `${target} does not speak TLS (turn TLS off, or use the engine's TLS port)` };
  }
  if (code.startsWith('HPE_')) {
    return { kind: 'protocol', reason: `${target} does not answer in HTTP (is it a Docker engine?)` };
  }

  if (attempt.transport === 'unix') {
    if (code === 'ENOENT') return { kind: 'not-found', reason: `no Docker socket at ${target}` };
    if (code === 'ECONNREFUSED') return { kind: 'refused', reason: `nothing listens on ${target} (is dockerd running?)` };
    if (code === 'EACCES' || code === 'EPERM') {
      return { kind: 'refused', reason: `permission denied on ${target} (the platform's user needs access to the Docker socket)` };
    }
    if (code === 'ENOTSOCK') return { kind: 'not-found', reason: `${target} is not a socket` };
  }
  if (code === 'ECONNREFUSED') return { kind: 'refused', reason: `connection refused at ${target}` };
  if (code === 'ENOTFOUND' || code === 'EAI_AGAIN' || code === 'EAI_NONAME') {
    return { kind: 'not-found', reason: `the host of ${target} could not be resolved (${code})` };
  }
  if (code === 'ETIMEDOUT' || code === 'ABORT_ERR') return { kind: 'timeout', reason: `connecting to ${target} timed out` };
  if (UNREACHABLE.has(code)) return { kind: 'other', reason: `${target} is unreachable (${code})` };
  if (code === 'ECONNRESET' || code === 'EPIPE') {
    return { kind: 'other', reason: `${target} closed the connection without answering (${code}${hangUpHint(attempt)})` };
  }
  return { kind: 'other', reason: `${target}: ${clip(message) || code || 'unknown error'}` };
}

/**
 * A hang-up has causes we cannot tell apart from here. A TLS 1.3 server checks the client
 * certificate after our side of the handshake is done, and some then close without an alert;
 * a TLS front that is not dockerd (a Node or nginx proxy) may close on a plain HTTP request.
 */
function hangUpHint(attempt: ConnectionAttempt): string {
  if (attempt.tls) {
    return attempt.clientCertificate
      ? '; with TLS this is also how an engine can refuse a client certificate'
      : '; the engine may require a client certificate';
  }
  return attempt.transport === 'tcp' ? "; if it is the engine's TLS port, turn TLS on" : '';
}

function certificate(reason: string): ConnectionFailure {
  return { kind: 'certificate', reason };
}

function httpFailure(status: number, body: string, attempt: ConnectionAttempt): ConnectionFailure {
  const detail = clip(body);
  if (status === 400 && /HTTP request to an HTTPS server/i.test(body)) {
    return { kind: 'protocol', reason: 'the endpoint speaks HTTPS but TLS is off (turn TLS on and give the certificates)' };
  }
  if (status >= 500) return { kind: 'other', reason: `the engine at ${attempt.target} answered HTTP ${status}${detail ? `: ${detail}` : ''}` };
  return {
    kind: 'protocol',
    reason: `HTTP ${status} from ${attempt.target}${detail ? `: ${detail}` : ''} (is it a Docker engine?)`,
  };
}

interface ErrorFacts {
  readonly code: string;
  readonly message: string;
  readonly statusCode?: number;
  readonly body?: string;
}

/**
 * Reads the fields that matter from anything thrown. Node 20 may report a failed connection as an
 * AggregateError (one error per address tried), so the first inner error stands in for it.
 */
function factsOf(error: unknown): ErrorFacts {
  if (!(error instanceof Error)) return { code: '', message: redact(String(error)) };
  const inner = error instanceof AggregateError ? (error.errors[0] as unknown) : undefined;
  const source = inner instanceof Error && !codeOf(error) ? inner : error;
  const record = error as Error & { statusCode?: unknown; json?: unknown };
  return {
    code: codeOf(source),
    message: redact(source.message.trim()),
    statusCode: typeof record.statusCode === 'number' ? record.statusCode : undefined,
    body: bodyOf(record.json),
  };
}

function codeOf(error: Error): string {
  const code = (error as NodeJS.ErrnoException).code;
  return typeof code === 'string' ? code : '';
}

/** docker-modem keeps the response body in `json`: parsed JSON, or a Buffer when it was not JSON. */
function bodyOf(json: unknown): string | undefined {
  if (json === undefined || json === null) return undefined;
  if (Buffer.isBuffer(json)) return redact(json.toString('utf8').trim());
  if (typeof json === 'string') return redact(json.trim());
  if (typeof json === 'object' && typeof (json as { message?: unknown }).message === 'string') {
    return redact((json as { message: string }).message.trim());
  }
  return redact(JSON.stringify(json));
}

/** OpenSSL puts the short cause in `reason` ("no start line"); its message carries file and line noise. */
function openSslReason(error: unknown, message: string): string {
  const reason = (error as { reason?: unknown }).reason;
  return typeof reason === 'string' && reason ? reason : message;
}

/** "…:ssl3_read_bytes:sslv3 alert bad certificate:…" → "bad certificate". */
function tlsAlertOf(message: string): string | undefined {
  return /(?:sslv3|tlsv1|tlsv13) alert ([a-z ]+?)(?::|$)/i.exec(message)?.[1]?.toLowerCase();
}

function clip(text: string): string {
  const oneLine = text.replace(/\s+/g, ' ').trim();
  return oneLine.length > MAX_DETAIL ? `${oneLine.slice(0, MAX_DETAIL)}…` : oneLine;
}

/** A reason is shown and stored: no PEM block ever goes into one, whole or cut off. */
function redact(text: string): string {
  return text.replace(/-----BEGIN [^-]*-----[\s\S]*?(?:-----END [^-]*-----|$)/g, '[PEM redacted]');
}
