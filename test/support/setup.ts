// Runs in every test file: logs at LOG_LEVEL (vitest.config.ts sets `warn`) until a test parses a
// configuration of its own.
import { configureLog } from '../../lib/core/log';

configureLog({ logLevel: process.env.LOG_LEVEL ?? 'warn' });
