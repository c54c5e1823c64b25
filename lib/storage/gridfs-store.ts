// Blobs in MongoDB GridFS (the deployed store), written and read chunk by chunk.
import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import type { Db, MongoClient } from 'mongodb';
import { NotFoundError, RangeNotSatisfiableError } from '../core/errors';
import { log } from '../core/log';
import {
  BlobExistsError, buckets, checkRange, chooseId, collect, idPattern, isBlobId, Meter, sha256Of,
  type BlobInfo, type BlobMeta, type BlobSource, type BlobStore, type Bucket, type ByteRange, type PutOptions,
} from './blob-store';

/**
 * The GridFS default. FerretDB stores any size up to 16 MiB, but it does not cap a find reply at
 * 16 MiB as MongoDB does: a download's first batch is up to 101 chunks, so this keeps it near 25 MB.
 */
export const gridFsChunkSize = 255 * 1024;
/** Chunks inserted per round trip (about 4 MB): the memory window of a GridFS write. */
const chunksPerInsert = 16;
/** Chunks fetched per round trip when reading. */
const chunksPerRead = 8;
const defaultDbName = 'video2mp3';

interface FilesDoc {
  _id: string;
  length: number;
  chunkSize: number;
  uploadDate: Date;
  filename: string;
  /** Optional only because files written by other GridFS tools may lack it. */
  metadata?: { owner?: string; contentType?: string; sha256?: string };
}

/** A GridFS chunk; its `_id` (an ObjectId) is the driver's to assign, so the schema leaves it out. */
interface ChunkDoc {
  files_id: string;
  n: number;
  data: Buffer;
}

/** The hosts and database a MongoDB URI names, without credentials or options. */
export function parseMongoUri(uri: string): { hosts: string; dbName: string } {
  const m = /^mongodb(?:\+srv)?:\/\/(?:[^@/]*@)?([^/?]*)(?:\/([^?]*))?/.exec(uri);
  return { hosts: m?.[1] ?? '', dbName: decodeURIComponent(m?.[2] ?? '') || defaultDbName };
}

/** Cuts a byte stream into pieces of exactly `size` bytes (the last may be shorter), as GridFS chunks. */
async function* cut(source: AsyncIterable<Buffer>, size: number): AsyncGenerator<Buffer> {
  let pending: Buffer[] = [];
  let pendingBytes = 0;
  for await (let buf of source) {
    while (pendingBytes + buf.length >= size) {
      const take = size - pendingBytes;
      pending.push(buf.subarray(0, take));
      yield Buffer.concat(pending);
      buf = buf.subarray(take);
      pending = [];
      pendingBytes = 0;
    }
    if (buf.length > 0) {
      pending.push(buf);
      pendingBytes += buf.length;
    }
  }
  if (pendingBytes > 0) yield Buffer.concat(pending);
}

/** E11000, the server's duplicate key error (the driver is loaded lazily, so no instanceof). */
const isDuplicateKey = (err: unknown) => (err as { code?: unknown } | undefined)?.code === 11000;

function toInfo(doc: FilesDoc): BlobInfo {
  return {
    id: doc._id,
    owner: doc.metadata?.owner ?? '',
    filename: doc.filename,
    contentType: doc.metadata?.contentType ?? 'application/octet-stream',
    size: doc.length,
    sha256: doc.metadata?.sha256 ?? '',
    createdAt: doc.uploadDate,
  };
}

class GridFsStore implements BlobStore {
  constructor(private readonly client: MongoClient, private readonly db: Db) {}

  private files(bucket: Bucket) {
    return this.db.collection<FilesDoc>(`${bucket}.files`);
  }

  private chunks(bucket: Bucket) {
    return this.db.collection<ChunkDoc>(`${bucket}.chunks`);
  }

  /**
   * The unique files_id+n index is what makes a chosen id safe under concurrent puts, so it is made
   * here rather than left to the driver (which only tries on a bucket's first upload, and ignores failures).
   */
  async ensureIndexes(): Promise<void> {
    await Promise.all(buckets.flatMap((b) => [
      this.chunks(b).createIndex({ files_id: 1, n: 1 }, { unique: true }),
      this.files(b).createIndex({ filename: 1, uploadDate: 1 }),
    ]));
  }

