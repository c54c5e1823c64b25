import { defineConfig } from 'vitest/config';
import base from './vitest.config';

// The fault suite (test/faults/): kills private MariaDB, FerretDB, SMTP, convert and `npm start` mid-burst.
// Minutes long, so it is its own run: `npm run test:faults` (CI runs it after `npm test`). Same setup as
// the main suite; only which files and how long a test may take differ.
export default defineConfig({
  test: {
    ...base.test,
    include: ['test/faults/**/*.test.ts'],
    exclude: ['node_modules/**'],
    testTimeout: 300_000,
    // Outages make every component warn, as they should; the suite's own assertions say what went wrong.
    env: { LOG_LEVEL: process.env.LOG_LEVEL ?? 'error' },
    hookTimeout: 180_000,
    reporters: process.env.CI ? ['verbose', ['json', { outputFile: '.vitest-faults-results.json' }]] : ['default'],
  },
});
