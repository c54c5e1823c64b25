import fs from 'node:fs';
import path from 'node:path';
import { simpleParser } from 'mailparser';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { getDb } from '../lib/storage/db';
import { conversionFailed, conversionSucceeded, videoUploaded, type ConversionFailed, type ConversionSucceeded } from '../lib/messaging/events';
import { toHttp } from './support/events';
import { verifyDownloadLink } from '../lib/auth/links';
import { leaseMs } from '../lib/mail/notify';
import { backends, startStack, uniqueName, type Stack } from './support/stack';
import { smtpUrl, smtpUser, startSmtp, type SmtpServer } from './support-smtp';
import { freePort } from './support/net';
import { newJobId } from '../lib/pipeline/jobs';
import { randomUUID } from 'node:crypto';

const succeededData = (over: Partial<ConversionSucceeded> = {}): ConversionSucceeded => ({
  jobId: newJobId(),
  owner: randomUUID(),
  email: `${uniqueName('to')}@example.com`,
  filename: 'Holiday video.mp4',
  mp3BlobId: 'blob-1',
  durationSeconds: 125,
  bytes: 3_200_000,
  ...over,
});

const failedData = (over: Partial<ConversionFailed> = {}): ConversionFailed => ({
  jobId: newJobId(),
  owner: randomUUID(),
  email: `${uniqueName('to')}@example.com`,
  filename: 'Silent film.mp4',
  reason: 'conversion',
  message: 'The video has no audio track, so there is nothing to convert to MP3.',
  ...over,
});

/**
 * Makes the rows an event stands for: the owner's account and the job, ended the way the event says
 * (notify believes the database, not the event). Returns the data unchanged, for building the event.
 */
async function seeded<T extends ConversionSucceeded | ConversionFailed>(data: T): Promise<T> {
  const db = await getDb();
  const now = Date.now();
  if (!(await db('users').where({ id: data.owner }).first())) {
    await db('users').insert({ id: data.owner, email: data.email, password_hash: 'x', created_at: now });
  }
  const done = 'mp3BlobId' in data;
  const fields = done
    ? { status: 'done', mp3_blob_id: data.mp3BlobId, mp3_bytes: data.bytes, duration_seconds: data.durationSeconds }
    : { status: 'failed', error: data.message };
  await db('jobs').insert({
    id: data.jobId, owner_id: data.owner, owner_email: data.email, filename: data.filename, content_type: 'video/mp4', options: '{}',
    video_bytes: 1, video_sha256: '0'.repeat(64), attempts: 1, created_at: now, updated_at: now, ...fields,
  });
  return data;
}

type Event = ReturnType<typeof conversionSucceeded>;
const post = (stack: Stack, event: Event) => fetch(`${stack.internalUrl}/notify/`, { method: 'POST', ...toHttp(event) });
const row = async (jobId: string, outcome: string) => (await getDb())('notifications').where({ job_id: jobId, outcome }).first();
const mailsTo = (smtp: SmtpServer, email: string) => smtp.received.filter((m) => m.envelope.to.includes(email));

function linkIn(text: string, stack: Stack): string {
  const prefix = `${stack.config.downloadUrl}/links/`;
  const match = new RegExp(`${prefix.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}([A-Za-z0-9._-]+)`).exec(text);
  if (!match) throw new Error(`no link starting with ${prefix} in:\n${text}`);
  return match[1]!;
}