  /**
   * Writes the GridFS documents itself instead of through openUploadStreamWithId: the driver inserts
   * the chunks of one write concurrently and cannot tell whose chunks a failed upload may remove. Here
   * chunk 0 goes in alone and first, so the unique index hands the id to whoever stores chunk 0
   * first; the rest follow in ordered batches (insertMany of up to 16 chunks per round trip), so a
   * put that lost never deletes the winner's chunks, and the files document (with size and sha256,
   * known only at the end) is inserted last, so a blob is visible only when complete.
   */
  async put(bucket: Bucket, source: BlobSource, meta: BlobMeta, opts: PutOptions = {}): Promise<BlobInfo> {
    const id = chooseId(bucket, opts);
    const files = this.files(bucket);
    const chunks = this.chunks(bucket);
    if (await files.countDocuments({ _id: id }, { limit: 1 })) throw new BlobExistsError(bucket, id);

    const hash = createHash('sha256');
    const meter = new Meter(opts.limit, hash);
    let owned = false;
    try {
      await this.insertChunks(bucket, id, 0, cut(meter.pass(source), gridFsChunkSize), async (first) => {
        await chunks.insertOne(first);
        owned = true;
      });
      const doc = this.filesDoc(id, meter.size, meta, hash.digest('hex'));
      await files.insertOne(doc);
      return toInfo(doc);
    } catch (err) {
      // Once chunk 0 is ours the id is ours, so everything under it can go, a files document whose
      // acknowledgement was lost included.
      if (owned) {
        await files.deleteOne({ _id: id })
          .then(() => chunks.deleteMany({ files_id: id }))
          .catch((cleanupErr: unknown) => log.warn({ err: cleanupErr, bucket, id }, 'could not remove the chunks of a failed put'));
      }
      throw isDuplicateKey(err) ? new BlobExistsError(bucket, id) : err;
    }
  }

  /**
   * Inserts the chunks from number `n` on, in ordered batches; `first`, when given, inserts the
   * first chunk on its own (put uses it to claim the id). The driver gives each chunk its `_id`.
   */
  private async insertChunks(bucket: Bucket, id: string, n: number, pieces: AsyncIterable<Buffer>, first?: (doc: ChunkDoc) => Promise<void>): Promise<number> {
    const chunks = this.chunks(bucket);
    let batch: ChunkDoc[] = [];
    const flush = async () => {
      if (batch.length > 0) await chunks.insertMany(batch, { ordered: true });
      batch = [];
    };
    for await (const data of pieces) {
      const doc: ChunkDoc = { files_id: id, n, data };
      n += 1;
      if (first && n === 1) {
        await first(doc);
        continue;
      }
      batch.push(doc);
      if (batch.length >= chunksPerInsert) await flush();
    }
    await flush();
    return n;
  }

  private filesDoc(id: string, length: number, meta: BlobMeta, sha256: string): FilesDoc {
    return {
      _id: id,
      length,
      chunkSize: gridFsChunkSize,
      uploadDate: new Date(),
      filename: meta.filename,
      metadata: { owner: meta.owner, contentType: meta.contentType, sha256 },
    };
  }

  async storedBytes(bucket: Bucket, id: string): Promise<number> {
    if (!isBlobId(id)) return 0;
    const last = await this.chunks(bucket).find({ files_id: id }, { promoteBuffers: true }).sort({ n: -1 }).limit(1).next();
    return last ? last.n * gridFsChunkSize + last.data.length : 0;
  }

  /**
   * Chunks are written as they arrive, in batches; a short chunk only ever ends the stored bytes, so
   * they stay a valid GridFS layout. Resuming mid-chunk rewrites that chunk with its kept prefix.
   */
  async writeAt(bucket: Bucket, id: string, offset: number, source: BlobSource, opts: { limit?: number } = {}): Promise<number> {
    if (!isBlobId(id)) throw new TypeError(`a ${bucket} blob id must match ${idPattern}`);
    const chunks = this.chunks(bucket);
    const n = Math.floor(offset / gridFsChunkSize);
    const keep = offset - n * gridFsChunkSize;
    let prefix = Buffer.alloc(0);
    if (keep > 0) {
      const doc = await chunks.findOne({ files_id: id, n }, { promoteBuffers: true });
      if (!doc || doc.data.length < keep) throw new RangeNotSatisfiableError(n * gridFsChunkSize + (doc?.data.length ?? 0));
      prefix = Buffer.from(doc.data.subarray(0, keep)); // a copy: the rest of the chunk is dropped
    }
    await chunks.deleteMany({ files_id: id, n: { $gte: n } });
    const meter = new Meter(opts.limit);
    async function* withPrefix(): AsyncGenerator<Buffer> {
      if (prefix.length > 0) yield prefix;
      yield* meter.pass(source);
    }
    await this.insertChunks(bucket, id, n, cut(withPrefix(), gridFsChunkSize));
    return offset + meter.size;
  }

