import { describe, expect, it } from 'vitest';
import { deciderSpec } from './decider-spec.ts';
import type { Command, Decider, DomainEvent } from './decider.ts';
import { ConflictError } from './errors.ts';

type Counted = DomainEvent<'Counted', { by: number }>;
type Count = Command<'Count', { by: number }>;
/** A counter that refuses to go past 2. */
const counter: Decider<Count, number, Counted> = {
  initialState: () => 0,
  evolve: (state, event) => state + event.data.by,
  decide(command, state) {
    if (state + command.data.by > 2) throw new ConflictError('TOO_HIGH', 'at most 2');
    return command.data.by === 0 ? [] : [{ type: 'Counted', data: command.data }];
  },
};
const spec = deciderSpec(counter);
const counted = (by: number): Counted => ({ type: 'Counted', data: { by } });

describe('deciderSpec', () => {
  it('passes when the decision is the one expected', () => {
    spec.given([counted(1)]).when({ type: 'Count', data: { by: 1 } }).then([counted(1)]);
    spec.given([]).when({ type: 'Count', data: { by: 0 } }).thenNothing();
    spec.given([counted(2)]).when({ type: 'Count', data: { by: 1 } }).thenThrows('TOO_HIGH');
    spec.given([counted(2)]).when({ type: 'Count', data: { by: 1 } }).thenThrows(409);
  });

  it('fails, saying what differed, when it is not', () => {
    expect(() => spec.given([]).when({ type: 'Count', data: { by: 1 } }).then([counted(2)])).toThrow(/expected .*"by":2.*decided .*"by":1/);
    expect(() => spec.given([]).when({ type: 'Count', data: { by: 1 } }).thenNothing()).toThrow(/expected no events/);
    expect(() => spec.given([]).when({ type: 'Count', data: { by: 1 } }).thenThrows('TOO_HIGH')).toThrow(/expected a refusal TOO_HIGH/);
    expect(() => spec.given([counted(2)]).when({ type: 'Count', data: { by: 1 } }).thenThrows('OTHER')).toThrow(/refused with TOO_HIGH/);
  });
});
