import { createHash, randomBytes, type Hash } from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { Db, MongoClient } from 'mongodb';
import { lazyClient } from '../core/clients';
import { getConfig, type Config } from '../core/config';
import { ConflictError, NotFoundError, RangeNotSatisfiableError, TooLargeError } from '../core/errors';
import { log } from '../core/log';

export type Bucket = 'videos' | 'mp3s';
export const buckets: readonly Bucket[] = ['videos', 'mp3s'];

export interface BlobMeta {
  owner: string;
  filename: string;
  contentType: string;
}

export interface BlobInfo extends BlobMeta {
  id: string;
  size: number;
  sha256: string;
  createdAt: Date;
}

/** An inclusive byte range, as in an HTTP Range header. */
export interface ByteRange {
  start: number;
  end: number;
}

export interface PutOptions {
  /** A deterministic id (e.g. the MP3 of job X); a second put with the same id fails with BlobExistsError. */
  id?: string;
  /** The most bytes accepted; beyond it the put fails with BlobTooLargeError and leaves nothing behind. */
  limit?: number;
}

export type BlobSource = AsyncIterable<Buffer | string> | Buffer;

/** Where uploaded videos and converted MP3s live. Every method streams; only readAll buffers. */
export interface BlobStore {
  /** Streams `source` in, computing size and sha256 on the way; a failed put leaves nothing behind. */
  put(bucket: Bucket, source: BlobSource, meta: BlobMeta, opts?: PutOptions): Promise<BlobInfo>;
  /**
   * A blob written over several requests (a resumable upload): `writeAt` keeps what arrived so far
   * under `id`, invisible to stat and read, and `seal` makes it a blob. How many bytes are stored is
   * asked of the store itself (`storedBytes`), so it survives the process that wrote them.
   */
  storedBytes(bucket: Bucket, id: string): Promise<number>;
  /** Drops anything stored past `offset`, appends `source` there, and returns the new size; bytes stay as they arrive. */
  writeAt(bucket: Bucket, id: string, offset: number, source: BlobSource, opts?: { limit?: number }): Promise<number>;
  /** The first `bytes` of an unsealed blob (to sniff it). */
  readHead(bucket: Bucket, id: string, bytes: number): Promise<Buffer>;
  /**
   * Makes the stored bytes a blob of `size` bytes (the caller has seen writeAt reach it); repeating it
   * returns the same blob. Without `sha256` the bytes are read back once to hash them.
   */
  seal(bucket: Bucket, id: string, size: number, meta: BlobMeta, sha256?: string): Promise<BlobInfo>;
  /** The blob's info, or undefined for an unknown or malformed id. */
  stat(bucket: Bucket, id: string): Promise<BlobInfo | undefined>;
  /** The blob's bytes, or the inclusive `range` of them; throws NotFoundError or RangeNotSatisfiableError. */
  read(bucket: Bucket, id: string, range?: ByteRange): Promise<NodeJS.ReadableStream>;
  readAll(bucket: Bucket, id: string): Promise<Buffer>;
  /**
   * Where a sealed blob's bytes lie on this machine's disk, when the store keeps them there (the
   * directory store), so a reader that needs a file can use them in place; undefined otherwise
   * (GridFS, or no such blob).
   */
  localPath(bucket: Bucket, id: string): Promise<string | undefined>;
  /** True if something was deleted (a blob, or an unsealed one's bytes); safe to repeat. */
  delete(bucket: Bucket, id: string): Promise<boolean>;
  close(): Promise<void>;
}

/**
 * The id is taken, or another put is writing it right now. With GridFS it can also mean a crashed
 * put left chunks under that id (stat says undefined then); delete(id) clears them.
 */
export class BlobExistsError extends ConflictError {
  override name = 'BlobExistsError';
  constructor(readonly bucket: Bucket, readonly id: string) {
    super(`${bucket} blob ${id} already exists`);
  }
}