  async readHead(bucket: Bucket, id: string, bytes: number): Promise<Buffer> {
    return collect(Readable.from(this.chunkRange(bucket, id, { start: 0, end: bytes - 1 }, Number.MAX_SAFE_INTEGER)));
  }

  async seal(bucket: Bucket, id: string, size: number, meta: BlobMeta, sha256?: string): Promise<BlobInfo> {
    const existing = await this.stat(bucket, id);
    if (existing) return existing;
    const digest = sha256 ?? await sha256Of(Readable.from(this.chunkRange(bucket, id, { start: 0, end: size - 1 }, size)));
    const doc = this.filesDoc(id, size, meta, digest);
    try {
      await this.files(bucket).insertOne(doc);
    } catch (err) {
      if (!isDuplicateKey(err)) throw err;
      return (await this.stat(bucket, id))!;
    }
    return toInfo(doc);
  }

  /** The bytes of `range`, read from only the chunks that cover it, a few chunks per round trip. */
  private async *chunkRange(bucket: Bucket, id: string, range: ByteRange, size: number): AsyncGenerator<Buffer> {
    const end = Math.min(range.end, size - 1);
    if (end < range.start) return;
    const first = Math.floor(range.start / gridFsChunkSize);
    const last = Math.floor(end / gridFsChunkSize);
    const cursor = this.chunks(bucket).find({ files_id: id, n: { $gte: first, $lte: last } }, { promoteBuffers: true }).sort({ n: 1 }).batchSize(chunksPerRead);
    let expected = first;
    try {
      for await (const doc of cursor) {
        if (doc.n !== expected) throw new Error(`${bucket} blob ${id} is missing chunk ${expected}`);
        expected += 1;
        const base = doc.n * gridFsChunkSize;
        const data = doc.data;
        yield data.subarray(Math.max(0, range.start - base), Math.min(data.length, end - base + 1));
      }
    } finally {
      await cursor.close();
    }
  }

  async stat(bucket: Bucket, id: string): Promise<BlobInfo | undefined> {
    if (!isBlobId(id)) return undefined;
    const doc = await this.files(bucket).findOne({ _id: id });
    return doc ? toInfo(doc) : undefined;
  }

  async read(bucket: Bucket, id: string, range?: ByteRange): Promise<NodeJS.ReadableStream> {
    const info = await this.stat(bucket, id);
    if (!info) throw new NotFoundError('file');
    if (range) checkRange(range, info.size);
    if (info.size === 0) return Readable.from([]);
    return Readable.from(this.chunkRange(bucket, id, range ?? { start: 0, end: info.size - 1 }, info.size));
  }

  async localPath(): Promise<string | undefined> {
    return undefined; // the bytes are chunks in MongoDB
  }

  async readAll(bucket: Bucket, id: string): Promise<Buffer> {
    return collect(await this.read(bucket, id));
  }

  async delete(bucket: Bucket, id: string): Promise<boolean> {
    if (!isBlobId(id)) return false;
    // The files document first, so readers stop finding the blob before its chunks go.
    const file = await this.files(bucket).deleteOne({ _id: id });
    const chunks = await this.chunks(bucket).deleteMany({ files_id: id });
    return file.deletedCount + chunks.deletedCount > 0;
  }

  async close(): Promise<void> {
    await this.client.close();
  }
}

/**
 * Blobs in GridFS buckets 'videos' and 'mp3s' of the URI's database (default 'video2mp3'). Connects
 * and creates the indexes before resolving; a database that is down fails within `connectTimeoutMs`
 * with an error isTransient recognises.
 */
export async function createGridFsStore(uri: string, connectTimeoutMs = 5000): Promise<BlobStore> {
  // Loaded on first use: a process on the embedded store never evaluates the driver (a faster cold start).
  const { MongoClient } = await import('mongodb');
  const client = new MongoClient(uri, { serverSelectionTimeoutMS: connectTimeoutMs, connectTimeoutMS: connectTimeoutMs, appName: 'video2mp3' });
  try {
    await client.connect();
    const store = new GridFsStore(client, client.db(parseMongoUri(uri).dbName));
    await store.ensureIndexes();
    return store;
  } catch (err) {
    await client.close();
    throw err;
  }
}

