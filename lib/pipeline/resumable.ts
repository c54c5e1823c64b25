import { createHash, type Hash } from 'node:crypto';
import type { Readable } from 'node:stream';
import { DataStore, ERRORS, Upload, type Lock, type Locker, type RequestRelease } from '@tus/utils';
import type { Config } from '../core/config';
import { BadInputError } from '../core/errors';
import { log } from '../core/log';
import { mp3OptionsSchema, parseMp3Options, type Mp3Options } from '../media/options';
import type { Db } from '../storage/db';
import { askRelease, renewLock, tryLock, unlock, type Lease } from '../storage/locks';
import { cleanFilename } from './filenames';
import { newJobId } from './jobs';
import { parseCallbackUrl } from '../core/callback-url';
import { uploadBytes, uploadDuration } from '../core/metrics';
import { queueUploadJob, sniffBytes, sniffMedia, type UploadDeps } from './uploads';
import { publishTurns, takePlace } from './scheduling';

/**
 * Resumable uploads (tus 1.0) over the project's own stores: the upload's row (owner, size,
 * metadata, options) in the database, its bytes in the blob store under the same id, written as they
 * arrive, and a lease lock in the database, so any process can serve any request of an upload and a
 * killed one loses nothing that was stored. When the last byte lands the bytes are sniffed, sealed
 * as the job's source video (no copy), and the job is queued, once, under the upload's id.
 */

export interface Owner {
  id: string;
  email: string;
}

export interface ResumableDeps extends UploadDeps {
  config: Pick<Config, 'limits' | 'retention' | 'quotas' | 'webhooks'>;
}

interface UploadRow {
  id: string;
  owner_id: string;
  owner_email: string;
  size: number | string;
  filename: string;
  metadata: string;
  options: string;
  job_id: string | null;
  created_at: number | string;
  expires_at: number | string;
}

/** Upload ids are job ids: the finished upload becomes the job of the same id. */
export const newUploadId = newJobId;

/**
 * The filename and MP3 options of Upload-Metadata, checked when the upload is created, before any
 * byte: the same names and rules as the form fields of a single-request upload.
 */
export function parseUploadMetadata(metadata: Record<string, string | null> | undefined, webhooks: { allowPrivate: boolean }): { filename: string; options: Mp3Options; callbackUrl?: string } {
  const { filename, ...rest } = metadata ?? {};
  if (!filename) throw new BadInputError('Upload-Metadata must name the file (filename)');
  return { filename: cleanFilename(filename), options: parseMp3Options(rest), callbackUrl: parseCallbackUrl(rest.callbackUrl ?? undefined, webhooks) };
}

/**
 * The digest so far of uploads whose PATCHes reach this process one after another (the usual case:
 * one client sending pieces in turn): the next PATCH at the same offset continues it, so the finish
 * need not read a multi-GB file back to hash it. Only a cache: a PATCH served by another process, or
 * one after a PATCH that failed part-way, finds nothing here, and the finish reads the bytes back once.
 */
const runningDigests = new Map<string, { offset: number; hash: Hash; head: Buffer }>();
/** Uploads in flight on one process at once, far beyond what one replica serves; the oldest is dropped. */
const maxRunningDigests = 256;

function takeDigest(id: string, offset: number) {
  const carried = runningDigests.get(id);
  runningDigests.delete(id);
  return carried?.offset === offset ? carried : undefined;
}

function keepDigest(id: string, digest: { offset: number; hash: Hash; head: Buffer }) {
  if (runningDigests.size >= maxRunningDigests) runningDigests.delete(runningDigests.keys().next().value!);
  runningDigests.set(id, digest);
}

async function findUpload(db: Db, id: string): Promise<UploadRow | undefined> {
  return db('uploads').where({ id }).first();
}

/** A tus data store bound to the user making the request: other users' uploads do not exist for it. */
export class ResumableStore extends DataStore {
  constructor(private readonly deps: ResumableDeps, private readonly owner: Owner | undefined) {
    super();
    this.extensions = ['creation', 'creation-with-upload', 'termination', 'expiration'];
  }

