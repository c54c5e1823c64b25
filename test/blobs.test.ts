import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { MongoClient } from 'mongodb';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  BlobExistsError,
  BlobTooLargeError,
  createDirectoryStore,
  createGridFsStore,
  describeBlobs,
  gridFsChunkSize,
  type BlobMeta,
  type BlobStore,
  type Bucket,
} from '../lib/storage/blobs';
import { isTransient, NotFoundError } from '../lib/core/errors';
import { videoFile } from '../lib/pipeline/conversion';
import { uniqueName } from './support/stack';
import { freePort } from './support/net';

interface Variant {
  name: string;
  open(): Promise<BlobStore>;
  /** What storage holds for one id: chunks + files documents, or directory entries. */
  partsOf(bucket: Bucket, id: string): Promise<number>;
  /** What a stored blob of `size` bytes is made of. */
  partsFor(size: number): number;
  /** Everything in a bucket, temp files included, to show that a failed put left nothing. */
  everything(bucket: Bucket): Promise<number>;
  cleanup(): Promise<void>;
}

function gridFsVariant(): Variant {
  let mongo: MongoClient | undefined;
  const db = uniqueName('blobs');
  const client = () => {
    const url = process.env.TEST_MONGODB_URL;
    if (!url) throw new Error('TEST_MONGODB_URL is not set, and under CI=true FerretDB must be there');
    mongo ??= new MongoClient(url, { serverSelectionTimeoutMS: 5000 });
    return mongo.db(db);
  };
  const count = (bucket: Bucket, kind: 'files' | 'chunks', filter: object = {}) =>
    client().collection(`${bucket}.${kind}`).countDocuments(filter);
  return {
    name: 'GridFS on FerretDB',
    open() {
      const uri = new URL(process.env.TEST_MONGODB_URL ?? 'mongodb://unset');
      uri.pathname = `/${db}`;
      return createGridFsStore(uri.toString());
    },
    partsOf: async (bucket, id) => (await count(bucket, 'files', { _id: id })) + (await count(bucket, 'chunks', { files_id: id })),
    partsFor: (size) => 1 + Math.ceil(size / gridFsChunkSize),
    everything: async (bucket) => (await count(bucket, 'files')) + (await count(bucket, 'chunks')),
    async cleanup() {
      await client().dropDatabase();
      await mongo?.close();
    },
  };
}

function directoryVariant(): Variant {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'blobs-test-'));
  const entries = (p: string) => fs.promises.readdir(p).catch(() => []);
  return {
    name: 'directory',
    open: async () => createDirectoryStore(dir),
    partsOf: async (bucket, id) => (await entries(path.join(dir, bucket, id))).length,
    partsFor: () => 2,
    everything: async (bucket) => (await entries(path.join(dir, bucket))).length,
    cleanup: () => fs.promises.rm(dir, { recursive: true, force: true }),
  };
}

const withGridFs = Boolean(process.env.TEST_MONGODB_URL) || process.env.CI === 'true';
const variants = [directoryVariant(), ...(withGridFs ? [gridFsVariant()] : [])];

const meta: BlobMeta = { owner: 'user-1', filename: 'Vidéo – été.mp4', contentType: 'video/mp4' };
const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const drain = async (s: NodeJS.ReadableStream) => {
  const parts: Buffer[] = [];
  for await (const p of s) parts.push(Buffer.from(p));
  return Buffer.concat(parts);
};
/** A stream of `bytes` in odd-sized pieces, so chunk boundaries never line up with writes. */
const pieces = (bytes: Buffer, size = 7001) =>
  Readable.from((function* () {
    for (let i = 0; i < bytes.length; i += size) yield bytes.subarray(i, i + size);
  })());
const ids = () => uniqueName('id');

