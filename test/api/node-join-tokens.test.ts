import { afterAll, beforeAll, expect, it, describe } from 'vitest';
import { createCsr } from '../../src/adapters/pki/platform-pki.ts';
import { ADMIN_PASSWORD, startTestApp, type TestApp } from '../support/app.ts';

interface Failure { error: { code: string; message: string } }

/** Join tokens without an engine: the join itself needs none (the agent starts after it). */
describe('join tokens', () => {
  let t: TestApp;
  let admin: string;
  let nodeId: string;

  beforeAll(async () => {
    t = await startTestApp();
    admin = await t.login('admin', ADMIN_PASSWORD);
    nodeId = (await t.api<{ id: string }>('POST', '/api/v1/nodes', { token: admin, body: { name: 'n1', publicIp: '10.9.0.5', privateIp: '10.9.0.5', agentPort: 9376 } })).body.id;
  });
  afterAll(async () => t?.stop());

  it('work once even when eight joins race with the same token', async () => {
    const { token } = (await t.api<{ token: string }>('POST', `/api/v1/nodes/${nodeId}/join-tokens`, { token: admin, body: {} })).body;
    const csrs = await Promise.all(Array.from({ length: 8 }, () => createCsr()));
    const answers = await Promise.all(csrs.map(({ csrPem }, i) => t.api<{ serverCert: string } & Failure>('POST', '/api/v1/join', {
      body: { token, csr: csrPem, hostname: `host-${i}`, arch: 'amd64', version: 'v', time: new Date().toISOString(), address: '10.9.0.5' },
    })));
    expect(answers.filter((a) => a.status === 200)).toHaveLength(1);
    const refused = answers.filter((a) => a.status !== 200);
    expect(refused.map((a) => [a.status, a.body.error.code])).toEqual(Array.from({ length: 7 }, () => [401, 'JOIN_TOKEN_USED']));
    const node = (await t.api<{ join: { agent: { hostname: string } }; dockerEndpoint: string }>('GET', `/api/v1/nodes/${nodeId}`, { token: admin })).body;
    const winner = answers.findIndex((a) => a.status === 200);
    expect(node.join.agent.hostname).toBe(`host-${winner}`);
    expect(node.dockerEndpoint).toBe('tcp://10.9.0.5:9376');
  });

  it('are only for nodes added with the agent, and never logged', async () => {
    const engineNode = (await t.api<{ id: string }>('POST', '/api/v1/nodes', { token: admin, body: { name: 'n2', publicIp: '10.9.0.6', privateIp: '10.9.0.6', dockerEndpoint: 'unix:///nonexistent.sock' } })).body.id;
    const refused = await t.api<Failure>('POST', `/api/v1/nodes/${engineNode}/join-tokens`, { token: admin, body: {} });
    expect([refused.status, refused.body.error.code]).toEqual([409, 'NOT_AN_AGENT_NODE']);
    const { token } = (await t.api<{ token: string }>('POST', `/api/v1/nodes/${nodeId}/join-tokens`, { token: admin, body: {} })).body;
    await fetch(`${t.url}/api/v1/join/${token}/install.sh`);
    const secret = token.split('.')[2]!;
    expect(t.logs.join('\n')).not.toContain(secret);
    // Only admins issue them.
    expect((await t.api('POST', `/api/v1/nodes/${nodeId}/join-tokens`, { body: {} })).status).toBe(401);
  });
});
