// The web page in a real browser (Debian's chromium, driven by playwright-core), served from another
// origin than the API, as on Knative where each service has its own host: the page at
// http://localhost:<p>, the functions at http://127.0.0.1:<s> with WEB_ORIGIN naming the page. The
// browser reaches the API through a TCP proxy (test/support/proxy.ts), so a test can slow an upload
// down and drop its connection. Screenshots go to artifacts/web/.
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { parseBuffer } from 'music-metadata';
import { chromium, type BrowserContext, type Page, type Request } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { pageSecurityHeaders } from '../lib/http/serve';
import { listStaticFiles, serveStatic } from '../lib/http/static';
import { getDb } from '../lib/storage/db';
import { bundleWeb } from '../web/bundle.mjs';
import { fixturePath } from './fixtures';
import { freePort } from './support/net';
import type { Proxy } from './support/proxy';
import { setConfig } from '../lib/core/config';
import { findJob } from '../lib/pipeline/jobs';
import { eventually, newUser, startStackBehindProxy, uniqueName, videoForm, type Stack } from './support/stack';
import { makeTaggedMp3s, storeDoneJob, taggedChapters } from './support/tagged-mp3';
import { makeRawVideo } from './support/video';

const artifacts = path.resolve(__dirname, '../artifacts/web');
const chromiumPath = '/usr/bin/chromium';

/** Offset of the first MPEG audio frame header (after an ID3v2 tag), or -1. */
function firstFrame(mp3: Buffer): number {
  let at = 0;
  if (mp3.subarray(0, 3).toString('latin1') === 'ID3') {
    const size = ((mp3[6]! & 0x7f) << 21) | ((mp3[7]! & 0x7f) << 14) | ((mp3[8]! & 0x7f) << 7) | (mp3[9]! & 0x7f);
    at = 10 + size;
  }
  // 11 sync bits, then MPEG version (not reserved) and layer III.
  return mp3[at] === 0xff && (mp3[at + 1]! & 0xe0) === 0xe0 && (mp3[at + 1]! & 0x18) !== 0x08 && (mp3[at + 1]! & 0x06) === 0x02 ? at : -1;
}

