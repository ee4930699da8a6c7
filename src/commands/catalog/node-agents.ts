import { createHash, randomBytes } from 'node:crypto';
import { request } from 'node:https';
import { isIP } from 'node:net';
import type { Logger } from 'pino';
import { liveJoinToken, nodeDecider, nodeStream, type NodeState } from '../../domain/catalog/node.decider.ts';
import { PLATFORM_CA_STREAM, platformCaDecider } from '../../domain/catalog/platform-ca.decider.ts';
import { ConflictError, UnauthorizedError, UnprocessableError, ValidationError } from '../../domain/shared/errors.ts';
import type { DockerConnectionSettings } from '../../ports/docker.port.ts';
import type { HelperBuilds } from '../../ports/helper-builds.port.ts';
import { CsrError, type CaMaterial, type Pki } from '../../ports/pki.port.ts';
import type { SecretBox } from '../../ports/secret-box.port.ts';
import type { CommandBus, CommandContext } from '../command-bus.ts';
import type { Nodes } from './nodes.ts';

/** A join whose clock is further off than this is refused: the certificates would not be valid there, or expire early. */
export const MAX_CLOCK_SKEW_MS = 5 * 60_000;
export const DEFAULT_JOIN_TOKEN_MINUTES = 120;
export const HELPER_ARCHITECTURES = ['amd64', 'arm64'] as const;

export interface IssuedJoinToken {
  readonly tokenId: string;
  /** Shown once: only its SHA-256 is kept. */
  readonly token: string;
  readonly expiresAt: string;
  /** The one line to run as root on the GPU server. */
  readonly command: string;
  readonly caSha256: string;
}

export interface JoinRequest {
  readonly token: string;
  readonly csr: string;
  readonly hostname: string;
  readonly arch: string;
  readonly version: string;
  /** The node's clock when it asked (RFC 3339). */
  readonly time: string;
  /** Where the platform reaches the node; empty: the address the join came from. */
  readonly address: string;
  /** The node's own unicast addresses: its certificate names them too. */
  readonly addresses: readonly string[];
}

export interface JoinAnswer {
  readonly nodeId: string;
  readonly caCert: string;
  readonly serverCert: string;
  /** SHA-256 of the client certificates the agent accepts: the platform's for this node. */
  readonly clients: readonly string[];
  readonly port: number;
  readonly address: string;
}

const TOKEN = /^tqj\.([0-9a-f-]{36})\.([A-Za-z0-9_-]{32})$/;

const sha256 = (text: string | Buffer) => createHash('sha256').update(text).digest('hex');

