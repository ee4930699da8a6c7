import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['src/**/*.test.ts', 'test/**/*.test.ts'],
    testTimeout: 30_000,
    hookTimeout: 60_000,
    // Engine suites share one dockerd / FerretDB; files run in parallel, tests inside a file in order.
    pool: 'forks',
    globalSetup: ['test/support/global-setup.ts'],
  },
});
