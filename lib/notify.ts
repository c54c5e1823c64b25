import { setTimeout as sleep } from 'node:timers/promises';
import { getConfig, type Config } from './config';
import type { Db } from './db';
import { UnavailableError } from './errors';
import { eventTypes, type PipelineEvent } from './events';
import { mintDownloadLink } from './links';
import { log } from './log';
import { PermanentMailError, sendDeadlineMs, type MailMessage, type Mailer } from './mailer';

export type OutcomeEvent = Extract<PipelineEvent, { type: typeof eventTypes.conversionSucceeded | typeof eventTypes.conversionFailed }>;
export type Outcome = 'succeeded' | 'failed';

export interface NotifyResult {
  jobId: string;
  outcome: Outcome;
  /** sent: the server accepted it now; rejected: refused for good, recorded; duplicate: an earlier delivery already did it. */
  status: 'sent' | 'rejected' | 'duplicate';
  messageId?: string;
}

export interface ComposedMail extends MailMessage {
  link?: { url: string; expiresAt: Date };
}

/** "45 s", "2 min 5 s", "1 h 3 min". */
export function formatDuration(seconds: number): string {
  const total = Math.round(seconds);
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = total % 60;
  if (h > 0) return m > 0 ? `${h} h ${m} min` : `${h} h`;
  if (m > 0) return s > 0 ? `${m} min ${s} s` : `${m} min`;
  return `${s} s`;
}

/** "512 B", "48 kB", "3.2 MB" (decimal units, as file managers show them). */
export function formatSize(bytes: number): string {
  const units = ['B', 'kB', 'MB', 'GB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000;
    unit += 1;
  }
  const shown = unit === 0 || value >= 10 ? Math.round(value).toString() : value.toFixed(1);
  return `${shown} ${units[unit]}`;
}

/** "2026-11-27 14:03 UTC". */
export const formatUtc = (date: Date) => `${date.toISOString().slice(0, 16).replace('T', ' ')} UTC`;

// Control characters (CR/LF among them) and bidi overrides never reach a header or a body: a filename
// cannot add a header line or make itself read backwards.
const plain = (s: string) => s.replace(/[\p{Cc}\u202A-\u202E\u2066-\u2069]+/gu, ' ').replace(/\s+/g, ' ').trim();
const short = (s: string, max = 80) => (s.length > max ? `${s.slice(0, max - 1)}…` : s);
const escapeHtml = (s: string) =>
  s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);

const outcomeOf = (event: OutcomeEvent): Outcome => (event.type === eventTypes.conversionSucceeded ? 'succeeded' : 'failed');

function html(paragraphs: string[]): string {
  return `<!doctype html><html><body style="font-family:sans-serif;line-height:1.5">${paragraphs.map((p) => `<p>${p}</p>`).join('')}</body></html>`;
}

/** The email for one job outcome: plain text and HTML, user text stripped for headers and escaped for HTML. */
export function composeMessage(event: OutcomeEvent, config: Readonly<Config> = getConfig()): ComposedMail {
  const { jobId, email } = event.data;
  const outcome = outcomeOf(event);
  const name = plain(event.data.filename) || 'your file';
  const domain = /@([^>\s]+)/.exec(config.mailFrom)?.[1] ?? 'localhost';
  const base = { to: email, messageId: `${jobId}.${outcome}@${domain}`, key: `${jobId}-${outcome}` };

  if (event.type === eventTypes.conversionFailed) {
    const reason = plain(event.data.message) || 'The file could not be converted.';
    return {
      ...base,
      subject: `Your video could not be converted: ${short(name)}`,
      text: [`Hello,`, `"${name}" could not be converted to MP3.`, `Reason: ${reason}`, `File id: ${jobId}`, `You can upload the file again after fixing it, or try another file.`].join('\n\n') + '\n',
      html: html([
        'Hello,',
        `<strong>${escapeHtml(name)}</strong> could not be converted to MP3.`,
        `Reason: ${escapeHtml(reason)}`,
        `File id: <code>${escapeHtml(jobId)}</code>`,
        'You can upload the file again after fixing it, or try another file.',
      ]),
    };
  }

  const { durationSeconds, bytes } = event.data;
  const link = mintDownloadLink(jobId, config);
  const duration = formatDuration(durationSeconds);
  const size = formatSize(bytes);
  const expires = formatUtc(link.expiresAt);
  return {
    ...base,
    link: { url: link.url, expiresAt: link.expiresAt },
    subject: `Your MP3 is ready: ${short(name)}`,
    text: [
      'Hello,',
      `"${name}" has been converted to MP3.`,
      `Duration: ${duration}\nSize: ${size}\nFile id: ${jobId}`,
      `Download it here, no sign-in needed:\n${link.url}`,
      `The link expires on ${expires}. After that, sign in to download the file.`,
    ].join('\n\n') + '\n',
    html: html([
      'Hello,',
      `<strong>${escapeHtml(name)}</strong> has been converted to MP3.`,
      `Duration: ${escapeHtml(duration)}<br>Size: ${escapeHtml(size)}<br>File id: <code>${escapeHtml(jobId)}</code>`,
      `<a href="${escapeHtml(link.url)}">Download the MP3</a> (no sign-in needed)`,
      `The link expires on ${escapeHtml(expires)}. After that, sign in to download the file.`,
    ]),
  };
}

