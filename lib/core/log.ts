import { pino, type Logger } from 'pino';

/**
 * Structured JSON lines on stdout. The level and the service name come from the configuration once
 * it is parsed (configureLog); until then, `info`.
 */
export const log: Logger = pino({
  level: 'info',
  base: { service: 'video2mp3' },
  timestamp: pino.stdTimeFunctions.isoTime,
  formatters: { level: (label) => ({ level: label }) },
  redact: { paths: ['password', '*.password', 'authorization', '*.authorization', 'token', '*.token'], censor: '[redacted]' },
});

export function configureLog(settings: { logLevel: string; service?: string }): void {
  log.level = settings.logLevel;
  if (settings.service) log.setBindings({ service: settings.service });
}
