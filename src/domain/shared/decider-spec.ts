import type { Command, CommandMetadata, Decider, DomainEvent } from './decider.ts';
import { DomainError } from './errors.ts';

/** A command as a spec writes it: type and data; the metadata is the spec's. */
export type SpecCommand<C extends Command> = C extends Command<infer T, infer D> ? { type: T; data: D } : never;

/**
 * Given / when / then over a decider, as Emmett's DeciderSpecification: the events so far, a
 * command, and the events it decides or the error it refuses with. Pure; throws an Error naming
 * what differed, so that it works under any test runner.
 *
 *   spec.given([requested, placed]).when({ type: 'RequestOperation', data: { operation: 'stop' } })
 *     .thenThrows('NO_CONTAINER');
 */
export function deciderSpec<C extends Command, S, E extends DomainEvent>(
  decider: Decider<C, S, E>,
  metadata: CommandMetadata = { now: '2026-01-01T00:00:00.000Z', userId: 'spec-user' },
) {
  return {
    given(events: readonly E[]) {
      const state = events.reduce(decider.evolve, decider.initialState());
      return {
        when(command: SpecCommand<C>) {
          const run = () => decider.decide({ ...command, metadata } as unknown as C, state);
          return {
            then(expected: readonly E[]): void {
              const actual = run();
              if (JSON.stringify(actual) !== JSON.stringify(expected)) {
                throw new Error(`${command.type}: expected ${JSON.stringify(expected)}, decided ${JSON.stringify(actual)}`);
              }
            },
            thenNothing(): void {
              const actual = run();
              if (actual.length > 0) throw new Error(`${command.type}: expected no events, decided ${JSON.stringify(actual)}`);
            },
            /** Refused with a DomainError of this code (or this status). */
            thenThrows(expected: string | number): void {
              let decided: E[];
              try {
                decided = run();
              } catch (error) {
                if (!(error instanceof DomainError)) throw new Error(`${command.type}: threw ${String(error)}, not a DomainError`);
                const got = typeof expected === 'number' ? error.status : error.code;
                if (got !== expected) throw new Error(`${command.type}: refused with ${error.code} (${error.status}), expected ${expected}`);
                return;
              }
              throw new Error(`${command.type}: expected a refusal ${expected}, decided ${JSON.stringify(decided)}`);
            },
          };
        },
      };
    },
  };
}