export class BlobTooLargeError extends TooLargeError {
  override name = 'BlobTooLargeError';
  constructor(limit: number) {
    super(limit, 'the blob');
  }
}

const idPattern = /^[A-Za-z0-9_-]{1,64}$/;

/** True for strings that can name a blob: anything else is "not found" without touching storage. */
export const isBlobId = (id: unknown): id is string => typeof id === 'string' && idPattern.test(id);

/** 128 random bits in hex: unguessable, and safe in URLs and file names. */
export const newBlobId = (): string => randomBytes(16).toString('hex');

function chooseId(bucket: Bucket, opts: PutOptions): string {
  const id = opts.id ?? newBlobId();
  if (!isBlobId(id)) throw new TypeError(`a ${bucket} blob id must match ${idPattern}`);
  return id;
}

function checkRange(range: ByteRange, size: number): void {
  const { start, end } = range;
  if (!Number.isSafeInteger(start) || !Number.isSafeInteger(end) || start < 0 || start > end || end >= size) {
    throw new RangeNotSatisfiableError(size);
  }
}

async function sha256Of(stream: NodeJS.ReadableStream): Promise<string> {
  const hash = createHash('sha256');
  for await (const part of stream) hash.update(part);
  return hash.digest('hex');
}

async function collect(stream: NodeJS.ReadableStream): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const part of stream) parts.push(typeof part === 'string' ? Buffer.from(part) : part);
  return Buffer.concat(parts);
}

/**
 * Counts the bytes on their way to storage, and hashes them into `hash` when given one (put does; a
 * resumable upload's writeAt does not, its digest is the caller's, kept across PATCHes), and stops the
 * flow once the limit is passed.
 */
class Meter {
  size = 0;

  constructor(private readonly limit = Number.POSITIVE_INFINITY, private readonly hash?: Hash) {}