  override async create(upload: Upload): Promise<Upload> {
    const owner = this.owner;
    if (!owner) throw ERRORS.FILE_NOT_FOUND;
    const { filename, options } = parseUploadMetadata(upload.metadata, this.deps.config.webhooks);
    const now = Date.now();
    upload.creation_date = new Date(now).toISOString();
    // The upload takes its place in the owner's queue now, in one step, not when it finishes.
    const { released } = await takePlace(this.deps.db, owner.id, this.deps.config, (trx) => trx('uploads').insert({
      id: upload.id,
      owner_id: owner.id,
      owner_email: owner.email,
      size: upload.size,
      filename,
      metadata: JSON.stringify(upload.metadata ?? {}),
      options: JSON.stringify(options),
      created_at: now,
      expires_at: now + this.getExpiration(),
    }));
    await publishTurns(this.deps, released);
    return upload;
  }

  private async ownedRow(id: string): Promise<UploadRow> {
    const row = this.owner && await findUpload(this.deps.db, id);
    if (!row || row.owner_id !== this.owner!.id) throw ERRORS.FILE_NOT_FOUND;
    return row;
  }

  override async getUpload(id: string): Promise<Upload> {
    const row = await this.ownedRow(id);
    const size = Number(row.size);
    let offset = row.job_id ? size : Math.min(size, await this.deps.blobs.storedBytes('videos', id));
    // Every byte is stored but the job was not made (the finishing process died, or the broker was
    // down): the client is told one byte is missing, re-sends it, and the finish runs again.
    if (offset === size && !row.job_id && size > 0) offset = size - 1;
    return new Upload({
      id,
      size,
      offset,
      metadata: JSON.parse(row.metadata) as Record<string, string>,
      creation_date: new Date(Number(row.created_at)).toISOString(),
    });
  }

  override async write(stream: Readable, id: string, offset: number): Promise<number> {
    const row = await this.ownedRow(id);
    const size = Number(row.size);
    if (row.job_id) {
      stream.resume(); // a retried final PATCH: the upload is already a job
      return size;
    }
    // The file is hashed, and its head kept (to sniff), on the way in: from its start, or from where
    // this process's last PATCH of it ended; otherwise the finish reads them back from the store once.
    const carried = takeDigest(id, offset);
    const hash = offset === 0 ? createHash('sha256') : carried?.hash;
    const head: Buffer[] = carried ? [carried.head] : [];
    let headBytes = carried?.head.length ?? 0;
    let hashed = 0;
    async function* tap(): AsyncGenerator<Buffer> {
      for await (const part of stream) {
        const buf = part as Buffer;
        if (hash && headBytes < sniffBytes) {
          head.push(buf.subarray(0, sniffBytes - headBytes));
          headBytes += Math.min(buf.length, sniffBytes - headBytes);
        }
        hash?.update(buf);
        hashed += buf.length;
        yield buf;
      }
    }
    const stored = await this.deps.blobs.writeAt('videos', id, offset, tap(), { limit: size - offset });
    if (stored === size) await this.finish(row, hash && { sha256: hash.digest('hex'), head: Buffer.concat(head) });
    else if (hash && stored === offset + hashed) keepDigest(id, { offset: stored, hash, head: Buffer.concat(head) });
    return stored;
  }

  /** Runs under the upload's lock; each step can be repeated, so a finish that died part-way is run again. */
  private async finish(row: UploadRow, seen: { sha256: string; head: Buffer } | undefined): Promise<void> {
    const { db, blobs } = this.deps;
    const size = Number(row.size);
    let contentType: string;
    try {
      contentType = await sniffMedia(seen?.head ?? await blobs.readHead('videos', row.id, sniffBytes));
    } catch (err) {
      await blobs.delete('videos', row.id);
      await db('uploads').where({ id: row.id }).delete();
      throw err;
    }
    const owner = { id: row.owner_id, email: row.owner_email };
    const blob = await blobs.seal('videos', row.id, size, { owner: owner.id, filename: row.filename, contentType }, seen?.sha256);
    const options = mp3OptionsSchema.parse(JSON.parse(row.options));
    // Checked at creation (parseUploadMetadata); read again from the metadata as it was sent.
    const callbackUrl = parseCallbackUrl((JSON.parse(row.metadata) as Record<string, unknown>).callbackUrl, this.deps.config.webhooks);
    await queueUploadJob(this.deps, row.id, owner, { blob, filename: row.filename, contentType }, options, callbackUrl);
    await db('uploads').where({ id: row.id }).update({ job_id: row.id });
    uploadBytes.observe({ kind: 'resumable' }, size);
    uploadDuration.observe({ kind: 'resumable' }, (Date.now() - Number(row.created_at)) / 1000);
  }

