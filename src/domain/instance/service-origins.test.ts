import { describe, expect, it } from 'vitest';
import { deciderSpec } from '../shared/decider-spec.ts';
import { serviceOriginsDecider, type ServiceOriginEvent } from './service-origins.ts';
import { serviceTicketDecider } from './service-tickets.ts';

const spec = deciderSpec(serviceOriginsDecider);
const range = { min: 28000, max: 28002 };
const assigned = (listenPort: number, instanceId: string, port = 8888, generation = `g${listenPort}${instanceId}`): ServiceOriginEvent =>
  ({ type: 'ServiceOriginAssigned', data: { listenPort, instanceId, port, generation } });
const assign = (instanceId: string, port = 8888, gone: { listenPort: number; reason: 'instance-deleted' }[] = []) =>
  ({ type: 'AssignServiceOrigin' as const, data: { instanceId, port, range, generation: 'new', gone } });

describe('service origins (the port form\'s ledger)', () => {
  it('gives a service the lowest port never used, and the same port again while it holds one', () => {
    spec.given([]).when(assign('a')).then([assigned(28000, 'a', 8888, 'new')]);
    spec.given([assigned(28000, 'a')]).when(assign('a')).thenNothing();
    spec.given([assigned(28000, 'a')]).when(assign('a', 6006)).then([assigned(28001, 'a', 6006, 'new')]);
  });

  it('reuses the port released longest ago once every port has been used', () => {
    const a = assigned(28000, 'a'); const b = assigned(28001, 'b'); const c = assigned(28002, 'c');
    const release = (e: ServiceOriginEvent): ServiceOriginEvent => ({ type: 'ServiceOriginReleased', data: { ...e.data, reason: 'instance-deleted' } });
    spec.given([a, b, c, release(b), release(a)]).when(assign('d')).then([assigned(28001, 'd', 8888, 'new')]);
  });

  it('takes back a port whose service is gone only when the range is full, and refuses with NO_SERVICE_PORT when none is', () => {
    const full = [assigned(28000, 'a'), assigned(28001, 'b'), assigned(28002, 'c')];
    spec.given(full).when(assign('d')).thenThrows('NO_SERVICE_PORT');
    spec.given(full).when(assign('d', 8888, [{ listenPort: 28001, reason: 'instance-deleted' }])).then([
      { type: 'ServiceOriginReleased', data: { ...assigned(28001, 'b').data, reason: 'instance-deleted' } },
      assigned(28001, 'd', 8888, 'new'),
    ]);
  });

  it('moves a service whose port the range no longer covers', () => {
    const old = assigned(27000, 'a');
    spec.given([old]).when(assign('a')).then([
      { type: 'ServiceOriginReleased', data: { ...old.data, reason: 'outside-range' } },
      assigned(28000, 'a', 8888, 'new'),
    ]);
  });

  it('releases an instance\'s ports, or one of them', () => {
    const given = [assigned(28000, 'a'), assigned(28001, 'a', 6006), assigned(28002, 'b')];
    spec.given(given).when({ type: 'ReleaseServiceOrigins', data: { instanceId: 'a', port: 6006, reason: 'port-removed' } })
      .then([{ type: 'ServiceOriginReleased', data: { ...assigned(28001, 'a', 6006).data, reason: 'port-removed' } }]);
    spec.given(given).when({ type: 'ReleaseServiceOrigins', data: { instanceId: 'a', reason: 'instance-deleted' } }).then([
      { type: 'ServiceOriginReleased', data: { ...assigned(28000, 'a').data, reason: 'instance-deleted' } },
      { type: 'ServiceOriginReleased', data: { ...assigned(28001, 'a', 6006).data, reason: 'instance-deleted' } },
    ]);
    spec.given(given).when({ type: 'ReleaseServiceOrigins', data: { instanceId: 'z', reason: 'instance-deleted' } }).thenNothing();
  });
});

describe('service tickets', () => {
  const redeem = { type: 'RedeemServiceTicket' as const, data: { userId: 'u', instanceId: 'a', port: 8888, form: 'port' as const, clientAddress: '127.0.0.1' } };
  it('are good once', () => {
    deciderSpec(serviceTicketDecider).given([]).when(redeem).then([{ type: 'ServiceTicketRedeemed', data: redeem.data }]);
    deciderSpec(serviceTicketDecider).given([{ type: 'ServiceTicketRedeemed', data: redeem.data }]).when(redeem).thenThrows('LINK_EXPIRED');
    expect(serviceTicketDecider.initialState()).toEqual({ redeemed: false });
  });
});
