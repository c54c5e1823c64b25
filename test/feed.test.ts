// The private podcast feed: created, rotated and revoked through the download function, read by a
// real podcast parser (rss-parser), every enclosure fetched (GET, HEAD, Range), cover and chapters
// read from MP3s that native ffmpeg tagged, 304s for polling apps, expired and deleted MP3s leaving.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import Parser from 'rss-parser';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sweepExpired } from '../lib/pipeline/retention';
import { getBlobs } from '../lib/storage/blobs';
import { getDb } from '../lib/storage/db';
import { backends, newUser, startStack, type Stack, type TestUser } from './support/stack';
import { makeTaggedMp3s, storeDoneJob, taggedChapters } from './support/tagged-mp3';

type Item = Parser.Item & { itunes?: { duration?: string; image?: string }; chapters?: { $: { url: string; type: string } } };
const parser: Parser<object, Item> = new Parser({ customFields: { item: [['podcast:chapters', 'chapters']] } });

describe.each(backends())('the podcast feed on $name backends', ({ env }) => {
  let stack: Stack;
  let alice: TestUser;
  let bob: TestUser;
  let mp3s: ReturnType<typeof makeTaggedMp3s>;
  let dir: string;

  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'feed-'));
    mp3s = makeTaggedMp3s(dir);
    stack = await startStack(env);
    alice = await newUser(stack);
    bob = await newUser(stack);
  });
  afterAll(async () => {
    await stack.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  const doneJob = (user: TestUser, mp3: Buffer, filename: string, createdAt: number) => storeDoneJob(user, mp3, filename, createdAt);

  const api = (user: TestUser | undefined, method: string) =>
    fetch(`${stack.url}/download/feed`, { method, headers: user?.auth ?? {} });
  async function newFeed(user: TestUser): Promise<string> {
    const res = await api(user, 'POST');
    expect(res.status).toBe(201);
    const body = (await res.json()) as { url: string; createdAt: string };
    expect(body.url).toMatch(new RegExp(`^${stack.config.downloadUrl}/feed/[A-Za-z0-9_-]{43}$`));
    return body.url;
  }

  it('when there is no bearer token, then the feed cannot be created, shown or revoked (401)', async () => {
    for (const method of ['POST', 'GET', 'DELETE']) expect((await api(undefined, method)).status).toBe(401);
  });

  it('when a podcast parser reads the feed, then each done MP3 is an item, newest first, with a working enclosure, its cover and its chapters', async () => {
    const now = Date.now();
    const older = await doneJob(alice, mp3s.bare, 'meeting notes.mp4', now - 60_000);
    const newer = await doneJob(alice, mp3s.tagged, 'lecture.mkv', now - 1000);
    await doneJob(bob, mp3s.bare, 'bobs.mp4', now); // someone else's: never in alice's feed
    const url = await newFeed(alice);

    const res = await fetch(url);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('application/rss+xml; charset=utf-8');
    const xml = await res.text();
    expect(xml).toContain('xmlns:itunes="http://www.itunes.com/dtds/podcast-1.0.dtd"');
    expect(xml).toContain('xmlns:podcast="https://podcastindex.org/namespace/1.0"');
    const feed = await parser.parseString(xml);
    expect(feed.items.map((i) => i.guid)).toEqual([`video2mp3:job:${newer}`, `video2mp3:job:${older}`]);
    const [tagged, bare] = feed.items as [Item, Item];
    expect(tagged).toMatchObject({ title: 'Lecture one', itunes: { duration: '00:00:03' } });
    expect(bare.title).toBe('meeting notes');
    expect(new Date(bare.pubDate!).getTime()).toBe(Math.floor((now - 60_000) / 1000) * 1000);

    for (const [item, mp3] of [[tagged, mp3s.tagged], [bare, mp3s.bare]] as const) {
      expect(item.enclosure).toEqual({ url: expect.stringMatching(new RegExp(`^${url}/`)), length: String(mp3.length), type: 'audio/mpeg' });
      const whole = await fetch(item.enclosure!.url);
      expect(whole.status).toBe(200);
      expect(whole.headers.get('content-type')).toBe('audio/mpeg');
      expect(Buffer.from(await whole.arrayBuffer()).equals(mp3)).toBe(true);
      const head = await fetch(item.enclosure!.url, { method: 'HEAD' });
      expect([head.status, head.headers.get('content-length'), head.headers.get('accept-ranges')]).toEqual([200, String(mp3.length), 'bytes']);
      const part = await fetch(item.enclosure!.url, { headers: { range: 'bytes=100-199' } });
      expect(part.status).toBe(206);
      expect(part.headers.get('content-range')).toBe(`bytes 100-199/${mp3.length}`);
      expect(Buffer.from(await part.arrayBuffer()).equals(mp3.subarray(100, 200))).toBe(true);
    }

    expect(bare.itunes?.image).toBeUndefined();
    expect(bare.chapters).toBeUndefined();
    const cover = await fetch(tagged.itunes!.image!);
    expect([cover.status, cover.headers.get('content-type')]).toEqual([200, 'image/jpeg']);
    expect(Buffer.from(await cover.arrayBuffer()).equals(mp3s.cover)).toBe(true);
    expect(tagged.chapters!.$.type).toBe('application/json+chapters');
    const chaptersRes = await fetch(tagged.chapters!.$.url);
    expect(chaptersRes.headers.get('content-type')).toMatch(/^application\/json\+chapters/);
    expect(await chaptersRes.json()).toEqual({ version: '1.2.0', chapters: taggedChapters.map((c) => ({ startTime: c.start, endTime: c.end, title: c.title })) });
  });

  it('when a podcast app polls with ETag or Last-Modified, then 304 until an MP3 is added, deleted or expires', async () => {
    const user = await newUser(stack);
    const first = await doneJob(user, mp3s.bare, 'one.mp4', Date.now() - 10_000);
    const url = await newFeed(user);
    const res = await fetch(url);
    const etag = res.headers.get('etag')!;
    const lastModified = res.headers.get('last-modified')!;
    expect(etag).toMatch(/^"[A-Za-z0-9_-]+"$/);
    const poll = async (headers: Record<string, string>) => (await fetch(url, { headers })).status;
    expect(await poll({ 'if-none-match': etag })).toBe(304);
    expect(await poll({ 'if-modified-since': lastModified })).toBe(304);

    const second = await doneJob(user, mp3s.tagged, 'two.mp4', Date.now());
    expect(await poll({ 'if-none-match': etag })).toBe(200);
    expect(await poll({ 'if-modified-since': lastModified })).toBe(200);
    const titles = async () => (await parser.parseURL(url)).items.map((i) => i.guid);
    expect(await titles()).toEqual([`video2mp3:job:${second}`, `video2mp3:job:${first}`]);

    expect((await fetch(`${stack.url}/download/jobs/${second}`, { method: 'DELETE', headers: user.auth })).status).toBe(204);
    expect(await titles()).toEqual([`video2mp3:job:${first}`]);

    const enclosure = `${url}/${first}.mp3`;
    const before = await fetch(url);
    const db = await getDb();
    await db('jobs').where({ id: first }).update({ updated_at: 1 }); // done long ago: the next sweep expires it
    await sweepExpired({ db, blobs: await getBlobs(), config: stack.config });
    expect(await poll({ 'if-none-match': before.headers.get('etag')! })).toBe(200);
    expect(await poll({ 'if-modified-since': before.headers.get('last-modified')! })).toBe(200);
    expect(await titles()).toEqual([]);
    expect((await fetch(enclosure)).status).toBe(404);
  });

  it('when the feed is rotated or revoked, then the old URL and its enclosures answer 404, and only a hash of the token is stored', async () => {
    const user = await newUser(stack);
    const job = await doneJob(user, mp3s.tagged, 'talk.mp4', Date.now());
    const old = await newFeed(user);
    expect((await fetch(`${old}/${job}.mp3`)).status).toBe(200);
    const rotated = await newFeed(user);
    expect(rotated).not.toBe(old);
    for (const u of [old, `${old}/${job}.mp3`, `${old}/${job}/cover`, `${old}/${job}/chapters.json`]) expect((await fetch(u)).status).toBe(404);
    expect((await fetch(rotated)).status).toBe(200);

    const token = rotated.split('/').at(-1)!;
    const row = await (await getDb())('feeds').where({ owner_id: user.id }).first();
    expect(row.token_hash).toMatch(/^[0-9a-f]{64}$/);
    expect(JSON.stringify(row)).not.toContain(token);

    const shown = await api(user, 'GET');
    expect(shown.status).toBe(200);
    expect(await shown.json()).toEqual({ createdAt: expect.any(String) });

    expect((await api(user, 'DELETE')).status).toBe(204);
    expect((await fetch(rotated)).status).toBe(404);
    expect((await fetch(`${rotated}/${job}.mp3`)).status).toBe(404);
    expect((await api(user, 'DELETE')).status).toBe(404);
    expect((await api(user, 'GET')).status).toBe(404);
  });

  it.each([
    ['a malformed token', (url: string) => `${url.slice(0, -1)}!`],
    ['an unknown token', (url: string) => url.replace(/[A-Za-z0-9_-]{43}$/, 'A'.repeat(43))],
  ])('when the feed URL has %s, then 404 with a JSON error', async (_what, mangle) => {
    const res = await fetch(mangle(await newFeed(alice)));
    expect(res.status).toBe(404);
    expect(await res.json()).toMatchObject({ error: { code: 'not_found' } });
  });

  it("when a feed URL names another user's job, then 404", async () => {
    const bobs = await doneJob(bob, mp3s.tagged, 'private.mp4', Date.now());
    const url = await newFeed(alice);
    for (const u of [`${url}/${bobs}.mp3`, `${url}/${bobs}/cover`, `${url}/${bobs}/chapters.json`]) expect((await fetch(u)).status).toBe(404);
  });
});
