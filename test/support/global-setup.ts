import { buildHelper } from '../../scripts/build-helper.ts';

/**
 * Builds tianqi-helper (SFTP and port forwarding in containers) before the suites run, as
 * `npm start` does. Without Go the jump host suites that need it fail under
 * TIANQI_REQUIRE_SERVICES=1 and skip otherwise, saying so.
 */
export default function setup(): void {
  buildHelper({ log: (line) => console.warn(line) });
}
