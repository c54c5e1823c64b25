import fs from 'node:fs/promises';
import path from 'node:path';
import nodemailer, { type NodemailerError } from 'nodemailer';
import { lazyClient } from '../core/clients';
import { getConfig, type Config } from '../core/config';
import { UnavailableError } from '../core/errors';

export interface MailMessage {
  to: string;
  subject: string;
  text: string;
  html: string;
  /** The Message-ID header, without angle brackets: stable per job outcome, so a rare resend is recognisably the same mail. */
  messageId: string;
  /** Names the outbox file in embedded mode, e.g. `<jobId>-<outcome>`. */
  key: string;
}

export interface SentMail {
  messageId: string;
  /** Embedded mode: the .eml file the message was written to. */
  outboxFile?: string;
}

export interface Mailer {
  send(msg: MailMessage): Promise<SentMail>;
  close(): Promise<void>;
}

/** The SMTP server refused the message for good (a 5xx reply to the recipient or the content): retrying cannot help. */
export class PermanentMailError extends Error {
  override name = 'PermanentMailError';
  constructor(readonly responseCode: number, message: string, override readonly cause?: unknown) {
    super(message);
  }
}

/**
 * A 5xx reply (except 503, a bad command sequence) to MAIL FROM's successors — RCPT TO or DATA — is
 * permanent for this message. A rejected AUTH or sender is our configuration, not the message: it
 * stays retryable (503), so the event dead-letters and can be replayed once the setting is fixed.
 */
export function classifyMailError(err: unknown): Error {
  const e = err as NodemailerError;
  const code = e.responseCode;
  const ours = e.code === 'EAUTH' || e.code === 'ENOAUTH' || /^(AUTH|MAIL FROM)/i.test(e.command ?? '');
  if (typeof code === 'number' && code >= 500 && code < 600 && code !== 503 && !ours) {
    return new PermanentMailError(code, (e.response ?? e.message).slice(0, 500), err);
  }
  return new UnavailableError('mail server', { cause: err });
}

async function writeAtomically(file: string, data: Buffer): Promise<void> {
  const tmp = `${file}.${process.pid}.tmp`;
  await fs.writeFile(tmp, data, { mode: 0o600 });
  await fs.rename(tmp, file);
}

const safeName = (s: string) => s.replace(/[^A-Za-z0-9_-]/g, '_').slice(0, 80);

/**
 * SMTP over the one SMTP_URL (credentials in the URL; STARTTLS when the server offers it on
 * smtp://, TLS from the start on smtps://), or without SMTP_URL an outbox of .eml files under
 * DATA_DIR for one machine.
 */
export function createMailer(config: Pick<Config, 'smtpUrl' | 'mailFrom' | 'dataDir' | 'timeouts'>): Mailer {
  if (config.smtpUrl) {
    const transport = nodemailer.createTransport({
      url: config.smtpUrl,
      connectionTimeout: config.timeouts.mailStepMs,
      greetingTimeout: config.timeouts.mailStepMs,
      socketTimeout: config.timeouts.mailStepMs,
    });
    return {
      async send(msg) {
        try {
          const info = await transport.sendMail({
            from: config.mailFrom,
            to: msg.to,
            subject: msg.subject,
            text: msg.text,
            html: msg.html,
            messageId: `<${msg.messageId}>`,
            signal: AbortSignal.timeout(config.timeouts.mailSendMs),
          });
          return { messageId: info.messageId };
        } catch (err) {
          throw classifyMailError(err);
        }
      },
      async close() {
        transport.close();
      },
    };
  }

  const outbox = path.join(config.dataDir, 'outbox');
  const transport = nodemailer.createTransport({ streamTransport: true, buffer: true, newline: 'unix' });
  return {
    async send(msg) {
      const info = await transport.sendMail({
        from: config.mailFrom, to: msg.to, subject: msg.subject, text: msg.text, html: msg.html, messageId: `<${msg.messageId}>`,
      });
      await fs.mkdir(outbox, { recursive: true, mode: 0o700 });
      const file = path.join(outbox, `${Date.now()}-${safeName(msg.key)}.eml`);
      await writeAtomically(file, info.message as Buffer);
      return { messageId: info.messageId, outboxFile: file };
    },
    async close() {
      transport.close();
    },
  };
}

/** The instance's mailer, created on first use. */
export const getMailer = lazyClient('mailer', async () => createMailer(getConfig()), (mailer) => mailer.close());
