/** A fact the domain recorded. Past tense: `UserRegistered`, `InstancePlaced`. */
export interface DomainEvent<Type extends string = string, Data extends object = object> {
  readonly type: Type;
  readonly data: Data;
}

/** Outside facts a decision may depend on; the domain never reads a clock or asks who is calling. */
export interface CommandMetadata {
  /** ISO-8601 time the command was accepted. */
  readonly now: string;
  /** The acting user; absent when the platform acts on its own. */
  readonly userId?: string;
}

/** An intent. Imperative: `RegisterUser`, `CreateInstance`. */
export interface Command<Type extends string = string, Data extends object = object> {
  readonly type: Type;
  readonly data: Data;
  readonly metadata: CommandMetadata;
}

/** Emmett-style decider: pure functions over one stream's state. */
export interface Decider<C extends Command, S, E extends DomainEvent> {
  decide(command: C, state: S): E[];
  evolve(state: S, event: E): S;
  initialState(): S;
}

export function assertNever(value: never): never {
  throw new Error(`unhandled case: ${JSON.stringify(value)}`);
}
