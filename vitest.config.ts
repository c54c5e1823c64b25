import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    globalSetup: ['test/support/global-setup.ts'],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    // Files share the real services; each file makes its own databases, queues and rows.
    pool: 'forks',
    fileParallelism: true,
  },
});