describe.each(backends())('notify on $name backends', (backend) => {
  describe('with a working SMTP server', () => {
    let smtp: SmtpServer;
    let stack: Stack;
    beforeAll(async () => {
      const greylisted = new Set<string>();
      smtp = await startSmtp({
        refuse: (address) => {
          if (address.startsWith('nobody')) return 550;
          if (address.startsWith('greylisted') && !greylisted.has(address)) {
            greylisted.add(address);
            return 451;
          }
          return undefined;
        },
      });
      stack = await startStack({ ...backend.env, SMTP_URL: smtp.url });
    });
    afterAll(async () => {
      await stack?.close();
      await smtp?.close();
    });

    it('when a conversion succeeds, then one email names the file, duration, size, job id and a signed expiring link', async () => {
      const data = await seeded(succeededData());
      const res = await post(stack, conversionSucceeded(data));
      expect(res.status).toBe(200);
      expect(await res.json()).toMatchObject({ jobId: data.jobId, outcome: 'succeeded', status: 'sent' });

      const [mail, ...more] = mailsTo(smtp, data.email);
      expect(more).toHaveLength(0);
      expect(mail!.envelope.to).toEqual([data.email]);
      expect(mail!.user).toBe(smtpUser); // the credentials of SMTP_URL were used
      expect(mail!.parsed.from?.text).toContain('no-reply@localhost');
      expect(mail!.parsed.subject).toBe('Your MP3 is ready: Holiday video.mp4');
      expect(mail!.parsed.messageId).toBe(`<${data.jobId}.succeeded@localhost>`);

      const text = mail!.parsed.text!;
      const html = mail!.parsed.html as string;
      for (const body of [text, html]) {
        expect(body).toContain('Holiday video.mp4');
        expect(body).toContain('2 min 5 s');
        expect(body).toContain('3.2 MB');
        expect(body).toContain(data.jobId);
      }
      const token = linkIn(text, stack);
      expect(html).toContain(`href="${stack.config.downloadUrl}/links/${token}"`);
      expect(verifyDownloadLink(token, stack.config)).toBe(data.jobId);

      const expires = /expires on (\d{4}-\d\d-\d\d \d\d:\d\d) UTC/.exec(text)?.[1];
      expect(html).toContain(`expires on ${expires} UTC`);
      const expected = Date.now() + stack.config.links.ttlSeconds * 1000;
      expect(Math.abs(Date.parse(`${expires!.replace(' ', 'T')}Z`) - expected)).toBeLessThan(2 * 60_000);

      expect(await row(data.jobId, 'succeeded')).toMatchObject({ status: 'sent', recipient: data.email, message_id: `<${data.jobId}.succeeded@localhost>` });
    });

    it('when a conversion fails, then one email names the file and the reason in plain words, without a link', async () => {
      const data = await seeded(failedData());
      const res = await post(stack, conversionFailed(data));
      expect(res.status).toBe(200);

      const [mail, ...more] = mailsTo(smtp, data.email);
      expect(more).toHaveLength(0);
      expect(mail!.parsed.subject).toBe('Your video could not be converted: Silent film.mp4');
      for (const body of [mail!.parsed.text!, mail!.parsed.html as string]) {
        expect(body).toContain('Silent film.mp4');
        expect(body).toContain('The video has no audio track, so there is nothing to convert to MP3.');
        expect(body).toContain(data.jobId);
        expect(body).not.toContain('/links/');
      }
      expect(await row(data.jobId, 'failed')).toMatchObject({ status: 'sent', recipient: data.email });
    });

    it('when the same event is delivered again, then no second email is sent', async () => {
      const data = await seeded(succeededData());
      expect((await post(stack, conversionSucceeded(data))).status).toBe(200);
      const again = await post(stack, conversionSucceeded(data));
      expect(again.status).toBe(200);
      expect(await again.json()).toMatchObject({ status: 'duplicate' });
      expect(mailsTo(smtp, data.email)).toHaveLength(1);
    });

    it('when the same event is delivered three times at once, then exactly one email is sent', async () => {
      const data = await seeded(succeededData());
      const responses = await Promise.all([1, 2, 3].map(() => post(stack, conversionSucceeded(data))));
      expect(responses.map((r) => r.status)).toEqual([200, 200, 200]);
      const statuses = await Promise.all(responses.map(async (r) => ((await r.json()) as { status: string }).status));
      expect(statuses.sort()).toEqual(['duplicate', 'duplicate', 'sent']);
      expect(mailsTo(smtp, data.email)).toHaveLength(1);
    });

    it('when a forged succeeded event names another user\'s job and the sender\'s address, then only the real owner is mailed, with the database\'s facts', async () => {
      const real = await seeded(succeededData());
      const attacker = `${uniqueName('attacker')}@example.com`;
      const forged = { ...real, owner: randomUUID(), email: attacker, filename: 'Click here.mp4', durationSeconds: 1, bytes: 1 };
      const res = await post(stack, conversionSucceeded(forged));
      expect(res.status).toBe(200);
      expect(await res.json()).toMatchObject({ status: 'sent' });
      expect(mailsTo(smtp, attacker)).toHaveLength(0);
      const [mail, ...more] = mailsTo(smtp, real.email);
      expect(more).toHaveLength(0);
      expect(mail!.parsed.subject).toBe('Your MP3 is ready: Holiday video.mp4');
      expect(mail!.parsed.text).toContain('2 min 5 s');
      expect(await row(real.jobId, 'succeeded')).toMatchObject({ recipient: real.email });
    });

    it.each([
      ['a job that failed', () => seeded(failedData())],
      ['a job still converting', async () => {
        const data = await seeded(failedData());
        await (await getDb())('jobs').where({ id: data.jobId }).update({ status: 'converting', error: null });
        return data;
      }],
      ['a job that does not exist', async () => failedData()],
    ])('when a succeeded event names %s, then nothing is sent and the job\'s one notification is not used up', async (_label, make) => {
      const data = await make();
      const before = smtp.received.length;
      const res = await post(stack, conversionSucceeded(succeededData({ jobId: data.jobId, owner: data.owner, email: data.email })));
      expect(res.status).toBe(200); // acked: a redelivery would not change what the database says
      expect(await res.json()).toMatchObject({ status: 'ignored' });
      expect(smtp.received.length).toBe(before);
      expect(await row(data.jobId, 'succeeded')).toBeUndefined();
    });

    it('when a failed event names a job that is done, then nothing is sent; the real succeeded event still mails the owner', async () => {
      const data = await seeded(succeededData());
      const forged = await post(stack, conversionFailed(failedData({ jobId: data.jobId, owner: data.owner, email: data.email, message: 'Log in at evil.example to fix it' })));
      expect(await forged.json()).toMatchObject({ status: 'ignored' });
      expect(mailsTo(smtp, data.email)).toHaveLength(0);
      expect(await (await post(stack, conversionSucceeded(data))).json()).toMatchObject({ status: 'sent' });
      expect(mailsTo(smtp, data.email).map((m) => m.parsed.subject)).toEqual(['Your MP3 is ready: Holiday video.mp4']);
    });

    it('when an earlier attempt crashed mid-way (a stale "sending" row), then the redelivery sends the one email', async () => {
      const data = await seeded(succeededData());
      const stale = Date.now() - leaseMs(stack.config) - 1000;
      await (await getDb())('notifications').insert({
        job_id: data.jobId, outcome: 'succeeded', status: 'sending', recipient: data.email, created_at: stale, updated_at: stale,
      });
      const res = await post(stack, conversionSucceeded(data));
      expect(res.status).toBe(200);
      expect(await res.json()).toMatchObject({ status: 'sent' });
      expect(mailsTo(smtp, data.email)).toHaveLength(1);
      expect(await row(data.jobId, 'succeeded')).toMatchObject({ status: 'sent' });
    });

    it('when another delivery is sending right now, then this one waits for it and sends nothing', async () => {
      const data = await seeded(succeededData());
      const db = await getDb();
      const now = Date.now();
      await db('notifications').insert({ job_id: data.jobId, outcome: 'succeeded', status: 'sending', recipient: data.email, created_at: now, updated_at: now });
      const pending = post(stack, conversionSucceeded(data));
      await new Promise((r) => setTimeout(r, 500));
      await db('notifications').where({ job_id: data.jobId, outcome: 'succeeded' }).update({ status: 'sent', message_id: '<other>' });
      const res = await pending;
      expect(res.status).toBe(200);
      expect(await res.json()).toMatchObject({ status: 'duplicate' });
      expect(mailsTo(smtp, data.email)).toHaveLength(0);
    });

    it('when the server rejects the recipient for good (550), then the event is acked, recorded as rejected, and never resent', async () => {
      const data = await seeded(succeededData({ email: `nobody-${uniqueName('x')}@example.com` }));
      const res = await post(stack, conversionSucceeded(data));
      expect(res.status).toBe(200);
      expect(await res.json()).toMatchObject({ status: 'rejected' });
      const recorded = await row(data.jobId, 'succeeded');
      expect(recorded).toMatchObject({ status: 'rejected', recipient: data.email });
      expect(recorded.error).toContain('550');

      const again = await post(stack, conversionSucceeded(data));
      expect(again.status).toBe(200);
      expect(await again.json()).toMatchObject({ status: 'duplicate' });
      expect(smtp.received.filter((m) => m.envelope.to.includes(data.email))).toHaveLength(0);
    });

    it('when the server answers 451 (try later), then 503 for a retry, and the retry sends the one email', async () => {
      const data = await seeded(succeededData({ email: `greylisted-${uniqueName('x')}@example.com` }));
      const first = await post(stack, conversionSucceeded(data));
      expect(first.status).toBe(503);
      expect(await first.json()).toMatchObject({ error: { code: 'unavailable' } });
      expect(await row(data.jobId, 'succeeded')).toMatchObject({ status: 'sending' });

      const retry = await post(stack, conversionSucceeded(data));
      expect(retry.status).toBe(200);
      expect(await retry.json()).toMatchObject({ status: 'sent' });
      expect(mailsTo(smtp, data.email)).toHaveLength(1);
    });

    it('when the filename is hostile, then it is escaped in HTML and adds no header or recipient', async () => {
      const filename = '<script>alert(1)</script>\r\nBcc: evil@x.io.mp4';
      for (const event of [conversionSucceeded(await seeded(succeededData({ filename }))), conversionFailed(await seeded(failedData({ filename, message: 'Bad <b>file</b>\r\nBcc: evil@x.io' })))]) {
        const { email } = event.data as { email: string };
        expect((await post(stack, event)).status).toBe(200);
        const [mail, ...more] = mailsTo(smtp, email);
        expect(more).toHaveLength(0);
        expect(mail!.envelope.to).toEqual([email]);
        expect(mail!.parsed.bcc).toBeUndefined();
        expect(mail!.parsed.headers.has('bcc')).toBe(false);
        const headerBlock = mail!.raw.slice(0, mail!.raw.indexOf('\r\n\r\n'));
        expect(headerBlock).not.toMatch(/^bcc:/im);
        expect(mail!.parsed.subject).not.toMatch(/[\r\n]/);
        expect(mail!.parsed.subject).toContain('<script>alert(1)</script> Bcc: evil@x.io.mp4');
        const html = mail!.parsed.html as string;
        expect(html).toContain('&lt;script&gt;alert(1)&lt;/script&gt;');
        expect(html).not.toContain('<script>');
        expect(html).not.toContain('<b>file</b>');
        expect(mail!.parsed.text).not.toMatch(/\r?\nBcc:/);
      }
      expect(smtp.received.some((m) => m.envelope.to.includes('evil@x.io'))).toBe(false);
    });

    it.each([
      ['not a CloudEvent', { headers: { 'content-type': 'application/json' }, body: '{"jobId":"x"}' }, /not a CloudEvent/],
      ['an event of another type', toHttp(videoUploaded({ jobId: 'j1', owner: 'o', email: 'a@example.com', filename: 'f.mp4', videoBlobId: 'b', options: {} as never }, 'j1')), /unexpected event type/],
      ['succeeded data without an email', toHttp(conversionSucceeded({ ...succeededData(), email: undefined } as unknown as ConversionSucceeded)), /invalid .*succeeded data: email/],
    ])('when the request is %s, then 400 with a JSON error (dead-lettered, not retried) and no email', async (_name, request, message) => {
      const before = smtp.received.length;
      const res = await fetch(`${stack.internalUrl}/notify/`, { method: 'POST', ...request });
      expect(res.status).toBe(400);
      const body = (await res.json()) as { error: { code: string; message: string } };
      expect(body.error.code).toBe('bad_request');
      expect(body.error.message).toMatch(message);
      expect(smtp.received.length).toBe(before);
    });
  });

  describe('when the SMTP server is down', () => {
    let port: number;
    let stack: Stack;
    let smtp: SmtpServer | undefined;
    beforeAll(async () => {
      port = await freePort();
      stack = await startStack({ ...backend.env, SMTP_URL: smtpUrl(port) });
    });
    afterAll(async () => {
      await stack?.close();
      await smtp?.close();
    });

    it('then 503 (the source retries), and once it is back the redelivery sends exactly one email', async () => {
      const data = await seeded(succeededData());
      const down = await post(stack, conversionSucceeded(data));
      expect(down.status).toBe(503);
      expect(down.headers.get('retry-after')).toBe('5');
      expect(await down.json()).toMatchObject({ error: { code: 'unavailable' } });
      expect(await row(data.jobId, 'succeeded')).toMatchObject({ status: 'sending' });

      smtp = await startSmtp({ port });
      const res = await post(stack, conversionSucceeded(data));
      expect(res.status).toBe(200);
      expect(await res.json()).toMatchObject({ status: 'sent' });
      expect(mailsTo(smtp, data.email)).toHaveLength(1);
      expect((await post(stack, conversionSucceeded(data))).status).toBe(200);
      expect(mailsTo(smtp, data.email)).toHaveLength(1);
    });
  });

  describe('when the SMTP credentials are wrong', () => {
    let smtp: SmtpServer;
    let stack: Stack;
    beforeAll(async () => {
      smtp = await startSmtp();
      stack = await startStack({ ...backend.env, SMTP_URL: smtp.url.replace(':s3cret%20pass@', ':wrong@') });
    });
    afterAll(async () => {
      await stack?.close();
      await smtp?.close();
    });

    it('then 503, not a permanent rejection: the event is retried and dead-lettered for replay, never marked done', async () => {
      const data = await seeded(succeededData());
      const res = await post(stack, conversionSucceeded(data));
      expect(res.status).toBe(503);
      expect(await row(data.jobId, 'succeeded')).toMatchObject({ status: 'sending' });
      expect(smtp.received).toHaveLength(0);
    });
  });

  describe('without SMTP_URL (embedded outbox)', () => {
    let stack: Stack;
    beforeAll(async () => {
      stack = await startStack({ ...backend.env });
    });
    afterAll(async () => {
      await stack?.close();
    });

    it('then each job outcome is written once as an .eml file in DATA_DIR/outbox, carrying the link', async () => {
      const data = await seeded(succeededData());
      const failed = await seeded(failedData());
      for (const event of [conversionSucceeded(data), conversionSucceeded(data), conversionFailed(failed)]) {
        expect((await post(stack, event)).status).toBe(200);
      }
      const outbox = path.join(stack.config.dataDir, 'outbox');
      const files = fs.readdirSync(outbox).filter((f) => f.includes(data.jobId) || f.includes(failed.jobId));
      expect(files).toHaveLength(2); // one per outcome, no temporary files left behind
      expect(files.filter((f) => f.endsWith(`-${data.jobId}-succeeded.eml`) && /^\d+-/.test(f))).toHaveLength(1);
      expect(files.filter((f) => f.endsWith(`-${failed.jobId}-failed.eml`) && /^\d+-/.test(f))).toHaveLength(1);

      const success = await simpleParser(fs.readFileSync(path.join(outbox, files.find((f) => f.includes('-succeeded'))!)));
      expect(success.to).toMatchObject({ text: data.email });
      expect(verifyDownloadLink(linkIn(success.text!, stack), stack.config)).toBe(data.jobId);
      expect(await row(data.jobId, 'succeeded')).toMatchObject({ status: 'sent' });
    });
  });
});