  async *pass(source: BlobSource): AsyncGenerator<Buffer> {
    for await (const part of Buffer.isBuffer(source) ? [source] : source) {
      const buf = typeof part === 'string' ? Buffer.from(part) : part;
      this.size += buf.length;
      // Checked before the bytes are written, so nothing past the limit ever reaches storage.
      if (this.size > this.limit) throw new BlobTooLargeError(this.limit);
      this.hash?.update(buf);
      yield buf;
    }
  }
}

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
function parseMongoUri(uri: string): { hosts: string; dbName: string } {
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

async function syncDir(dir: string): Promise<void> {
  const handle = await fsp.open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** How much a directory store's resumable write gathers before writing it out. */
const writeBatchBytes = 1024 * 1024;

const errorCode = (err: unknown) => (err as NodeJS.ErrnoException | undefined)?.code;

// Users' videos and MP3s: readable by this user only, like their folders (and the database file).
const fileMode = 0o600;

/**
 * Each blob is a directory dir/<bucket>/<id>/ holding `data` and a `meta.json` sidecar. A put fills a
 * hidden temp directory (names starting with '.' can never be ids), fsyncs it, and renames it into
 * place: the rename is atomic and fails on an existing blob, so a crash never leaves half a blob under
 * a real id and two puts of one id cannot both win.
 */
class DirectoryStore implements BlobStore {
  constructor(private readonly dir: string) {}

  private blobDir(bucket: Bucket, id: string): string {
    return path.join(this.dir, bucket, id);
  }

  async put(bucket: Bucket, source: BlobSource, meta: BlobMeta, opts: PutOptions = {}): Promise<BlobInfo> {
    const id = chooseId(bucket, opts);
    const bucketDir = path.join(this.dir, bucket);
    const target = this.blobDir(bucket, id);
    await fsp.mkdir(bucketDir, { recursive: true, mode: 0o700 });
    if (await this.stat(bucket, id)) throw new BlobExistsError(bucket, id);

    const temp = await fsp.mkdtemp(path.join(bucketDir, '.put-'));
    try {
      const hash = createHash('sha256');
      const meter = new Meter(opts.limit, hash);
      await pipeline(meter.pass(source), fs.createWriteStream(path.join(temp, 'data'), { flush: true, mode: fileMode }));
      const info: BlobInfo = { id, ...pickMeta(meta), size: meter.size, sha256: hash.digest('hex'), createdAt: new Date() };
      await fsp.writeFile(path.join(temp, 'meta.json'), JSON.stringify(info), { flush: true, mode: fileMode });
      await syncDir(temp);
      await fsp.rename(temp, target);
      await syncDir(bucketDir);
      return info;
    } catch (err) {
      await fsp.rm(temp, { recursive: true, force: true });
      if (errorCode(err) === 'ENOTEMPTY' || errorCode(err) === 'EEXIST') throw new BlobExistsError(bucket, id);
      throw err;
    }
  }

  /** An unsealed blob is its directory with `data` and no `meta.json` yet: stat and read do not see it. */
  private dataPath(bucket: Bucket, id: string): string {
    if (!isBlobId(id)) throw new TypeError(`a ${bucket} blob id must match ${idPattern}`);
    return path.join(this.blobDir(bucket, id), 'data');
  }

  async storedBytes(bucket: Bucket, id: string): Promise<number> {
    if (!isBlobId(id)) return 0;
    try {
      return (await fsp.stat(this.dataPath(bucket, id))).size;
    } catch (err) {
      if (errorCode(err) === 'ENOENT') return 0;
      throw err;
    }
  }

  async writeAt(bucket: Bucket, id: string, offset: number, source: BlobSource, opts: { limit?: number } = {}): Promise<number> {
    const file = this.dataPath(bucket, id);
    await fsp.mkdir(path.dirname(file), { recursive: true, mode: 0o700 });
    const handle = await fsp.open(file, fs.constants.O_WRONLY | fs.constants.O_CREAT, fileMode);
    const meter = new Meter(opts.limit);
    // Pieces are written a MiB at a time (one writev, not one write per 64 KiB socket read).
    let pending: Buffer[] = [];
    let pendingBytes = 0;
    let position = offset;
    const flush = async () => {
      if (pendingBytes === 0) return;
      const [buffers, bytes] = [pending, pendingBytes];
      pending = [];
      pendingBytes = 0;
      const { bytesWritten } = await handle.writev(buffers, position);
      if (bytesWritten !== bytes) throw new Error(`${bucket} blob ${id}: wrote ${bytesWritten} of ${bytes} bytes at ${position}`);
      position += bytes;
    };
    try {
      await handle.truncate(offset);
      for await (const buf of meter.pass(source)) {
        pending.push(buf);
        pendingBytes += buf.length;
        if (pendingBytes >= writeBatchBytes) await flush();
      }
    } finally {
      // Whatever arrived stays in the file even if the request fails part-way: that is the resume point.
      try {
        await flush();
      } finally {
        await handle.close();
      }
    }
    return offset + meter.size;
  }

  async readHead(bucket: Bucket, id: string, bytes: number): Promise<Buffer> {
    const handle = await fsp.open(this.dataPath(bucket, id), 'r');
    try {
      const buf = Buffer.alloc(bytes);
      const { bytesRead } = await handle.read(buf, 0, bytes, 0);
      return buf.subarray(0, bytesRead);
    } finally {
      await handle.close();
    }
  }

  async seal(bucket: Bucket, id: string, size: number, meta: BlobMeta, sha256?: string): Promise<BlobInfo> {
    const existing = await this.stat(bucket, id);
    if (existing) return existing;
    const file = this.dataPath(bucket, id);
    const stored = await this.storedBytes(bucket, id);
    if (stored !== size) throw new ConflictError(`${bucket} blob ${id} has ${stored} of ${size} bytes`);
    const handle = await fsp.open(file, 'r+');
    try {
      await handle.sync();
    } finally {
      await handle.close();
    }
    const digest = sha256 ?? await sha256Of(fs.createReadStream(file));
    const info: BlobInfo = { id, ...pickMeta(meta), size, sha256: digest, createdAt: new Date() };
    // meta.json appears whole or not at all: written aside, then renamed into place.
    const dir = path.dirname(file);
    await fsp.writeFile(path.join(dir, '.meta.json'), JSON.stringify(info), { flush: true, mode: fileMode });
    await fsp.rename(path.join(dir, '.meta.json'), path.join(dir, 'meta.json'));
    await syncDir(dir);
    return info;
  }

  async stat(bucket: Bucket, id: string): Promise<BlobInfo | undefined> {
    if (!isBlobId(id)) return undefined;
    let text: string;
    try {
      text = await fsp.readFile(path.join(this.blobDir(bucket, id), 'meta.json'), 'utf8');
    } catch (err) {
      if (errorCode(err) === 'ENOENT' || errorCode(err) === 'ENOTDIR') return undefined;
      throw err;
    }
    const saved = JSON.parse(text) as Omit<BlobInfo, 'createdAt'> & { createdAt: string };
    return { ...saved, id, createdAt: new Date(saved.createdAt) };
  }

  async read(bucket: Bucket, id: string, range?: ByteRange): Promise<NodeJS.ReadableStream> {
    const info = await this.stat(bucket, id);
    if (!info) throw new NotFoundError('file');
    if (range) checkRange(range, info.size);
    let handle: fsp.FileHandle;
    try {
      handle = await fsp.open(path.join(this.blobDir(bucket, id), 'data'), 'r');
    } catch (err) {
      if (errorCode(err) === 'ENOENT') throw new NotFoundError('file'); // deleted since the stat
      throw err;
    }
    // The open handle keeps the bytes readable even if the blob is deleted mid-stream.
    return handle.createReadStream(range ? { start: range.start, end: range.end } : {});
  }

  async localPath(bucket: Bucket, id: string): Promise<string | undefined> {
    return (await this.stat(bucket, id)) ? this.dataPath(bucket, id) : undefined;
  }

  async readAll(bucket: Bucket, id: string): Promise<Buffer> {
    return collect(await this.read(bucket, id));
  }

  async delete(bucket: Bucket, id: string): Promise<boolean> {
    if (!isBlobId(id)) return false;
    // Renamed away first, so the blob vanishes at once even if removing its files is interrupted.
    const doomed = path.join(this.dir, bucket, `.delete-${newBlobId()}`);
    try {
      await fsp.rename(this.blobDir(bucket, id), doomed);
    } catch (err) {
      if (errorCode(err) === 'ENOENT') return false;
      throw err;
    }
    await fsp.rm(doomed, { recursive: true, force: true });
    return true;
  }

  async close(): Promise<void> {}
}

const pickMeta = ({ owner, filename, contentType }: BlobMeta): BlobMeta => ({ owner, filename, contentType });

/** Blobs as files under dir/<bucket>/, for one machine (the embedded stack and tests). */
export function createDirectoryStore(dir: string): BlobStore {
  return new DirectoryStore(path.resolve(dir));
}

/** The instance's blob store: GridFS when MONGODB_URI is set, otherwise a directory in DATA_DIR. */
export const getBlobs = lazyClient(
  'blobs',
  async () => {
    const config = getConfig();
    return config.mongodbUri ? createGridFsStore(config.mongodbUri, config.timeouts.storageConnectMs) : createDirectoryStore(path.join(config.dataDir, 'blobs'));
  },
  (store) => store.close(),
);

/** A description of the blob store for start-up logs, without credentials. */
export function describeBlobs(config: Pick<Config, 'mongodbUri' | 'dataDir'>): string {
  if (!config.mongodbUri) return `directory ${path.join(config.dataDir, 'blobs')}`;
  const { hosts, dbName } = parseMongoUri(config.mongodbUri);
  return `gridfs ${hosts}/${dbName}`;
}