describe.each(variants)('blob store: $name', (variant) => {
  let store: BlobStore;
  const data = randomBytes(600 * 1024);

  beforeAll(async () => {
    store = await variant.open();
  });
  afterAll(async () => {
    await store?.close();
    await variant.cleanup();
  });

  it('when 600 KB are streamed in, then they read back identical and the info has their size and sha256', async () => {
    const info = await store.put('videos', pieces(data), meta);

    expect(info.id).toMatch(/^[A-Za-z0-9_-]{16,64}$/);
    expect(info).toMatchObject({ size: data.length, sha256: sha256(data) });
    expect(await variant.partsOf('videos', info.id)).toBe(variant.partsFor(data.length));
    expect(variant.partsFor(data.length)).toBeGreaterThan(1);
    expect(sha256(await store.readAll('videos', info.id))).toBe(sha256(data));
    expect((await drain(await store.read('videos', info.id))).equals(data)).toBe(true);
  });

  it('when a blob is stored, then stat returns its owner, filename, content type, size, sha256 and time', async () => {
    const before = Date.now();
    const bytes = Buffer.from('ID3 tiny mp3');
    const id = ids();
    const info = await store.put('mp3s', bytes, { owner: 'user-2', filename: 'song.mp3', contentType: 'audio/mpeg' }, { id });

    const stat = await store.stat('mp3s', id);
    expect(stat).toEqual(info);
    expect(stat).toMatchObject({ id, owner: 'user-2', filename: 'song.mp3', contentType: 'audio/mpeg', size: 12, sha256: sha256(bytes) });
    expect(stat?.createdAt.getTime()).toBeGreaterThanOrEqual(before - 1000);
    expect(await store.stat('videos', id)).toBeUndefined();
  });

  it('when a blob is sealed, then the directory store names its file on disk and convert reads it in place; on GridFS convert reads a copy', async () => {
    const info = await store.put('videos', pieces(data), meta);
    const local = await store.localPath('videos', info.id);
    if (variant.name === 'directory') expect(fs.readFileSync(local!).equals(data)).toBe(true);
    else expect(local).toBeUndefined();
    expect(await store.localPath('videos', ids())).toBeUndefined();

    // What convert reads: that file itself (no copy made), or a copy streamed from GridFS.
    const copyTo = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'video-file-')), 'copy.video');
    const file = await videoFile(store, info.id, copyTo);
    expect(fs.readFileSync(file).equals(data)).toBe(true);
    expect(file).toBe(variant.name === 'directory' ? local : copyTo);
    expect(fs.existsSync(copyTo)).toBe(variant.name !== 'directory');
  });

  it('when an empty blob is stored, then it reads back empty', async () => {
    const info = await store.put('videos', Buffer.alloc(0), meta);

    expect(info).toMatchObject({ size: 0, sha256: sha256(Buffer.alloc(0)) });
    expect((await store.readAll('videos', info.id)).length).toBe(0);
  });

  describe('ranged reads', () => {
    let id: string;
    beforeAll(async () => {
      id = (await store.put('videos', data, meta)).id;
    });

    it.each([
      ['across a chunk boundary', gridFsChunkSize - 10, gridFsChunkSize + 9],
      ['across two chunk boundaries', gridFsChunkSize - 1, 2 * gridFsChunkSize],
      ['of one byte at the very end', data.length - 1, data.length - 1],
      ['of the last 100 bytes', data.length - 100, data.length - 1],
      ['of the first byte', 0, 0],
    ])('when a range %s is read, then exactly those bytes come back', async (_, start, end) => {
      const got = await drain(await store.read('videos', id, { start, end }));

      expect(got.equals(data.subarray(start, end + 1))).toBe(true);
    });

    it.each([
      ['ends past the end', 10, data.length],
      ['starts after it ends', 20, 10],
      ['is negative', -1, 5],
    ])('when a range %s, then read rejects with 416', async (_, start, end) => {
      await expect(store.read('videos', id, { start, end })).rejects.toMatchObject({ code: 'range_not_satisfiable' });
    });
  });

  describe('resumable writes', () => {
    it('when bytes arrive in pieces at unaligned offsets, then they are stored as they come, invisible until sealed, and seal makes the blob', async () => {
      const id = ids();
      expect(await store.storedBytes('videos', id)).toBe(0);
      expect(await store.writeAt('videos', id, 0, pieces(data.subarray(0, 300_001)))).toBe(300_001);
      expect(await store.storedBytes('videos', id)).toBe(300_001);
      expect(await store.stat('videos', id)).toBeUndefined();
      expect((await store.readHead('videos', id, 100)).equals(data.subarray(0, 100))).toBe(true);
      expect(await store.writeAt('videos', id, 300_001, pieces(data.subarray(300_001)))).toBe(data.length);
      const info = await store.seal('videos', id, data.length, meta);
      expect(info).toMatchObject({ id, size: data.length, sha256: sha256(data), owner: meta.owner });
      expect(await store.seal('videos', id, data.length, meta)).toMatchObject({ sha256: sha256(data) });
      expect(sha256(await store.readAll('videos', id))).toBe(sha256(data));
      expect((await drain(await store.read('videos', id, { start: 300_000, end: 300_010 }))).equals(data.subarray(300_000, 300_011))).toBe(true);
    });

    it('when a write resumes before the stored end, then what lay past that offset is replaced', async () => {
      const id = ids();
      await store.writeAt('videos', id, 0, pieces(Buffer.alloc(400_000, 9)));
      await store.writeAt('videos', id, 0, pieces(data.subarray(0, 100_000)));
      expect(await store.storedBytes('videos', id)).toBe(100_000);
      expect(await store.writeAt('videos', id, 100_000, pieces(data.subarray(100_000)))).toBe(data.length);
      await store.seal('videos', id, data.length, meta, sha256(data));
      expect(sha256(await store.readAll('videos', id))).toBe(sha256(data));
      expect(await store.delete('videos', id)).toBe(true);
      expect(await store.storedBytes('videos', id)).toBe(0);
    });
  });

  it('when a blob is deleted, then its file and every chunk are gone, and a second delete returns false', async () => {
    const { id } = await store.put('videos', data, meta);
    expect(await variant.partsOf('videos', id)).toBeGreaterThan(1);

    expect(await store.delete('videos', id)).toBe(true);

    expect(await variant.partsOf('videos', id)).toBe(0);
    expect(await store.stat('videos', id)).toBeUndefined();
    await expect(store.read('videos', id)).rejects.toMatchObject({ code: 'not_found' });
    expect(await store.delete('videos', id)).toBe(false);
  });

  it.each([
    ['unknown', 'a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5'],
    ['a path traversal', '../etc/passwd'],
    ['empty', ''],
    ['with a slash', 'a/b'],
    ['65 characters long', 'x'.repeat(65)],
    ['a dot', '.'],
    ['a Mongo operator', '{"$ne":null}'],
  ])('when the id is %s, then stat is undefined, read rejects with 404 and delete returns false', async (_, id) => {
    expect(await store.stat('videos', id)).toBeUndefined();
    const read = store.read('videos', id);
    await expect(read).rejects.toBeInstanceOf(NotFoundError);
    await expect(read).rejects.toMatchObject({ code: 'not_found' });
    expect(await store.delete('videos', id)).toBe(false);
  });

  it('when a put reuses an existing id, then it fails with BlobExistsError and the original is intact', async () => {
    const id = ids();
    await store.put('mp3s', data, meta, { id });

    await expect(store.put('mp3s', randomBytes(1000), meta, { id })).rejects.toBeInstanceOf(BlobExistsError);

    expect(sha256(await store.readAll('mp3s', id))).toBe(sha256(data));
    expect(await variant.partsOf('mp3s', id)).toBe(variant.partsFor(data.length));
  });

  it('when two puts race for one id, then exactly one wins and its bytes are what is stored', async () => {
    const id = ids();
    const contents = [randomBytes(400 * 1024), randomBytes(300 * 1024)];

    const results = await Promise.allSettled(contents.map((c) => store.put('mp3s', pieces(c, 64 * 1024), meta, { id })));

    const won = results.flatMap((r, i) => (r.status === 'fulfilled' ? [contents[i]] : []));
    expect(won).toHaveLength(1);
    expect(results.find((r) => r.status === 'rejected')).toMatchObject({ reason: expect.any(BlobExistsError) });
    expect(sha256(await store.readAll('mp3s', id))).toBe(sha256(won[0]));
    expect(await variant.partsOf('mp3s', id)).toBe(variant.partsFor(won[0].length));
  });

  it.each([
    ['a generated id', undefined],
    ['a chosen id', 'too-large'],
  ])('when a put with %s goes over the limit, then it fails with BlobTooLargeError and leaves nothing', async (_, id) => {
    const before = await variant.everything('videos');

    await expect(store.put('videos', pieces(data), meta, { id, limit: 400 * 1024 })).rejects.toBeInstanceOf(BlobTooLargeError);

    expect(await variant.everything('videos')).toBe(before);
    if (id) expect(await store.stat('videos', id)).toBeUndefined();
  });

  it('when a put is exactly at the limit, then it is stored', async () => {
    const info = await store.put('videos', data, meta, { limit: data.length });

    expect(info.size).toBe(data.length);
  });

  it('when the source stream fails half-way, then the put rejects with its error and leaves nothing', async () => {
    const before = await variant.everything('videos');
    const failing = Readable.from((async function* () {
      yield data.subarray(0, 2 * gridFsChunkSize + 5);
      throw new Error('client went away');
    })());

    await expect(store.put('videos', failing, meta, { id: 'half-way' })).rejects.toThrow('client went away');

    expect(await variant.everything('videos')).toBe(before);
    expect(await store.stat('videos', 'half-way')).toBeUndefined();
  });
});

describe('GridFS connection', () => {
  it('when the database port is closed, then creating the store fails within seconds with a transient error', async () => {
    const port = await freePort();
    const started = Date.now();

    const err: unknown = await createGridFsStore(`mongodb://127.0.0.1:${port}/x?directConnection=true`).then(
      () => undefined,
      (e: unknown) => e,
    );

    expect(isTransient(err)).toBe(true);
    expect(Date.now() - started).toBeLessThan(8000);
  });

  it.each([
    [{ mongodbUri: 'mongodb://app:s3cret@db-1:27017,db-2:27017/media?authSource=admin', dataDir: '/d' }, 'gridfs db-1:27017,db-2:27017/media'],
    [{ mongodbUri: 'mongodb+srv://app:s3cret@cluster.example.net/', dataDir: '/d' }, 'gridfs cluster.example.net/video2mp3'],
    [{ mongodbUri: undefined, dataDir: '/d' }, 'directory /d/blobs'],
  ])('when the configuration is %o, then describeBlobs says %s', (config, expected) => {
    expect(describeBlobs(config)).toBe(expected);
  });
});