/**
 * How long a 'sending' row belongs to the delivery that wrote it. Longer than a send can take
 * (mailer's deadline), so a live attempt is never overtaken; short enough that a crashed one is taken
 * over by the redelivery that waits it out.
 */
export const defaultLeaseMs = sendDeadlineMs + 10_000;

const isDuplicateKey = (err: unknown) =>
  ['ER_DUP_ENTRY', 'SQLITE_CONSTRAINT_PRIMARYKEY', 'SQLITE_CONSTRAINT_UNIQUE'].includes((err as { code?: string }).code ?? '');

/**
 * Makes this delivery the one that sends: returns its claim stamp (the row's updated_at), or
 * undefined when the notification is already sent or rejected. When another delivery holds a fresh
 * claim, waits (in this request) until it finishes or its lease runs out, rather than answering 503:
 * the source's retries are over within seconds, and a crashed attempt's lease would outlast them and
 * dead-letter the event without any email.
 */
async function claim(db: Db, key: { job_id: string; outcome: Outcome }, recipient: string, leaseMs: number): Promise<number | undefined> {
  const giveUpAt = Date.now() + 2 * leaseMs;
  while (Date.now() < giveUpAt) {
    const now = Date.now();
    try {
      await db('notifications').insert({ ...key, status: 'sending', recipient, created_at: now, updated_at: now });
      return now;
    } catch (err) {
      if (!isDuplicateKey(err)) throw err;
    }
    const row = await db('notifications').where(key).first();
    if (!row) continue;
    if (row.status !== 'sending') return undefined;
    const heldFor = now - Number(row.updated_at);
    if (heldFor >= leaseMs) {
      // Taking over is conditional on the stamp we saw, so of two deliveries only one wins.
      const taken = await db('notifications').where({ ...key, status: 'sending', updated_at: row.updated_at }).update({ updated_at: now, recipient });
      if (taken === 1) return now;
      continue;
    }
    await sleep(Math.min(250, leaseMs - heldFor));
  }
  throw new UnavailableError('notification (another delivery is sending it)');
}

/**
 * Sends the one email for a job outcome, however often the event is delivered: the notifications
 * row (primary key job_id + outcome) records it. Returns normally when sent, already sent, or
 * permanently rejected (ack); throws UnavailableError (503, the source retries) when the mail
 * server is down or answers 4xx.
 *
 * At-least-once can still send twice, rarely, in two windows:
 * 1. The server accepted the message (250 after DATA) but the row never says 'sent': the process
 *    crashed, the database write failed, or the connection dropped before the 250 reached us
 *    (including our own send deadline aborting right then, and the RFC 1047 lost-reply case). The
 *    redelivery finds a 'sending' row, waits out its lease and sends again. There is no transaction
 *    spanning the database and the SMTP server; the stable Message-ID (<jobId>.<outcome>@domain)
 *    lets mail stores and clients recognise the copy.
 * 2. A delivery stalls (process frozen, not crashed) longer than the lease while its send is still
 *    in flight; the send deadline (mailer) bounds the send itself, not a frozen process.
 * Two concurrent deliveries otherwise never both send: the insert or the conditional takeover
 * admits one; the other waits for its result.
 */
export async function notifyOutcome(
  db: Db,
  mailer: Mailer,
  event: OutcomeEvent,
  opts: { config?: Readonly<Config>; leaseMs?: number } = {},
): Promise<NotifyResult> {
  const config = opts.config ?? getConfig();
  const { jobId, email } = event.data;
  const outcome = outcomeOf(event);
  const key = { job_id: jobId, outcome };

  const stamp = await claim(db, key, email, opts.leaseMs ?? defaultLeaseMs);
  if (stamp === undefined) return { jobId, outcome, status: 'duplicate' };

  const message = composeMessage(event, config);
  let sent;
  try {
    sent = await mailer.send(message);
  } catch (err) {
    if (err instanceof PermanentMailError) {
      await db('notifications').where(key).update({ status: 'rejected', error: err.message, updated_at: Date.now() });
      log.warn({ jobId, outcome, responseCode: err.responseCode, error: err.message }, 'email rejected by the mail server; not retrying');
      return { jobId, outcome, status: 'rejected' };
    }
    // Release the claim so the source's retry sends at once instead of waiting out the lease.
    await db('notifications').where({ ...key, status: 'sending', updated_at: stamp })
      .update({ updated_at: 0, error: String((err as Error).message).slice(0, 500) })
      .catch((releaseErr: unknown) => log.warn({ err: releaseErr, jobId }, 'could not release the notification claim'));
    throw err;
  }
  // Window 1 of the comment above: the message is out, the row does not say so yet.
  await db('notifications').where(key).update({ status: 'sent', message_id: sent.messageId, error: null, updated_at: Date.now() });

  if (sent.outboxFile) {
    log.info({ jobId, outcome, to: email, outbox: sent.outboxFile, link: message.link?.url }, 'email written to the outbox');
  } else {
    log.info({ jobId, outcome, messageId: sent.messageId }, 'email sent');
  }
  return { jobId, outcome, status: 'sent', messageId: sent.messageId };
}
