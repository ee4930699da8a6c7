import { describe } from 'vitest';

/**
 * Engine-backed suites call this instead of `describe`. Without the engine they skip and say what
 * to start; with TIANQI_REQUIRE_SERVICES=1 (as in CI) a missing engine fails the run instead.
 */
export function describeWithService(
  service: string,
  available: boolean,
  howToStart: string,
  title: string,
  body: () => void,
): void {
  if (available) {
    describe(title, body);
    return;
  }
  if (process.env.TIANQI_REQUIRE_SERVICES === '1') {
    describe(title, () => {
      throw new Error(`${service} is required (TIANQI_REQUIRE_SERVICES=1) but not available: ${howToStart}`);
    });
    return;
  }
  console.warn(`[skipped] ${title}: no ${service}. ${howToStart}`);
  describe.skip(`${title} (skipped: no ${service}; ${howToStart})`, body);
}
