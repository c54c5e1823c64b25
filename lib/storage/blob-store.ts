// The blob store's contract (lib/storage/blobs.ts is its entry): what a store holds and promises, its
// errors, blob ids, and the helpers both stores share (lib/storage/gridfs-store.ts,
// lib/storage/directory-store.ts).
import { createHash, randomBytes, type Hash } from 'node:crypto';
import { ConflictError, RangeNotSatisfiableError, TooLargeError } from '../core/errors';

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

export const idPattern = /^[A-Za-z0-9_-]{1,64}$/;

/** True for strings that can name a blob: anything else is "not found" without touching storage. */
export const isBlobId = (id: unknown): id is string => typeof id === 'string' && idPattern.test(id);

/** 128 random bits in hex: unguessable, and safe in URLs and file names. */
export const newBlobId = (): string => randomBytes(16).toString('hex');

export function chooseId(bucket: Bucket, opts: PutOptions): string {
  const id = opts.id ?? newBlobId();
  if (!isBlobId(id)) throw new TypeError(`a ${bucket} blob id must match ${idPattern}`);
  return id;
}

export function checkRange(range: ByteRange, size: number): void {
  const { start, end } = range;
  if (!Number.isSafeInteger(start) || !Number.isSafeInteger(end) || start < 0 || start > end || end >= size) {
    throw new RangeNotSatisfiableError(size);
  }
}

export async function sha256Of(stream: NodeJS.ReadableStream): Promise<string> {
  const hash = createHash('sha256');
  for await (const part of stream) hash.update(part);
  return hash.digest('hex');
}

export async function collect(stream: NodeJS.ReadableStream): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const part of stream) parts.push(typeof part === 'string' ? Buffer.from(part) : part);
  return Buffer.concat(parts);
}

/**
 * Counts the bytes on their way to storage, and hashes them into `hash` when given one (put does; a
 * resumable upload's writeAt does not, its digest is the caller's, kept across PATCHes), and stops the
 * flow once the limit is passed.
 */
export class Meter {
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

export const pickMeta = ({ owner, filename, contentType }: BlobMeta): BlobMeta => ({ owner, filename, contentType });
