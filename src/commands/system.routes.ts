import { z } from 'zod';
import { route, type RouteSpec } from '../http/route.ts';
import type { PreflightProblem } from '../preflight.ts';

const ProblemSchema = z.object({
  code: z.enum(['DATA_DIR_NOT_WRITABLE', 'HELPER_MISSING', 'DOCKER_UNREACHABLE']),
  fatal: z.boolean(),
  text: z.string().meta({ description: 'one paragraph: what is missing and what to run (English)' }),
});

/** What the platform found missing when it started (`npm start` printed the same), for the console's node page. */
export function systemRoutes(problems: () => Promise<readonly PreflightProblem[]>): RouteSpec[] {
  return [
    route({
      method: 'get', path: '/system/problems', tag: 'nodes', access: 'admin',
      summary: 'What the platform needs and lacks (Docker on this machine, tianqi-helper builds), checked again on each call',
      response: z.array(ProblemSchema),
      async handler() {
        return (await problems()).map((p) => ({ ...p }));
      },
    }),
  ];
}
