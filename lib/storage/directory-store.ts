// Blobs as files under a directory (the embedded stack and tests), each put atomic by a rename.
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { ConflictError, NotFoundError } from '../core/errors';
import {
  BlobExistsError, checkRange, chooseId, collect, idPattern, isBlobId, Meter, newBlobId, pickMeta, sha256Of,
  type BlobInfo, type BlobMeta, type BlobSource, type BlobStore, type Bucket, type ByteRange, type PutOptions,
} from './blob-store';

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

/** Blobs as files under dir/<bucket>/, for one machine (the embedded stack and tests). */
export function createDirectoryStore(dir: string): BlobStore {
  return new DirectoryStore(path.resolve(dir));
}

