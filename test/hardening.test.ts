// Smaller findings of a probe (issue 23, point 7), each through the real boundary: the page cannot be
// framed and runs only its own code, logs never carry a URL's secret, tus refuses extensions it does
// not offer with a 4xx, IPv6 spellings of private addresses are refused as callback URLs, blob files
// are the owner's only, and JSON answers are not sniffed.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isPrivateAddress, parseCallbackUrl } from '../lib/core/callback-url';
import { log, useLogDestination } from '../lib/core/log';
import { getBlobs } from '../lib/storage/blobs';
import { getDb } from '../lib/storage/db';
import { readFixture } from './fixtures';
import { newUser, startStack, videoForm, type Stack, type TestUser } from './support/stack';

const tusHeaders = (user: TestUser, more: Record<string, string> = {}) => ({ ...user.auth, 'Tus-Resumable': '1.0.0', ...more });

describe('hardening of the local stack', () => {
  let stack: Stack;
  let user: TestUser;
  const lines: string[] = [];

  beforeAll(async () => {
    const web = fs.mkdtempSync(path.join(os.tmpdir(), 'video2mp3-page-'));
    fs.writeFileSync(path.join(web, 'index.html'), '<!doctype html><title>video2mp3</title>');
    stack = await startStack({ LOG_LEVEL: 'info' }, { web });
    user = await newUser(stack);
    // Every log line from here on, as the process would print it.
    useLogDestination(new Writable({ write(chunk: Buffer, _enc, done) { lines.push(chunk.toString()); done(); } }) as never);
  });
  afterAll(async () => {
    useLogDestination(process.stdout as never);
    await stack.close();
  });

  it('when the page at / is fetched, then its policy forbids framing and anything but its own scripts', async () => {
    const res = await fetch(`${stack.url}/`);
    expect(res.status).toBe(200);
    const csp = res.headers.get('content-security-policy')!;
    expect(csp).toContain("frame-ancestors 'none'");
    expect(csp).toContain("default-src 'self'");
    expect(csp).not.toContain('unsafe-inline');
    expect(csp).toMatch(/(^|; )connect-src 'self'( |;|$)/);
    expect(res.headers.get('x-frame-options')).toBe('DENY');
  });

  it.each([
    ['a download link', '/download/links/SECRETLINKTOKEN.abc', 'SECRETLINKTOKEN'],
    ['a private feed', '/download/feed/SECRETFEEDTOKEN', 'SECRETFEEDTOKEN'],
    ['an access_token in the query', '/download/jobs?access_token=SECRETJWT.part.two&limit=5', 'SECRETJWT'],
  ])('when a request with %s is rejected, then its log line has the URL without the secret', async (_what, url, secret) => {
    lines.length = 0;
    const res = await fetch(`${stack.url}${url}`);
    expect(res.status).toBeGreaterThanOrEqual(400);
    await new Promise((r) => setImmediate(r));
    const logged = lines.filter((l) => l.includes('request rejected'));
    expect(logged.length).toBeGreaterThan(0);
    expect(logged.join('')).toContain('[redacted]');
    expect(lines.join('')).not.toContain(secret);
  });

  it('when any log line names a URL with a secret, then the secret is replaced', () => {
    lines.length = 0;
    log.warn({ url: 'http://x/links/TOKEN1?token=TOKEN2&access_token=TOKEN3' }, 'something');
    expect(lines.join('')).not.toMatch(/TOKEN[123]/);
  });

  it.each([
    ['Upload-Defer-Length', { 'Upload-Defer-Length': '1' }],
    ['Upload-Concat partial', { 'Upload-Concat': 'partial', 'Upload-Length': '100' }],
    ['Upload-Concat final', { 'Upload-Concat': 'final;/upload/files/a /upload/files/b' }],
  ])('when a tus client asks for %s, which is not offered, then a 4xx with a JSON error, not a 5xx', async (_what, headers) => {
    const res = await fetch(`${stack.url}/upload/files`, { method: 'POST', headers: tusHeaders(user, { 'Upload-Metadata': `filename ${Buffer.from('a.mp4').toString('base64')}`, ...headers }) });
    expect(res.status).toBeGreaterThanOrEqual(400);
    expect(res.status).toBeLessThan(500);
    expect(await res.json()).toEqual({ error: { code: expect.any(String), message: expect.any(String) } });
  });

  it('when a video is stored, then its files are readable by the owner only', async () => {
    const res = await fetch(`${stack.url}/upload/`, { method: 'POST', headers: user.auth, body: videoForm(readFixture('mp4'), 'a.mp4') });
    expect(res.status).toBe(202);
    const { jobId } = (await res.json()) as { jobId: string };
    const blobId = (await (await getDb())('jobs').where({ id: jobId }).first()).video_blob_id as string;
    expect(await (await getBlobs()).stat('videos', blobId)).toBeDefined();
    const dir = path.join(stack.config.dataDir, 'blobs', 'videos', blobId);
    const files = fs.readdirSync(dir);
    expect(files.sort()).toEqual(['data', 'meta.json']);
    for (const f of files) expect((fs.statSync(path.join(dir, f)).mode & 0o777).toString(8), f).toBe('600');
    expect((fs.statSync(dir).mode & 0o777).toString(8)).toBe('700');
  });

  it.each([
    ['a success', '/download/jobs', true],
    ['a 401', '/download/jobs', false],
    ['a 404', '/nowhere', false],
  ])('when the answer is JSON (%s), then it says nosniff', async (_what, url, authorized) => {
    const res = await fetch(`${stack.url}${url}`, { headers: authorized ? user.auth : {} });
    expect(res.headers.get('content-type')).toContain('application/json');
    expect(res.headers.get('x-content-type-options')).toBe('nosniff');
  });

  it.each([
    'http://[::127.0.0.1]/hook', 'http://[::ffff:0:7f00:1]/hook', 'http://[2002:7f00:1::]/hook', 'http://[::ffff:7f00:1]/hook',
    'http://[::10.0.0.1]/hook', 'http://[2002:a9fe:a9fe::]/latest', 'http://[64:ff9b::a9fe:a9fe]/latest', 'http://[64:ff9b:1::1]/hook',
    'http://[2001:0:4136:e378:8000:63bf:80ff:fffe]/hook', 'http://[2001:0:7f00:1::1]/hook', 'http://[fec0::1]/hook',
  ])('when an upload names %s (an IPv6 spelling of a private address), then 400', async (callbackUrl) => {
    expect(() => parseCallbackUrl(callbackUrl, { allowPrivate: false })).toThrow(/callbackUrl:/);
    const res = await fetch(`${stack.url}/upload/?callbackUrl=${encodeURIComponent(callbackUrl)}&filename=a.mp4`, { method: 'POST', headers: { ...user.auth, 'content-type': 'video/mp4' }, body: readFixture('mp4') });
    expect(res.status).toBe(400);
    expect(((await res.json()) as { error: { message: string } }).error.message).toMatch(/^callbackUrl:/);
  });

  it('when an IPv6 form carries a public IPv4 address, or is public itself, then it is allowed', () => {
    for (const a of ['2002:5db8:d822::1', '64:ff9b::5db8:d822', '::ffff:93.184.216.34', '2606:2800:220:1::1']) expect(isPrivateAddress(a), a).toBe(false);
  });
});
