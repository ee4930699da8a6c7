import type { Command, Decider, DomainEvent } from '../shared/decider.ts';
import { assertNever } from '../shared/decider.ts';
import { ConflictError, UnprocessableError } from '../shared/errors.ts';

/**
 * A client's `Idempotency-Key`: the first request with a key claims it, its answer is recorded,
 * and a repeat with the same key gets that answer without running again.
 */
export type IdempotencyEvent =
  | DomainEvent<'IdempotentRequestStarted', { requestHash: string; method: string; path: string }>
  | DomainEvent<'IdempotentRequestCompleted', { status: number; body: unknown }>
  | DomainEvent<'IdempotentRequestAbandoned', { reason: string }>;

export type IdempotencyCommand =
  | Command<'StartIdempotentRequest', { requestHash: string; method: string; path: string }>
  | Command<'CompleteIdempotentRequest', { status: number; body: unknown }>
  | Command<'AbandonIdempotentRequest', { reason: string }>;

export type IdempotencyState =
  | { readonly status: 'free' }
  | { readonly status: 'started'; readonly requestHash: string }
  | { readonly status: 'completed'; readonly requestHash: string; readonly answer: { status: number; body: unknown } };

export const idempotencyDecider: Decider<IdempotencyCommand, IdempotencyState, IdempotencyEvent> = {
  initialState: () => ({ status: 'free' }),
  decide(command, state) {
    switch (command.type) {
      case 'StartIdempotentRequest':
        if (state.status !== 'free' && state.requestHash !== command.data.requestHash) {
          throw new UnprocessableError('IDEMPOTENCY_KEY_REUSED', 'This Idempotency-Key was used for a different request.');
        }
        if (state.status === 'started') {
          throw new ConflictError('REQUEST_IN_PROGRESS', 'A request with this Idempotency-Key is still running.');
        }
        if (state.status === 'completed') return [];
        return [{ type: 'IdempotentRequestStarted', data: command.data }];
      case 'CompleteIdempotentRequest':
        return state.status === 'started' ? [{ type: 'IdempotentRequestCompleted', data: command.data }] : [];
      case 'AbandonIdempotentRequest':
        return state.status === 'started' ? [{ type: 'IdempotentRequestAbandoned', data: command.data }] : [];
      default:
        return assertNever(command);
    }
  },
  evolve(state, event) {
    switch (event.type) {
      case 'IdempotentRequestStarted':
        return { status: 'started', requestHash: event.data.requestHash };
      case 'IdempotentRequestCompleted':
        return state.status === 'started'
          ? { status: 'completed', requestHash: state.requestHash, answer: event.data }
          : state;
      case 'IdempotentRequestAbandoned':
        return { status: 'free' };
      default:
        return assertNever(event);
    }
  },
};
