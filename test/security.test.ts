// A hostile user's findings (issue 13), each through the real boundary: forged events, client input
// that must never be a 5xx, slow clients, quotas, inputs that declare more than they weigh, and names
// that try to read backwards. On the embedded backends and on MariaDB + FerretDB + RabbitMQ.
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { HTTP } from 'cloudevents';
import { parseBuffer } from 'music-metadata';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { videoUploaded } from '../lib/messaging/events';
import { createTranscoder } from '../lib/media/transcode';
import { getDb } from '../lib/storage/db';
import { fixturePath, fixturesDir, readFixture } from './fixtures';
import { backends, eventually, newUser, startStack, videoForm, type Stack, type TestUser } from './support/stack';

const notJsonToken = 'Bearer eyJhbGciOiJFUzI1NiIsInR5cCI6IkpXVCJ9.AAAA.AAAA';
const loneSurrogate = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;
const bidi = /[\u200E\u200F\u202A-\u202E\u2066-\u2069]/;

async function expectJsonError(res: Response, status: number, code?: string) {
  expect(res.status).toBe(status);
  expect(res.headers.get('content-type')).toContain('application/json');
  const body = (await res.json()) as { error: { code: string; message: string } };
  expect(body).toEqual({ error: { code: code ?? expect.any(String), message: expect.any(String) } });
  return body.error;
}

async function upload(stack: Stack, user: TestUser, file: Buffer, filename: string, fields: Record<string, string> = {}, type = 'video/mp4') {
  return fetch(`${stack.url}/upload/`, { method: 'POST', headers: user.auth, body: videoForm(file, filename, fields, type) });
}

async function uploaded(stack: Stack, user: TestUser, file: Buffer, filename: string, fields: Record<string, string> = {}, type?: string) {
  const res = await upload(stack, user, file, filename, fields, type);
  expect(res.status).toBe(202);
  return ((await res.json()) as { jobId: string }).jobId;
}

async function ended(stack: Stack, user: TestUser, jobId: string, ms = 60_000) {
  return eventually(async () => {
    const job = (await (await fetch(`${stack.config.downloadUrl}/jobs/${jobId}`, { headers: user.auth })).json()) as { status: string; error?: string; filename: string };
    return job.status === 'done' || job.status === 'failed' ? job : undefined;
  }, ms, 'the job to end');
}

/** Sends raw bytes on a socket and resolves with everything the server answers until it closes. */
function rawExchange(port: number, steps: { data: string; afterMs: number }[]): Promise<{ text: string; ms: number }> {
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const socket = net.connect(port, '127.0.0.1');
    let text = '';
    const timers: NodeJS.Timeout[] = [];
    socket.on('data', (c) => { text += c.toString(); });
    socket.on('error', () => {}); // a reset after the answer is fine
    socket.on('close', () => {
      timers.forEach(clearTimeout);
      resolve({ text, ms: Date.now() - started });
    });
    for (const step of steps) timers.push(setTimeout(() => { if (!socket.destroyed) socket.write(step.data); }, step.afterMs));
    setTimeout(() => reject(new Error(`no answer within 30 s; got ${JSON.stringify(text)}`)), 30_000).unref();
  });
}

