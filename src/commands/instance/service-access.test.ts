import { describe, expect, it } from 'vitest';
import { hostAddress, ServiceGrants, TICKET_LIFETIME_MS, type ServiceAddress } from './service-access.ts';

const ID = '0b3c2f1e-8d7a-4c55-9e21-5a6b7c8d9e0f';

describe('service addresses', () => {
  it('reads the host form under the domain only, ports aside', () => {
    expect(hostAddress(`6006-${ID}.svc.example.com`, 'svc.example.com')).toEqual({ instanceId: ID, port: 6006, form: 'host' });
    expect(hostAddress(`6006-${ID}.SVC.example.com:8443`, 'svc.example.com:443')?.port).toBe(6006);
    expect(hostAddress(`6006-${ID}.svc.example.com`, undefined)).toBeNull();
    expect(hostAddress(`6006-${ID}.evil.com`, 'svc.example.com')).toBeNull();
    expect(hostAddress(`x.6006-${ID}.svc.example.com`, 'svc.example.com')).toBeNull();
    expect(hostAddress('svc.example.com', 'svc.example.com')).toBeNull();
  });
});

describe('service grants', () => {
  const key = Buffer.alloc(32, 1);
  let now = 1_000_000;
  const grants = new ServiceGrants(key, () => now);
  const address: ServiceAddress = { instanceId: ID, port: 8888, form: 'port', listenPort: 28000, generation: 'g1' };

  it('opens the one port of the one instance it was issued for, while it lasts', () => {
    const issued = grants.issue('t', 'user-1', 'pwd-time', address);
    const ticket = issued.value;
    expect(grants.verify('t', ticket, address)).toEqual({ sub: 'user-1', pwd: 'pwd-time', expiresAt: now + TICKET_LIFETIME_MS, id: issued.id });
    // bound to its form, its platform port and that port's assignment
    expect(grants.verify('t', ticket, { form: 'host', instanceId: ID, port: 8888 })).toBeNull();
    expect(grants.verify('t', ticket, { ...address, listenPort: 28001 })).toBeNull();
    expect(grants.verify('t', ticket, { ...address, generation: 'g2' })).toBeNull();
    expect(grants.verify('c', ticket, address)).toBeNull();
    expect(grants.verify('t', ticket, { ...address, port: 6006 })).toBeNull();
    expect(grants.verify('t', ticket, { ...address, instanceId: ID.replace('0b', '1b') })).toBeNull();
    now += TICKET_LIFETIME_MS;
    expect(grants.verify('t', ticket, address)).toBeNull();
  });

  it('carries the sign-in a link was opened with from the ticket to the cookie, so that signing out ends the link too', () => {
    const signIn = { id: 'sid-1', issuedAtMs: 1_700_000_000_123 };
    const ticket = grants.issue('t', 'user-1', 'pwd-time', address, signIn);
    const redeemed = grants.verify('t', ticket.value, address)!;
    expect(redeemed.signIn).toEqual(signIn);
    const cookie = grants.issue('c', redeemed.sub, redeemed.pwd, address, redeemed.signIn).value;
    expect(grants.verify('c', cookie, address)!.signIn).toEqual(signIn);
    expect(grants.verify('c', grants.issue('c', 'user-1', 'pwd-time', address).value, address)!.signIn).toBeUndefined();
  });

  it('refuses a changed body, another key\'s signature and garbage', () => {
    const cookie = grants.issue('c', 'user-1', 'pwd-time', address).value;
    const [body, signature] = cookie.split('.');
    const forged = Buffer.from(JSON.stringify({ ...JSON.parse(Buffer.from(body!, 'base64url').toString()), sub: 'admin' })).toString('base64url');
    expect(grants.verify('c', `${forged}.${signature}`, address)).toBeNull();
    expect(new ServiceGrants(Buffer.alloc(32, 2), () => now).verify('c', cookie, address)).toBeNull();
    for (const junk of ['', '.', 'a.b.c', `${body}.`, 'not base64!.x']) expect(grants.verify('c', junk, address)).toBeNull();
  });
});
