import type { Config } from '../core/config';
import { getConfig } from '../core/config';
import { formatDuration, formatSize } from '../core/format';
import { mintDownloadLink } from '../auth/links';
import { eventTypes, type PipelineEvent } from '../messaging/events';
import type { MailMessage } from './mailer';

export type OutcomeEvent = Extract<PipelineEvent, { type: typeof eventTypes.conversionSucceeded | typeof eventTypes.conversionFailed }>;
export type Outcome = 'succeeded' | 'failed';

export interface ComposedMail extends MailMessage {
  link?: { url: string; expiresAt: Date };
}

/** "2026-11-27 14:03 UTC". */
export const formatUtc = (date: Date) => `${date.toISOString().slice(0, 16).replace('T', ' ')} UTC`;

// Control characters (CR/LF among them) and bidi overrides never reach a header or a body: a filename
// cannot add a header line or make itself read backwards.
const plain = (s: string) => s.replace(/[\p{Cc}\u202A-\u202E\u2066-\u2069]+/gu, ' ').replace(/\s+/g, ' ').trim();
const short = (s: string, max = 80) => (s.length > max ? `${s.slice(0, max - 1)}…` : s);
const escapeHtml = (s: string) =>
  s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);

export const outcomeOf = (event: OutcomeEvent): Outcome => (event.type === eventTypes.conversionSucceeded ? 'succeeded' : 'failed');

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

