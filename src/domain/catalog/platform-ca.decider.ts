import type { Command, Decider, DomainEvent } from '../shared/decider.ts';

/**
 * The platform's own certificate authority for node agents: created once, on the first join
 * command, its key sealed like every other secret. One stream, so two replicas cannot make two.
 */
export const PLATFORM_CA_STREAM = 'platform-ca';

export type PlatformCaEvent = DomainEvent<'PlatformCaCreated', { certPem: string; keySealed: string; fingerprint: string }>;
export type PlatformCaCommand = Command<'CreatePlatformCa', { certPem: string; keySealed: string; fingerprint: string }>;
export type PlatformCaState = { readonly status: 'none' } | { readonly status: 'created'; readonly certPem: string; readonly keySealed: string; readonly fingerprint: string };

export const platformCaDecider: Decider<PlatformCaCommand, PlatformCaState, PlatformCaEvent> = {
  initialState: () => ({ status: 'none' }),
  // A CA made meanwhile by another replica wins; this one's is dropped.
  decide: (command, state) => (state.status === 'created' ? [] : [{ type: 'PlatformCaCreated', data: command.data }]),
  evolve: (_state, event) => ({ status: 'created', ...event.data }),
};
