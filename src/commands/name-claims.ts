import { nameClaimDecider } from '../domain/shared/name-claim.decider.ts';
import type { CommandBus, CommandContext } from './command-bus.ts';

/**
 * Claims a unique name for `holderId`. A current holder whose own stream does not exist (see
 * `holderExists`) is a ghost from a crash between two appends and does not block the name.
 */
export async function claimName(
  bus: CommandBus,
  stream: string,
  holderId: string,
  holderExists: (holderId: string) => Promise<boolean>,
  taken: { code: string; message: string; field: string },
  context: CommandContext,
): Promise<void> {
  const { state } = await bus.load(nameClaimDecider, stream);
  const ghostHolder = state.holder && state.holder !== holderId && !(await holderExists(state.holder)) ? state.holder : null;
  await bus.execute(nameClaimDecider, stream, { type: 'ClaimName', data: { holderId, ghostHolder, taken } }, context);
}

export async function releaseName(bus: CommandBus, stream: string, holderId: string, context: CommandContext): Promise<void> {
  await bus.execute(nameClaimDecider, stream, { type: 'ReleaseName', data: { holderId } }, context);
}