/** A shell word: single quotes, with any single quote closed, escaped and reopened. */
const shellWord = (value: string) => `'${value.replace(/'/g, `'\\''`)}'`;

/**
 * Nodes that join in one command: join tokens, the platform's CA, the join itself, rotating the
 * agent's certificates, and telling the agent that its node was removed.
 */
export class NodeAgents {
  private caMaterial: (CaMaterial & { fingerprint: string }) | null = null;

  constructor(
    private readonly bus: CommandBus,
    private readonly pki: Pki,
    private readonly secrets: SecretBox,
    private readonly helpers: HelperBuilds,
    private readonly nodes: Nodes,
    private readonly logger?: Logger,
    private readonly clock: () => number = Date.now,
  ) {}

  /** The platform CA: made on first use, its key sealed on its own stream; a CA another replica made at the same time wins. */
  async ca(): Promise<CaMaterial & { fingerprint: string }> {
    if (this.caMaterial) return this.caMaterial;
    let { state } = await this.bus.load(platformCaDecider, PLATFORM_CA_STREAM);
    if (state.status === 'none') {
      const made = await this.pki.createCa(new Date(this.clock()));
      const fingerprint = this.pki.fingerprint(made.certPem);
      ({ state } = await this.bus.execute(platformCaDecider, PLATFORM_CA_STREAM, {
        type: 'CreatePlatformCa', data: { certPem: made.certPem, keySealed: this.secrets.seal(made.keyPem), fingerprint },
      }, { correlationId: 'platform-ca' }));
    }
    if (state.status !== 'created') throw new Error('the platform CA could not be made');
    this.caMaterial = { certPem: state.certPem, keyPem: this.secrets.open(state.keySealed), fingerprint: state.fingerprint };
    return this.caMaterial;
  }

  /** A single-use token for the node and the command that uses it (`base`: the platform's URL as the node reaches it). */
  async issueToken(nodeId: string, base: string, minutes: number, context: CommandContext): Promise<IssuedJoinToken> {
    const ca = await this.ca();
    const token = `tqj.${nodeId}.${randomBytes(24).toString('base64url')}`;
    const hash = sha256(token);
    const tokenId = hash.slice(0, 12);
    const now = context.now ? new Date(context.now) : new Date(this.clock());
    const expiresAt = new Date(now.getTime() + minutes * 60_000).toISOString();
    await this.bus.execute(nodeDecider, nodeStream(nodeId), { type: 'IssueJoinToken', data: { tokenId, hash, expiresAt } }, { ...context, now: now.toISOString() });
    const url = `${base.replace(/\/+$/, '')}/api/v1/join/${token}/install.sh`;
    return { tokenId, token, expiresAt, command: `curl -sSL ${shellWord(url)} | sh`, caSha256: ca.fingerprint };
  }

  async revokeToken(nodeId: string, tokenId: string, context: CommandContext): Promise<void> {
    await this.bus.execute(nodeDecider, nodeStream(nodeId), { type: 'RevokeJoinToken', data: { tokenId } }, context);
  }

  /** The node a token names, and the token when it can still be used (throws why not). */
  private async live(token: string): Promise<{ nodeId: string; state: Exclude<NodeState, { status: 'none' }>; hash: string }> {
    const match = TOKEN.exec(token);
    if (!match) throw new UnauthorizedError('This is not a join token: copy the command from the node\'s page again.', 'JOIN_TOKEN_INVALID');
    const nodeId = match[1]!;
    const { state } = await this.bus.load(nodeDecider, nodeStream(nodeId));
    if (state.status !== 'active') throw new UnauthorizedError('The node of this join token was deleted.', 'JOIN_TOKEN_INVALID');
    const hash = sha256(token);
    liveJoinToken(state, hash, new Date(this.clock()).toISOString());
    return { nodeId, state, hash };
  }

  /** The install script the command runs: checks, fetches the helper (its digest checked), joins, starts the agent. */
  async installScript(token: string, base: string): Promise<string> {
    const { state } = await this.live(token);
    const ca = await this.ca();
    const digests = HELPER_ARCHITECTURES.map((arch) => {
      const build = this.helpers.forArch(arch);
      return `    ${arch}) WANT=${build ? sha256(build.binary) : 'none'} ;;`;
    }).join('\n');
    return installScript({
      platform: base.replace(/\/+$/, ''), token, caSha256: ca.fingerprint, port: state.settings.agentPort!, nodeName: state.settings.name, digests,
    });
  }

  /** The helper build for the node's architecture, for a live token only. */
  async helperBinary(token: string, arch: string): Promise<Buffer> {
    await this.live(token);
    const build = this.helpers.forArch(arch);
    if (!build) throw new UnprocessableError('HELPER_MISSING', `The platform has no tianqi-helper build for ${arch}.`);
    return build.binary;
  }

  /**
   * The join: checks the token and the node's clock, signs the agent's key, makes the platform's
   * client certificate for this node, and records both with the token spent (a second join with
   * it is refused, also one racing this one). The connection is then tested until the agent
   * answers (it starts once it has this answer).
   */
  async join(input: JoinRequest, clientIp: string, context: CommandContext): Promise<JoinAnswer> {
    const { nodeId, state, hash } = await this.live(input.token);
    const now = new Date(this.clock());
    const their = Date.parse(input.time);
    const skew = their - now.getTime();
    if (!Number.isFinite(their)) throw new ValidationError({ time: 'must be an RFC 3339 time' });
    if (Math.abs(skew) > MAX_CLOCK_SKEW_MS) {
      throw new UnprocessableError('CLOCK_SKEW', `The node's clock is ${describeSkew(skew)} the platform's (node ${input.time}, platform ${now.toISOString()}): certificates would not be valid there. Set its time (timedatectl set-ntp true, or chronyc makestep) and run the command again; the token is not used up.`);
    }
    const address = (input.address || clientIp || state.settings.privateIp).replace(/^::ffff:/, '');
    if (!address) throw new ValidationError({ address: 'is required: the platform could not tell the node\'s address' });
    const ca = await this.ca();
    let server;
    try {
      server = await this.pki.issueServerCertificate(ca, input.csr, {
        nodeId, now, names: [address, input.hostname, ...input.addresses, state.settings.privateIp, state.settings.publicIp],
      });
    } catch (err) {
      if (err instanceof CsrError) throw new ValidationError({ csr: err.message });
      throw err;
    }
    const client = await this.pki.issueClientCertificate(ca, { nodeId, now });
    const port = state.settings.agentPort!;
    const host = isIP(address) === 6 ? `[${address}]` : address;
    await this.bus.execute(nodeDecider, nodeStream(nodeId), {
      type: 'CompleteJoin',
      data: {
        hash,
        dockerEndpoint: `tcp://${host}:${port}`,
        tlsCa: ca.certPem,
        tlsCert: client.certPem,
        tlsKeySealed: this.secrets.seal(client.keyPem),
        agent: {
          hostname: input.hostname, version: input.version, arch: input.arch, address,
          serverFingerprint: server.fingerprint, clientFingerprint: client.fingerprint,
          certExpiresAt: server.notAfter < client.notAfter ? server.notAfter : client.notAfter,
        },
      },
    }, { ...context, now: now.toISOString() });
    this.nodes.forget(nodeId);
    void this.testUntilConnected(nodeId);
    return { nodeId, caCert: ca.certPem, serverCert: server.certPem, clients: [client.fingerprint], port, address };
  }

  /** After a join: the agent starts when it has its answer; the node is `connected` as soon as it answers (within about a minute, else the reconcile loop finds it). */
  private async testUntilConnected(nodeId: string): Promise<void> {
    for (const delay of [300, 700, 1_000, 2_000, 3_000, 5_000, 8_000, 13_000, 21_000]) {
      await new Promise((resolve) => setTimeout(resolve, delay));
      try {
        await this.nodes.testConnection(nodeId, { correlationId: 'node-join' });
        const { state } = await this.bus.load(nodeDecider, nodeStream(nodeId));
        if (state.status !== 'active' || state.connection.status === 'connected') return;
      } catch (err) {
        this.logger?.debug({ err, nodeId }, 'testing a joined node failed');
        return;
      }
    }
  }

  /**
   * New certificates for a joined node's agent: a new key on the node (its certificate request),
   * a new client certificate here. The agent accepts both clients until the new one is recorded,
   * then only the new one: a failure half way leaves the node reachable with the old one.
   */
  async rotate(nodeId: string, context: CommandContext): Promise<void> {
    const { state } = await this.bus.load(nodeDecider, nodeStream(nodeId));
    if (state.status !== 'active') throw new ValidationError({ id: 'is not a node' });
    const agent = state.join.agent;
    if (!agent) throw new ConflictError('AGENT_NOT_JOINED', `No agent has joined node ${state.settings.name}: rotation is for nodes added with the join command.`);
    const current = this.nodes.connectionSettings(state);
    const ca = await this.ca();
    const now = new Date(this.clock());
    const { csr } = await agentCall<{ csr: string }>(current, 'POST', '/_tianqi/agent/csr');
    const server = await this.pki.issueServerCertificate(ca, csr, { nodeId, now, names: [agent.address, agent.hostname, state.settings.privateIp, state.settings.publicIp] });
    const client = await this.pki.issueClientCertificate(ca, { nodeId, now });
    await agentCall(current, 'PUT', '/_tianqi/agent/tls', { serverCert: server.certPem, clients: [agent.clientFingerprint, client.fingerprint] });
    await this.bus.execute(nodeDecider, nodeStream(nodeId), {
      type: 'RecordAgentRotation',
      data: {
        tlsCert: client.certPem, tlsKeySealed: this.secrets.seal(client.keyPem),
        serverFingerprint: server.fingerprint, clientFingerprint: client.fingerprint,
        certExpiresAt: server.notAfter < client.notAfter ? server.notAfter : client.notAfter,
      },
    }, { ...context, now: now.toISOString() });
    this.nodes.forget(nodeId);
    await agentCall({ ...current, cert: client.certPem, key: client.keyPem }, 'PUT', '/_tianqi/agent/tls', { clients: [client.fingerprint] });
    await this.nodes.testConnection(nodeId, context);
  }

  /** Tells a deleted node's agent to stop accepting the platform's client and stop. */
  async leave(settings: DockerConnectionSettings): Promise<void> {
    await agentCall(settings, 'POST', '/_tianqi/agent/leave');
  }

  /** What the agent says of itself (its build), or null where it does not answer. */
  async info(settings: DockerConnectionSettings): Promise<{ version: string; hostname: string } | null> {
    return agentCall<{ version: string; hostname: string }>(settings, 'GET', '/_tianqi/agent/info').catch(() => null);
  }
}