  /** Termination of an unfinished upload: its bytes and its row go. */
  override async remove(id: string): Promise<void> {
    const row = await this.ownedRow(id);
    if (row.job_id) throw ERRORS.INVALID_TERMINATION;
    runningDigests.delete(id);
    await this.deps.blobs.delete('videos', id);
    await this.deps.db('uploads').where({ id }).delete();
  }

  override async deleteExpired(): Promise<number> {
    return deleteExpiredUploads(this.deps);
  }

  override getExpiration(): number {
    return this.deps.config.retention.uploadSeconds * 1000;
  }
}

/** The job id of a finished upload the user owns, if it is finished. */
export async function finishedJobId(db: Db, id: string, owner: Owner): Promise<string | undefined> {
  const row = await findUpload(db, id);
  return row && row.owner_id === owner.id ? row.job_id ?? undefined : undefined;
}

/**
 * Forgets uploads past their expiry: an unfinished one's bytes are deleted with it; a finished one's
 * bytes are its job's video and stay. Returns how many unfinished uploads were removed.
 */
export async function deleteExpiredUploads(deps: Pick<ResumableDeps, 'db' | 'blobs'>, now = Date.now()): Promise<number> {
  const rows: UploadRow[] = await deps.db('uploads').where('expires_at', '<', now).limit(500);
  let removed = 0;
  for (const row of rows) {
    if (!row.job_id) {
      await deps.blobs.delete('videos', row.id);
      removed += 1;
    }
    await deps.db('uploads').where({ id: row.id }).delete();
  }
  return removed;
}

const leaseMs = 8000;
const acquireTimeoutMs = 20_000;
const retryMs = 100;

/**
 * A tus lock over a database lease (lib/storage/locks.ts), honouring requestRelease: a request that
 * wants a locked upload asks the holder to let go, and the holder (a stalled PATCH from a dead
 * connection, say) is cut short at its next renewal. A holder killed outright lapses after leaseMs.
 */
class DbLock implements Lock {
  private lease?: Lease;
  private renewal?: NodeJS.Timeout;

  constructor(private readonly db: Db, private readonly id: string) {}

  async lock(signal: AbortSignal, requestRelease: RequestRelease): Promise<void> {
    const name = `upload:${this.id}`;
    const deadline = Date.now() + acquireTimeoutMs;
    for (;;) {
      if (signal.aborted) throw ERRORS.ABORTED;
      this.lease = await tryLock(this.db, name, leaseMs);
      if (this.lease) break;
      await askRelease(this.db, name);
      if (Date.now() > deadline) throw ERRORS.ERR_LOCK_TIMEOUT;
      await new Promise((r) => setTimeout(r, retryMs));
    }
    const lease = this.lease;
    this.renewal = setInterval(() => {
      renewLock(this.db, lease, leaseMs).then(
        ({ held, releaseRequested }) => { if (!held || releaseRequested) void requestRelease(); },
        (err: unknown) => log.warn({ err, upload: this.id }, 'could not renew an upload lock'),
      );
    }, leaseMs / 4);
    this.renewal.unref();
  }

  async unlock(): Promise<void> {
    clearInterval(this.renewal);
    if (this.lease) await unlock(this.db, this.lease);
    this.lease = undefined;
  }
}

export const createDbLocker = (db: Db): Locker => ({ newLock: (id) => new DbLock(db, id) });