describe.each(backends())('security on $name backends', ({ env }) => {
  describe('forged events and client input', () => {
    let stack: Stack;
    let alice: TestUser;
    beforeAll(async () => {
      stack = await startStack(env, { sources: true });
      alice = await newUser(stack);
    });
    afterAll(() => stack.close());

    it('when events are posted to the public listener, then 404: convert and notify are not served there', async () => {
      const event = HTTP.binary(videoUploaded({ jobId: 'j'.repeat(22), owner: alice.id, email: alice.email, filename: 'x.mp4', videoBlobId: 'b', options: {} }, 'forged'));
      for (const fn of ['convert', 'notify']) {
        const res = await fetch(`${stack.url}/${fn}/`, { method: 'POST', headers: event.headers as Record<string, string>, body: event.body as string });
        await expectJsonError(res, 404, 'not_found');
      }
    });

    it('when a forged video.uploaded names a job that is done, then convert converts nothing again', async () => {
      const jobId = await uploaded(stack, alice, readFixture('mp4'), 'clip.mp4');
      expect((await ended(stack, alice, jobId)).status).toBe('done');
      const settled = async () => {
        const row = await (await getDb())('jobs').where({ id: jobId }).first();
        return row.published_at && !row.video_blob_id ? row : undefined; // outcome published, video removed
      };
      const before = await eventually(settled, 10_000, 'the job to settle');
      const forged = HTTP.binary(videoUploaded({ jobId, owner: 'someone', email: 'attacker@example.com', filename: 'x.mp4', videoBlobId: 'other', options: { bitrate: 32 } }, 'forged-2'));
      const res = await fetch(`${stack.internalUrl}/convert/`, { method: 'POST', headers: forged.headers as Record<string, string>, body: forged.body as string });
      expect(res.status).toBe(200);
      expect(await res.json()).toMatchObject({ outcome: 'already-done' });
      const after = await (await getDb())('jobs').where({ id: jobId }).first();
      expect(after).toMatchObject({ status: 'done', attempts: before.attempts, mp3_bytes: before.mp3_bytes, updated_at: before.updated_at });
    });

    it.each([
      ['GET', '/auth/%ZZ'],
      ['GET', '/auth/signup%E0%A4%A'],
      ['GET', '/download/links/%ZZ'],
      ['GET', '/download/jobs/%ZZ'],
      ['DELETE', '/download/jobs/%C0%AF'],
      ['POST', '/upload/%ZZ'],
    ])('when %s %s has a malformed percent escape, then 400 with a JSON error', async (method, p) => {
      const res = await fetch(`${stack.url}${p}`, { method, headers: alice.auth });
      await expectJsonError(res, 400, 'bad_request');
    });

    it('when a multipart body lacks its closing boundary, then 400 with a JSON error', async () => {
      const body = '--XX\r\nContent-Disposition: form-data; name="file"; filename="a.mp4"\r\nContent-Type: video/mp4\r\n\r\n'
        + readFixture('mp4').subarray(0, 2000).toString('latin1');
      const res = await fetch(`${stack.url}/upload/`, {
        method: 'POST', headers: { ...alice.auth, 'content-type': 'multipart/form-data; boundary=XX' }, body: Buffer.from(body, 'latin1'),
      });
      await expectJsonError(res, 400, 'bad_request');
    });

    it.each([
      ['POST', '/auth/validate'],
      ['POST', '/upload/'],
      ['GET', '/download/jobs'],
      ['GET', '/download/jobs/AAAAAAAAAAAAAAAAAAAAAA/mp3'],
    ])('when %s %s gets a token whose payload is not JSON, then 401 with a JSON error', async (method, p) => {
      const res = await fetch(`${stack.url}${p}`, { method, headers: { authorization: notJsonToken } });
      await expectJsonError(res, 401, 'unauthorized');
    });

    it('when the filename and title carry bidi controls, then the stored name, Content-Disposition and ID3 title are free of them', async () => {
      const jobId = await uploaded(stack, alice, readFixture('mp4'), 'invoice\u202Efdp.mp4', { title: 'Song\u202E\u2066 title' });
      expect(await ended(stack, alice, jobId)).toMatchObject({ status: 'done', filename: 'invoicefdp.mp4' });
      const res = await fetch(`${stack.config.downloadUrl}/jobs/${jobId}/mp3`, { headers: alice.auth });
      expect(res.status).toBe(200);
      const disposition = res.headers.get('content-disposition')!;
      expect(disposition).toContain('invoicefdp.mp3');
      expect(decodeURIComponent(disposition)).not.toMatch(bidi);
      const meta = await parseBuffer(Buffer.from(await res.arrayBuffer()), { mimeType: 'audio/mpeg' });
      expect(meta.common.title).toBe('Song title');

      const unnamed = await uploaded(stack, alice, readFixture('mp4'), '\u202Emp3.exe.mp4');
      await ended(stack, alice, unnamed);
      const res2 = await fetch(`${stack.config.downloadUrl}/jobs/${unnamed}/mp3`, { headers: alice.auth });
      expect(decodeURIComponent(res2.headers.get('content-disposition')!)).not.toMatch(bidi);
      expect((await parseBuffer(Buffer.from(await res2.arrayBuffer()), { mimeType: 'audio/mpeg' })).common.title).toBe('mp3.exe');
    });

    it('when a long name ends in emoji at the cut, then it is cut on a character boundary', async () => {
      const jobId = await uploaded(stack, alice, readFixture('mp4'), `${'a'.repeat(250)}😀😀😀😀.mp4`);
      const row = await (await getDb())('jobs').where({ id: jobId }).first();
      expect(row.filename.length).toBeLessThanOrEqual(255);
      expect(row.filename).not.toMatch(loneSurrogate);
      expect(row.filename.startsWith('a'.repeat(250))).toBe(true);
      await ended(stack, alice, jobId);
    });
  });

  describe('slow clients', () => {
    let stack: Stack;
    let port: number;
    beforeAll(async () => {
      stack = await startStack({ ...env, REQUEST_TIMEOUT_SECONDS: '2', HEADERS_TIMEOUT_SECONDS: '2' });
      port = Number(new URL(stack.url).port);
    });
    afterAll(() => stack.close());

    it('when a body arrives a byte at a time past the request timeout, then 408 with a JSON error and the connection is closed', async () => {
      const head = 'POST /auth/signup HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n';
      const steps = [{ data: head, afterMs: 0 }, ...Array.from({ length: 20 }, (_, i) => ({ data: ' ', afterMs: 300 * (i + 1) }))];
      const { text, ms } = await rawExchange(port, steps);
      expect(text).toMatch(/^HTTP\/1\.1 408 /);
      expect(text).toContain('application/json');
      expect(JSON.parse(text.slice(text.indexOf('\r\n\r\n') + 4))).toMatchObject({ error: { code: 'request_timeout' } });
      expect(ms).toBeLessThan(8000);
    });

    it('when headers arrive a line at a time past the headers timeout, then 408 with a JSON error', async () => {
      const steps = [{ data: 'GET /auth/.well-known/jwks.json HTTP/1.1\r\n', afterMs: 0 }, ...Array.from({ length: 20 }, (_, i) => ({ data: `X-Slow-${i}: 1\r\n`, afterMs: 400 * (i + 1) }))];
      const { text, ms } = await rawExchange(port, steps);
      expect(text).toMatch(/^HTTP\/1\.1 408 /);
      expect(JSON.parse(text.slice(text.indexOf('\r\n\r\n') + 4))).toMatchObject({ error: { code: 'request_timeout' } });
      expect(ms).toBeLessThan(8000);
    });

    it('when the request is not HTTP at all, then 400 with a JSON error body', async () => {
      const { text } = await rawExchange(port, [{ data: 'HELLO THERE\r\n\r\n', afterMs: 0 }]);
      expect(text).toMatch(/^HTTP\/1\.1 400 /);
      expect(JSON.parse(text.slice(text.indexOf('\r\n\r\n') + 4))).toMatchObject({ error: { code: 'bad_request' } });
    });

    it('when an upload keeps sending, then it is not cut at the request timeout; when it stalls, then 408', async () => {
      const user = await newUser(stack);
      const head = `POST /upload/?filename=a.mp4 HTTP/1.1\r\nHost: x\r\nAuthorization: ${user.auth.authorization}\r\nContent-Type: video/mp4\r\nContent-Length: 100\r\n\r\n`;
      // 12 bytes over ~3.6 s (longer than the 2 s request timeout, never idle 2 s), then silence.
      const steps = [{ data: head, afterMs: 0 }, ...Array.from({ length: 12 }, (_, i) => ({ data: 'x', afterMs: 300 * (i + 1) }))];
      const { text, ms } = await rawExchange(port, steps);
      expect(text).toMatch(/^HTTP\/1\.1 408 /);
      expect(ms).toBeGreaterThan(3600 + 1500);
    });
  });

  describe('quotas', () => {
    it('when a user has as many jobs queued as allowed, then the next upload is 429 with Retry-After naming the quota', async () => {
      const stack = await startStack({ ...env, MAX_JOBS_QUEUED: '2' }); // no converter: jobs stay queued
      try {
        const user = await newUser(stack);
        await uploaded(stack, user, readFixture('mp4'), 'one.mp4');
        await uploaded(stack, user, readFixture('mp4'), 'two.mp4');
        const res = await upload(stack, user, readFixture('mp4'), 'three.mp4');
        expect(Number(res.headers.get('retry-after'))).toBeGreaterThan(0);
        expect((await expectJsonError(res, 429, 'too_many_requests')).message).toMatch(/2 jobs waiting or converting \(MAX_JOBS_QUEUED\)/);
        await uploaded(stack, await newUser(stack), readFixture('mp4'), 'other-user.mp4'); // a quota per user
      } finally {
        await stack.close();
      }
    });

    describe('conversion seconds per day', () => {
      let stack: Stack;
      let user: TestUser;
      beforeAll(async () => {
        stack = await startStack({ ...env, MAX_CONVERSION_SECONDS_PER_DAY: '60' }, { sources: 'video' });
        user = await newUser(stack);
      });
      afterAll(() => stack.close());

      it('when a tiny FLAC declares three hours, then the job fails at once naming the quota, without hours of converting', async () => {
        const flac = fs.readFileSync(path.join(fixturesDir, 'silence-3h.flac'));
        expect(flac.length).toBeLessThan(64 * 1024);
        const started = Date.now();
        const jobId = await uploaded(stack, user, flac, 'silence.flac', {}, 'audio/flac');
        const job = await ended(stack, user, jobId, 30_000);
        expect(job.status).toBe('failed');
        expect(job.error).toMatch(/daily conversion quota of 60 seconds/);
        expect(Date.now() - started).toBeLessThan(30_000);
      });

      it('when the day\'s seconds are used up, then the next upload is 429 with Retry-After naming the quota', async () => {
        const jobId = await uploaded(stack, user, readFixture('mp4'), 'short.mp4');
        expect((await ended(stack, user, jobId)).status).toBe('done');
        // What a day of conversions leaves behind: done jobs adding up to the quota.
        await (await getDb())('jobs').where({ id: jobId }).update({ duration_seconds: 60 });
        const res = await upload(stack, user, readFixture('mp4'), 'one-more.mp4');
        const retryAfter = Number(res.headers.get('retry-after'));
        expect(retryAfter).toBeGreaterThan(23 * 3600);
        expect(retryAfter).toBeLessThanOrEqual(24 * 3600);
        const { message } = await expectJsonError(res, 429, 'too_many_requests');
        expect(message).toMatch(/daily conversion quota of 60 seconds of media \(MAX_CONVERSION_SECONDS_PER_DAY\) used up/);
        const resetsAt = Date.parse(/resets at (\S+)$/.exec(message)![1]!);
        expect(Math.abs(resetsAt - (Date.now() + retryAfter * 1000))).toBeLessThan(5000);
      });
    });
  });
});

describe('the converter\'s memory', () => {
  it('when a tiny MKV carries an 8000×8000 picture, then converting it does not decode the picture (memory stays flat)', async () => {
    const transcoder = createTranscoder({ maxDurationSeconds: 3600, maxOutputBytes: 100 * 1024 * 1024 });
    try {
      const output = path.join(transcoder.workDir, 'out.mp3');
      await transcoder.transcode(fixturePath('mp4'), output, {}); // warm up: the core's own memory is not the input's
      const input = path.join(fixturesDir, 'huge-picture.mkv');
      expect(fs.statSync(input).size).toBeLessThan(256 * 1024);
      const base = process.memoryUsage().rss;
      let peak = base;
      const sampler = setInterval(() => { peak = Math.max(peak, process.memoryUsage().rss); }, 10);
      const result = await transcoder.transcode(input, output, {}).finally(() => clearInterval(sampler));
      expect(Math.abs(result.durationSeconds - 2)).toBeLessThan(0.1);
      // Decoding the picture would take 192 MB; without it the conversion adds a few MB.
      expect((peak - base) / 1024 / 1024).toBeLessThan(96);
    } finally {
      await transcoder.close();
    }
  });
});