function describeSkew(ms: number): string {
  const seconds = Math.round(Math.abs(ms) / 1000);
  const text = seconds >= 3600 ? `${Math.floor(seconds / 3600)} h ${Math.round((seconds % 3600) / 60)} min` : seconds >= 60 ? `${Math.round(seconds / 60)} min` : `${seconds} s`;
  return `${text} ${ms > 0 ? 'ahead of' : 'behind'}`;
}

/** One request to a node agent's own operations, over the node's mutual TLS. */
export function agentCall<T = unknown>(settings: DockerConnectionSettings, method: string, path: string, body?: unknown): Promise<T> {
  const url = new URL(settings.endpoint.replace(/^tcp:/, 'https:'));
  const host = url.hostname.replace(/^\[|\]$/g, '');
  const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
  return new Promise<T>((resolve, reject) => {
    const req = request({
      host, port: Number(url.port), method, path,
      ca: settings.ca, cert: settings.cert, key: settings.key,
      ...(isIP(host) ? {} : { servername: host }),
      headers: payload ? { 'content-type': 'application/json', 'content-length': payload.length } : {},
      timeout: 10_000,
      agent: false,
    }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString();
        if ((res.statusCode ?? 500) >= 300) return reject(new Error(`the node agent answered ${res.statusCode}: ${text.slice(0, 200)}`));
        try {
          resolve(JSON.parse(text) as T);
        } catch {
          reject(new Error('the node agent\'s answer is not JSON'));
        }
      });
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error('the node agent did not answer within 10 s')));
    req.on('error', reject);
    req.end(payload);
  });
}

