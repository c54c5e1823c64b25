import { configDefaults, defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // The fault suite is its own run (vitest.faults.config.ts).
    exclude: [...configDefaults.exclude, 'test/faults/**'],
    globalSetup: ['test/support/global-setup.ts'],
    setupFiles: ['test/support/setup.ts'],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    pool: 'forks',
    // Files run one at a time: they share the real queues `video` and `mp3`, and two cores.
    fileParallelism: false,
    env: { LOG_LEVEL: process.env.LOG_LEVEL ?? 'warn' },
    // CI's log shows every test by name (e.g. that auth ran against MariaDB).
    reporters: process.env.CI ? ['verbose', ['json', { outputFile: '.vitest-results.json' }]] : ['default'],
  },
});
