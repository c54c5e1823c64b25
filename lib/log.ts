import { pino, type Logger } from 'pino';

/** Structured JSON lines on stdout; level from LOG_LEVEL (read here only to log before config parses). */
export const log: Logger = pino({
  level: process.env.LOG_LEVEL ?? 'info',
  base: { service: process.env.K_SERVICE ?? 'video2mp3' },
  timestamp: pino.stdTimeFunctions.isoTime,
  formatters: { level: (label) => ({ level: label }) },
  redact: { paths: ['password', '*.password', 'authorization', '*.authorization', 'token', '*.token'], censor: '[redacted]' },
});