/** The script `curl … | sh` runs on the node. Everything it is given is quoted; it stops at the first failure with the reason. */
function installScript(v: { platform: string; token: string; caSha256: string; port: number; nodeName: string; digests: string }): string {
  return `#!/bin/sh
# TianQi GPU Manager: joins this server to the platform as node ${JSON.stringify(v.nodeName).slice(1, -1).replace(/[\r\n]/g, ' ')}.
# Run as root. Docker keeps running as it is: the agent serves its socket over mutual TLS on port ${v.port}.
# Settings (environment): TIANQI_AGENT_DIR (state, /var/lib/tianqi-agent), TIANQI_AGENT_BIN
# (/usr/local/bin/tianqi-helper), DOCKER_SOCKET (/var/run/docker.sock), TIANQI_AGENT_ADDRESS (the
# address the platform reaches this server on; default: the one it sees), TIANQI_AGENT_INIT
# (auto: systemd where there is one; none: run the agent in the foreground).
set -eu
PLATFORM=${shellWord(v.platform)}
TOKEN=${shellWord(v.token)}
CA_SHA256=${shellWord(v.caSha256)}
PORT=${v.port}
DIR="\${TIANQI_AGENT_DIR:-/var/lib/tianqi-agent}"
BIN="\${TIANQI_AGENT_BIN:-/usr/local/bin/tianqi-helper}"
SOCKET="\${DOCKER_SOCKET:-/var/run/docker.sock}"
ADDRESS="\${TIANQI_AGENT_ADDRESS:-}"
INIT="\${TIANQI_AGENT_INIT:-auto}"
say() { printf 'tianqi: %s\\n' "$*" >&2; }
fail() { say "$*"; exit 1; }

[ "$(id -u)" = 0 ] || fail "run this as root: the agent serves the Docker socket, which is root on this server"
case "$(uname -m)" in
  x86_64|amd64) ARCH=amd64 ;;
  aarch64|arm64) ARCH=arm64 ;;
  *) fail "no tianqi-helper build for $(uname -m)" ;;
esac
[ -S "$SOCKET" ] || fail "no Docker socket at $SOCKET: install and start Docker first (or set DOCKER_SOCKET)"
case "$ARCH" in
${v.digests}
esac
[ "$WANT" != none ] || fail "the platform has no tianqi-helper build for $ARCH"

TMP="$(mktemp)"
trap 'rm -f "$TMP"' EXIT
if command -v curl >/dev/null 2>&1; then
  curl -fsSL "$PLATFORM/api/v1/join/$TOKEN/helper/$ARCH" -o "$TMP" || fail "could not download tianqi-helper from $PLATFORM (is the token still valid?)"
elif command -v wget >/dev/null 2>&1; then
  wget -qO "$TMP" "$PLATFORM/api/v1/join/$TOKEN/helper/$ARCH" || fail "could not download tianqi-helper from $PLATFORM (is the token still valid?)"
else
  fail "needs curl or wget"
fi
GOT="$(sha256sum "$TMP" | cut -d' ' -f1)"
[ "$GOT" = "$WANT" ] || fail "the downloaded tianqi-helper is not the platform's build (SHA-256 $GOT, expected $WANT)"
mkdir -p "$(dirname "$BIN")"
# A running agent keeps its binary: replace it by a rename, never by writing into it.
cp "$TMP" "$BIN.new" && chmod 0755 "$BIN.new" && mv -f "$BIN.new" "$BIN"

"$BIN" agent join --platform "$PLATFORM" --token "$TOKEN" --ca-sha256 "$CA_SHA256" --listen ":$PORT" --state "$DIR" --docker "$SOCKET" --address "$ADDRESS"

if [ "$INIT" = none ]; then
  exec "$BIN" agent serve --state "$DIR"
fi
if [ "$INIT" = auto ] && [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
  cat > /etc/systemd/system/tianqi-agent.service <<UNIT
[Unit]
Description=TianQi node agent (Docker API over mutual TLS for the platform)
After=network-online.target docker.service
Wants=network-online.target

[Service]
ExecStart=$BIN agent serve --state $DIR
# Exit 0 is the platform removing the node: it stays stopped. Anything else restarts.
Restart=on-failure
RestartSec=3

[Install]
WantedBy=multi-user.target
UNIT
  systemctl daemon-reload
  systemctl enable tianqi-agent.service >/dev/null 2>&1
  systemctl restart tianqi-agent.service
  say "joined: the agent runs as tianqi-agent.service (journalctl -u tianqi-agent)"
else
  nohup "$BIN" agent serve --state "$DIR" >>"$DIR/agent.log" 2>&1 &
  say "joined: no systemd here, the agent runs in the background (log $DIR/agent.log); start it at boot with: $BIN agent serve --state $DIR"
fi
`;
}

/** What the install URL answers for a token that cannot be used: a script that says why, so `curl | sh` prints it. */
export function refusalScript(message: string): string {
  return `#!/bin/sh\nprintf 'tianqi: %s\\n' ${shellWord(message)} >&2\nexit 1\n`;
}

/** The platform's URL as the request came to it: its Host, and the scheme a trusted proxy says (else http). */
export function requestBase(headers: Record<string, string | string[] | undefined>, trustProxy: number): string {
  const first = (v: string | string[] | undefined) => (Array.isArray(v) ? v[0] : v)?.split(',')[0]?.trim();
  const forwarded = trustProxy > 0 ? first(headers['x-forwarded-proto']) : undefined;
  const scheme = forwarded === 'https' ? 'https' : 'http';
  const host = (trustProxy > 0 ? first(headers['x-forwarded-host']) : undefined) ?? first(headers.host) ?? 'localhost';
  return `${scheme}://${host}`;
}
