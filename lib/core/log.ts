import { pino, type DestinationStream, type Logger } from 'pino';

// Where lines go: stdout, unless a person's terminal asked for pretty lines (useLogDestination).
let destination: DestinationStream = pino.destination({ dest: 1, sync: true });

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
}, { write: (line: string) => destination.write(line) });

/** Sends the JSON lines to another stream (`npm start` on a terminal: pino-pretty). */
export function useLogDestination(stream: DestinationStream): void {
  destination = stream;
}

export function configureLog(settings: { logLevel: string; service?: string }): void {
  log.level = settings.logLevel;
  if (settings.service) log.setBindings({ service: settings.service });
}