describe('the web page, on another origin than the API', () => {
  let stack: Stack;
  let proxy: Proxy;
  let pageServer: http.Server;
  let pageUrl: string;
  let context: BrowserContext;
  let page: Page;
  let origin: http.Server;
  const email = `${uniqueName('web')}@example.com`;
  const password = 'a long enough password';

  beforeAll(async () => {
    fs.mkdirSync(artifacts, { recursive: true });
    const pagePort = await freePort();
    pageUrl = `http://localhost:${pagePort}`;
    let apiUrl: string;
    // MAX_JOBS_IN_FLIGHT as deployed (the test stack lifts it otherwise): the batch below is scheduled as on defaults.
    ({ stack, proxy, url: apiUrl } = await startStackBehindProxy({ WEB_ORIGIN: pageUrl, MAX_JOBS_IN_FLIGHT: '3', IMPORT_ALLOW_PRIVATE: '127.0.0.1' }, { sources: true }));
    origin = http.createServer((_req, res) => res.writeHead(200).end(fs.readFileSync(fixturePath('mp4'))));
    await new Promise<void>((resolve) => origin.listen(0, '127.0.0.1', resolve));

    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'video2mp3-web-'));
    await bundleWeb(dir);
    const api = Object.fromEntries(['auth', 'upload', 'download'].map((n) => [n, `${apiUrl}/${n}`]));
    fs.writeFileSync(path.join(dir, 'config.js'), `window.video2mp3Config = ${JSON.stringify(api)};\n`);
    const files = listStaticFiles(dir);
    // Served with the policy the functions serve it with (lib/http/serve.ts), so the page is tried under its own CSP.
    const policy = pageSecurityHeaders({ authUrl: api.auth!, uploadUrl: api.upload!, downloadUrl: api.download! });
    pageServer = http.createServer((req, res) => {
      if (!serveStatic(req, res, files, policy)) res.writeHead(404).end();
    });
    await new Promise<void>((resolve) => pageServer.listen(pagePort, '127.0.0.1', resolve));

    context = await chromium.launchPersistentContext(fs.mkdtempSync(path.join(os.tmpdir(), 'video2mp3-chromium-')), {
      executablePath: chromiumPath,
      headless: true,
      acceptDownloads: true,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
      viewport: { width: 1000, height: 800 },
    });
    page = context.pages()[0] ?? (await context.newPage());
  }, 120_000);

  afterAll(async () => {
    await context?.close();
    pageServer?.close();
    await proxy?.close();
    await stack?.close();
    origin?.close();
  });

  const shot = (name: string) => page.screenshot({ path: path.join(artifacts, `${name}.png`), fullPage: true });

  it('when an origin other than WEB_ORIGIN asks, then the API grants it nothing', async () => {
    const preflight = (origin: string) => fetch(`${stack.url}/upload/`, {
      method: 'OPTIONS',
      headers: { origin, 'access-control-request-method': 'POST', 'access-control-request-headers': 'authorization' },
    });
    const allowed = await preflight(pageUrl);
    expect(allowed.status).toBe(204);
    expect(allowed.headers.get('access-control-allow-origin')).toBe(pageUrl);
    expect(allowed.headers.get('access-control-allow-headers')).toMatch(/Authorization/);
    expect(allowed.headers.get('access-control-allow-headers')).toMatch(/Upload-Offset/);
    expect((await preflight('http://evil.example')).headers.get('access-control-allow-origin')).toBeNull();
    const get = await fetch(`${stack.url}/download/jobs`, { headers: { origin: pageUrl } });
    expect(get.headers.get('access-control-expose-headers')).toMatch(/Upload-Job-Id/);
  });

  it('when a person signs up, logs out and logs in with the keyboard, then they see the upload form', async () => {
    await page.goto(pageUrl);
    await page.getByLabel('Email').fill(email);
    await page.getByLabel('Password').fill(password);
    await shot('1-sign-in');
    await page.getByRole('button', { name: 'Sign up' }).click();
    // Sign-up and login each hash a password (scrypt): seconds on a busy machine, not expect.poll's default 1 s.
    await expect.poll(() => page.locator('#who-email').textContent(), { timeout: 20_000 }).toBe(email);
    await page.getByRole('button', { name: 'Log out' }).click();
    await expect.poll(() => page.locator('#account').isVisible()).toBe(true);
    expect(await page.evaluate<string | null>("sessionStorage.getItem('video2mp3.token')")).toBeNull();

    // Keyboard only: the email field has focus after logout (still holding the address); Tab to the
    // password, Enter submits "Log in".
    await page.keyboard.press('ControlOrMeta+A');
    await page.keyboard.type(email);
    await page.keyboard.press('Tab');
    await page.keyboard.type(password);
    await page.keyboard.press('Enter');
    await expect.poll(() => page.getByLabel('Video', { exact: true }).isVisible(), { timeout: 20_000 }).toBe(true);
    expect(await page.evaluate<string | null>("sessionStorage.getItem('video2mp3.token')")).toMatch(/^ey/);
  });

  it('when they pick a video, then it uploads, converts to done, and downloads as a valid MP3', async () => {
    await page.getByLabel('Quality').selectOption('b128');
    await page.getByLabel('Mono').check();
    await page.getByLabel('Video', { exact: true }).setInputFiles(fixturePath('mp4'));
    const item = page.locator('#jobs li', { hasText: 'h264-aac.mp4' });
    await expect.poll(() => item.getAttribute('data-status'), { timeout: 90_000 }).toBe('done');
    await shot('2-done');

    const [download] = await Promise.all([page.waitForEvent('download'), item.getByRole('button', { name: /^Download/ }).click()]);
    expect(download.suggestedFilename()).toBe('h264-aac.mp3');
    const file = path.join(artifacts, 'downloaded.mp3');
    await download.saveAs(file);
    const mp3 = fs.readFileSync(file);
    expect(firstFrame(mp3)).toBeGreaterThanOrEqual(0);
    const { format } = await parseBuffer(mp3, { mimeType: 'audio/mpeg' });
    expect(format.codec).toMatch(/MPEG 1 Layer 3|MP3/i);
    expect(format.numberOfChannels).toBe(1);
    expect(format.bitrate).toBe(128_000);
    expect(format.duration).toBeGreaterThan(2.5);
    expect(format.duration).toBeLessThan(3.5);
  }, 120_000);

  it('when the connection drops mid-upload, then the upload pauses, and resumes from where it stopped once back online', async () => {
    const video = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'video2mp3-web-video-')), 'lecture.mkv');
    makeRawVideo(video, 4, '320x240');
    const size = fs.statSync(video).size;
    const tus: { method: string; offset?: string }[] = [];
    const onRequest = (r: Request) => { if (r.url().includes('/upload/files')) tus.push({ method: r.method(), offset: r.headers()['upload-offset'] }); };
    page.on('request', onRequest);
    const start = proxy.bytesUp;
    proxy.rate = 2 * 1024 * 1024; // ~6 s for the whole file: slow enough to cut in the middle
    try {
      await page.getByLabel('Video', { exact: true }).setInputFiles(video);
      const item = page.locator('#jobs li', { hasText: 'lecture.mkv' });
      // Cut once 40 % has reached the service (the page's own figure runs ahead by what sits in socket buffers).
      await expect.poll(() => proxy.bytesUp - start, { timeout: 30_000 }).toBeGreaterThan(0.4 * size);
      await context.setOffline(true);
      await proxy.down();
      await expect.poll(() => item.getAttribute('data-status')).toBe('paused');
      expect(await item.locator('.status').textContent()).toMatch(/Upload interrupted at \d+%: the connection was lost/);
      await shot('5-upload-paused');

      proxy.rate = Number.POSITIVE_INFINITY;
      await proxy.up();
      await context.setOffline(false); // the page's `online` listener resumes it
      await expect.poll(() => item.getAttribute('data-status'), { timeout: 90_000 }).toBe('done');
      await shot('6-resumed-done');

      // One upload, created once; after the cut the client asked the service for its offset and sent
      // only the rest, so far fewer than twice the file's bytes crossed the proxy.
      expect(tus.filter((r) => r.method === 'POST')).toHaveLength(1);
      const head = tus.findIndex((r) => r.method === 'HEAD');
      expect(head).toBeGreaterThan(0);
      const resumedAt = Number(tus.slice(head).find((r) => r.method === 'PATCH')?.offset);
      expect(resumedAt).toBeGreaterThan(0.3 * size);
      expect(proxy.bytesUp - start).toBeLessThan(size + 0.2 * size);

      const token = await page.evaluate<string | null>("sessionStorage.getItem('video2mp3.token')");
      const job = await (await fetch(`${stack.url}/download/jobs/${await item.getAttribute('data-job-id')}`, { headers: { authorization: `Bearer ${token}` } })).json() as { mp3: { durationSeconds: number } };
      expect(job.mp3.durationSeconds).toBeGreaterThan(3.9);
      expect(job.mp3.durationSeconds).toBeLessThan(4.2);
    } finally {
      page.off('request', onRequest);
      proxy.rate = Number.POSITIVE_INFINITY;
      await context.setOffline(false);
      fs.rmSync(path.dirname(video), { recursive: true, force: true });
    }
  }, 150_000);

  it('when an upload is cut off and the browser never fires `online`, then it resumes on its own timer', async () => {
    const video = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'video2mp3-web-video-')), 'seminar.mkv');
    makeRawVideo(video, 4, '320x240');
    const start = proxy.bytesUp;
    proxy.rate = 2 * 1024 * 1024;
    try {
      await page.getByLabel('Video', { exact: true }).setInputFiles(video);
      const item = page.locator('#jobs li', { hasText: 'seminar.mkv' });
      await expect.poll(() => proxy.bytesUp - start, { timeout: 30_000 }).toBeGreaterThan(0.3 * fs.statSync(video).size);
      await proxy.down(); // the service goes away; the browser stays "online" throughout
      await expect.poll(() => item.getAttribute('data-status'), { timeout: 60_000 }).toBe('paused');
      proxy.rate = Number.POSITIVE_INFINITY;
      await proxy.up();
      await expect.poll(() => item.getAttribute('data-status'), { timeout: 90_000 }).toBe('done');
    } finally {
      proxy.rate = Number.POSITIVE_INFINITY;
      fs.rmSync(path.dirname(video), { recursive: true, force: true });
    }
  }, 180_000);

  it('when they choose loudness and cover, then the upload carries them as the `loudness` and `cover` fields', async () => {
    const sent: string[] = [];
    const onRequest = (r: Request) => { if (r.method() === 'POST' && r.url().endsWith('/upload/files')) sent.push(r.headers()['upload-metadata'] ?? ''); };
    page.on('request', onRequest);
    try {
      await page.getByLabel('Loudness').selectOption('podcast');
      await page.getByLabel('Cover art').selectOption('none');
      await page.getByLabel('Video', { exact: true }).setInputFiles(fixturePath('mov'));
      await expect.poll(() => sent.length).toBe(1);
      const metadata = Object.fromEntries(sent[0]!.split(',').map((pair) => pair.split(' ')).map(([k, v]) => [k, Buffer.from(v ?? '', 'base64').toString()]));
      expect(metadata).toMatchObject({ loudness: 'podcast', cover: 'none', filename: 'h264-pcm.mov' });
      await expect.poll(() => page.locator('#jobs li', { hasText: 'h264-pcm.mov' }).getAttribute('data-status'), { timeout: 90_000 }).toBe('done');
    } finally {
      page.off('request', onRequest);
      await page.getByLabel('Loudness').selectOption('');
      await page.getByLabel('Cover art').selectOption('auto');
    }
  }, 120_000);

  it('when they import a URL, then the job imports, converts and can be played', async () => {
    await page.getByLabel('Or import from a URL').fill(`http://127.0.0.1:${(origin.address() as AddressInfo).port}/media/keynote.mp4`);
    await page.getByRole('button', { name: 'Import', exact: true }).click();
    const item = page.locator('#jobs li', { hasText: 'keynote.mp4' });
    await expect.poll(() => item.getAttribute('data-status'), { timeout: 90_000 }).toBe('done');
    await item.getByRole('button', { name: /^Play/ }).click();
    const audio = item.locator('audio');
    await expect.poll(() => audio.evaluate((a: { readyState: number }) => a.readyState), { timeout: 20_000 }).toBeGreaterThanOrEqual(1);
    expect(await audio.evaluate((a: { duration: number }) => a.duration)).toBeGreaterThan(2.5);
  }, 120_000);

  it('when they play an MP3 with a cover and chapters, then the page shows both and a chapter jumps there', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'video2mp3-web-tagged-'));
    const { tagged } = makeTaggedMp3s(dir);
    fs.rmSync(dir, { recursive: true });
    const user = await (await getDb())('users').where({ email }).first();
    await storeDoneJob({ id: user.id as string, email }, tagged, 'lecture with chapters.mkv');
    await page.reload();
    const item = page.locator('#jobs li', { hasText: 'lecture with chapters.mkv' });
    await item.getByRole('button', { name: /^Play/ }).click();
    const cover = item.getByRole('img', { name: 'Cover of lecture with chapters.mkv' });
    await expect.poll(() => cover.evaluate((img: { naturalWidth: number }) => img.naturalWidth), { timeout: 20_000 }).toBe(64);
    const chapters = item.getByRole('list', { name: 'Chapters of lecture with chapters.mkv' }).getByRole('button');
    expect(await chapters.allTextContents()).toEqual(taggedChapters.map((c) => `0:0${Math.floor(c.start)} ${c.title}`));
    await chapters.nth(1).click();
    await expect.poll(() => item.locator('audio').evaluate((a: { currentTime: number }) => a.currentTime)).toBeGreaterThanOrEqual(1.5);
    await shot('7-player');
  }, 60_000);

  it('when they create, copy, renew and revoke their feed, then the URL they hold serves the feed until replaced or revoked', async () => {
    await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: pageUrl });
    await page.getByRole('button', { name: 'Create feed URL' }).click();
    const field = page.getByLabel('Feed URL');
    await expect.poll(() => field.inputValue()).toMatch(/\/download\/feed\/[A-Za-z0-9_-]{43}$/);
    const first = await field.inputValue();
    await page.getByRole('button', { name: 'Copy' }).click();
    await expect.poll(() => page.evaluate<string>('navigator.clipboard.readText()')).toBe(first);
    const rss = await fetch(first);
    expect(rss.status).toBe(200);
    expect(await rss.text()).toContain('<title>Lecture one</title>'); // the MP3's own ID3 title
    await shot('8-feed');

    await page.getByRole('button', { name: 'New feed URL' }).click();
    await expect.poll(() => field.inputValue()).not.toBe(first);
    expect((await fetch(first)).status).toBe(404);
    const second = await field.inputValue();
    await page.reload(); // the URL is kept for the session; the service shows it only once
    await expect.poll(() => page.getByLabel('Feed URL').inputValue()).toBe(second);

    await page.getByRole('button', { name: 'Revoke feed' }).click();
    await expect.poll(() => page.getByRole('alert').textContent()).toMatch(/Feed revoked/);
    expect((await fetch(second)).status).toBe(404);
    expect(await page.getByRole('button', { name: 'Create feed URL' }).isVisible()).toBe(true);
  }, 60_000);

  it('when they pick a file that is not a video, then the 415 message is shown in words', async () => {
    await page.getByLabel('Video', { exact: true }).setInputFiles(fixturePath('text'));
    const message = page.getByRole('alert');
    await expect.poll(() => message.textContent()).toMatch(/not-a-video\.txt: This file cannot be converted \(this is not a video file/);
    expect(await page.locator('#jobs li', { hasText: 'not-a-video.txt' }).getAttribute('data-status')).toBe('rejected');
    await shot('3-not-a-video');
  });

  it('when they delete the MP3, then it leaves the list and the API forgets it', async () => {
    const item = page.locator('#jobs li', { hasText: 'h264-aac.mp4' });
    const jobId = await item.getAttribute('data-job-id');
    await item.getByRole('button', { name: /^Delete/ }).click();
    await expect.poll(() => item.count()).toBe(0);
    const token = await page.evaluate<string | null>("sessionStorage.getItem('video2mp3.token')");
    expect((await fetch(`${stack.url}/download/jobs/${jobId}`, { headers: { authorization: `Bearer ${token}` } })).status).toBe(404);
  });

  /** `n` copies of the 3 s fixture named `<prefix> NN.mp4`. */
  const copies = (prefix: string, n: number) => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'web-batch-'));
    return Array.from({ length: n }, (_, i) => {
      const file = path.join(dir, `${prefix} ${String(i).padStart(2, '0')}.mp4`);
      fs.copyFileSync(fixturePath('mp4'), file);
      return file;
    });
  };
  const doneCount = (prefix: string) => page.locator('#jobs li[data-status="done"]', { hasText: prefix }).count();

  it('when they pick a batch of 20 on the default quotas, then all 20 end done, and another user\'s single upload is done within about one conversion', async () => {
    await page.getByLabel('Video', { exact: true }).setInputFiles(copies('batch', 20));
    const db = await getDb();
    const owner = (await db('users').where({ email }).first()).id as string;
    await eventually(async () => ((await db('jobs').where({ owner_id: owner }).whereIn('status', ['queued', 'converting']).count({ n: '*' }))[0]!.n as number >= 10 ? true : undefined), 60_000, 'half the batch queued');
    const other = await newUser(stack);
    const started = Date.now();
    const res = await fetch(`${stack.url}/upload/`, { method: 'POST', headers: other.auth, body: videoForm(fs.readFileSync(fixturePath('mp4')), 'single.mp4') });
    const { jobId } = (await res.json()) as { jobId: string };
    await eventually(async () => ((await findJob(db, jobId))!.status === 'done' ? true : undefined), 60_000, 'the single upload');
    const singleMs = Date.now() - started;
    await expect.poll(() => doneCount('batch'), { timeout: 240_000 }).toBe(20);
    await shot('5-batch');
    const ms = (await db('jobs').where({ owner_id: owner }).whereLike('filename', 'batch%').pluck('conversion_ms')).map(Number).sort((x, y) => x - y);
    const median = ms[Math.floor(ms.length / 2)]!;
    console.log(JSON.stringify({ singleMs, batchConversionMedianMs: median }));
    expect(singleMs).toBeLessThan(3 * median + 2000);
  }, 300_000);

  it('when the queue is full, then the page shows the service\'s message, counts down its Retry-After, and uploads the rest', async () => {
    const defaults = stack.config;
    setConfig({ ...defaults, quotas: { ...defaults.quotas, jobsQueued: 2, jobsInFlight: 1 } });
    try {
      await page.getByLabel('Video', { exact: true }).setInputFiles(copies('full', 4));
      const waiting = page.locator('#jobs li[data-status="waiting"]', { hasText: 'full' }).first();
      await expect.poll(() => waiting.textContent(), { timeout: 30_000 })
        .toMatch(/Please wait: your queue is full: 2 jobs waiting or converting \(MAX_JOBS_QUEUED\); upload more as they finish\. Trying again in \d+ s\./);
      expect(await waiting.locator('progress').count()).toBe(1);
      await shot('6-queue-full');
      await expect.poll(() => doneCount('full'), { timeout: 120_000 }).toBe(4);
    } finally {
      setConfig(defaults);
    }
  }, 180_000);

  it('when they log out, then tus-js-client\'s resume records leave localStorage, and nothing else does', async () => {
    // A record as tus-js-client keeps one for an unfinished upload (its fingerprint, then a random part).
    const record = JSON.stringify({ size: 1000, metadata: { filename: 'half.mp4' }, creationTime: new Date().toString(), uploadUrl: `${stack.url}/upload/files/AAAAAAAAAAAAAAAAAAAAAA` });
    await page.evaluate(`localStorage.setItem('tus::tus-br-half.mp4-video/mp4-1000-1::123456789', ${JSON.stringify(record)}); localStorage.setItem('another-app', 'kept')`);
    const tusKeys = () => page.evaluate<string[]>("Object.keys(localStorage).filter((k) => k.startsWith('tus::'))");
    expect((await tusKeys()).length).toBeGreaterThanOrEqual(1); // ours, and any the uploads above left (a refused one keeps its record)
    await page.getByRole('button', { name: 'Log out' }).click();
    await expect.poll(() => page.locator('#account').isVisible()).toBe(true);
    await expect.poll(tusKeys).toEqual([]);
    expect(await page.evaluate<string | null>("localStorage.getItem('another-app')")).toBe('kept');
  });

  it('when read at phone width, then nothing scrolls sideways', async () => {
    await page.setViewportSize({ width: 360, height: 740 });
    await shot('4-phone');
    expect(await page.evaluate<number>('document.documentElement.scrollWidth')).toBeLessThanOrEqual(360);
  });
});
