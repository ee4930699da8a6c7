import type { Command, Decider, DomainEvent } from '../shared/decider.ts';
import { assertNever } from '../shared/decider.ts';
import { UnauthorizedError } from '../shared/errors.ts';

/**
 * A service link's ticket is good once: its redemption is an event on a stream of its own
 * (`service-ticket-<id>`), appended only where the stream does not exist yet, so a second
 * redemption — by anyone, on any replica — is refused, and the audit shows who opened what.
 */
export const serviceTicketStream = (ticketId: string) => `service-ticket-${ticketId}`;

export type ServiceTicketEvent = DomainEvent<'ServiceTicketRedeemed', { userId: string; instanceId: string; port: number; form: 'host' | 'port'; clientAddress: string }>;
export type ServiceTicketCommand = Command<'RedeemServiceTicket', ServiceTicketEvent['data']>;

export const serviceTicketDecider: Decider<ServiceTicketCommand, { redeemed: boolean }, ServiceTicketEvent> = {
  initialState: () => ({ redeemed: false }),
  decide(command, state) {
    switch (command.type) {
      case 'RedeemServiceTicket':
        if (state.redeemed) throw new UnauthorizedError('This link has been used already. Open the service again from the console.', 'LINK_EXPIRED');
        return [{ type: 'ServiceTicketRedeemed', data: command.data }];
      default:
        return assertNever(command.type);
    }
  },
  evolve(_state, event) {
    switch (event.type) {
      case 'ServiceTicketRedeemed':
        return { redeemed: true };
      default:
        return assertNever(event.type);
    }
  },
};
