import { createHash } from 'node:crypto';
import type { CommandBus, CommandContext } from '../commands/command-bus.ts';
import { idempotencyDecider } from '../domain/idempotency/idempotency.decider.ts';
import { ValidationError } from '../domain/shared/errors.ts';
import { redactEventData } from '../domain/shared/redact.ts';
import { toErrorResponse } from './errors.ts';
import type { RouteResponse } from './route.ts';

const KEY_PATTERN = /^[\x21-\x7e]{1,128}$/;

/**
 * `Idempotency-Key` for writes: the same key from the same user gets the first answer back and
 * nothing is appended again. Claims live in the event log, so they hold across restarts and
 * replicas. A request that fails with a server error frees its key for a retry.
 */
export class IdempotencyGuard {
  constructor(private readonly bus: CommandBus) {}

  async run(
    userId: string,
    key: string,
    request: { method: string; path: string; body: unknown },
    context: CommandContext,
    execute: () => Promise<Required<Pick<RouteResponse, 'status'>> & RouteResponse>,
  ): Promise<{ status: number; body?: unknown; replayed: boolean }> {
    if (!KEY_PATTERN.test(key)) {
      throw new ValidationError({ 'Idempotency-Key': 'must be 1–128 visible ASCII characters' });
    }
    const stream = `idempotency-${createHash('sha256').update(`${userId}\n${key}`).digest('hex').slice(0, 40)}`;
    // Secrets in the body (a node's key, a webhook secret) are left out of the stored hash.
    const requestHash = createHash('sha256')
      .update(`${request.method} ${request.path}\n${JSON.stringify(redactEventData(request.body ?? null))}`)
      .digest('hex');
    const claim = await this.bus.execute(idempotencyDecider, stream, {
      type: 'StartIdempotentRequest',
      data: { requestHash, method: request.method, path: request.path },
    }, context);
    if (claim.state.status === 'completed' && claim.events.length === 0) {
      return { ...claim.state.answer, replayed: true };
    }
    let answer: Awaited<ReturnType<typeof execute>>;
    try {
      answer = await execute();
    } catch (err) {
      const status = (err as { status?: number }).status;
      if (typeof status === 'number' && status < 500) {
        const { body } = toErrorResponse(err);
        await this.complete(stream, status, body, context);
      } else {
        await this.bus.execute(idempotencyDecider, stream, { type: 'AbandonIdempotentRequest', data: { reason: 'server error' } }, context);
      }
      throw err;
    }
    await this.complete(stream, answer.status, answer.body ?? null, context);
    return { status: answer.status, body: answer.body, replayed: false };
  }

  private async complete(stream: string, status: number, body: unknown, context: CommandContext) {
    await this.bus.execute(idempotencyDecider, stream, { type: 'CompleteIdempotentRequest', data: { status, body } }, context);
  }
}
