import { fileTypeFromBuffer } from 'file-type';
import type { BlobStore } from '../storage/blobs';
import type { Config } from '../core/config';
import type { Db } from '../storage/db';
import { BadInputError, TooLargeError, UnsupportedMediaError } from '../core/errors';
import { cleanFilename } from './filenames';
import { toAmqp, videoUploaded } from '../messaging/events';
import { createJob, deleteJob, newJobId, type Job } from './jobs';
import { checkQuotas } from './quotas';
import { log } from '../core/log';
import type { Mp3Options } from '../media/options';
import type { Broker } from '../messaging/queue';

export interface Upload {
  filename: string;
  data: Buffer;
  options: Mp3Options;
}

/** Decides from the bytes, not the client's word, that this is an audio/video container. */
export async function sniffMedia(data: Buffer): Promise<string> {
  if (data.length === 0) throw new BadInputError('the file is empty');
  const type = await fileTypeFromBuffer(data.subarray(0, 64 * 1024));
  if (!type || !/^(video|audio)\//.test(type.mime)) {
    throw new UnsupportedMediaError(`this is not a video file${type ? ` (it looks like ${type.mime})` : ''}; upload a video such as MP4, MKV, WebM, MOV, AVI, FLV or MPEG-TS`);
  }
  return type.mime;
}

export interface UploadDeps {
  db: Db;
  blobs: BlobStore;
  broker: Broker;
  config: Pick<Config, 'limits' | 'quotas'>;
}

/**
 * Stores the video, records the job and queues the conversion, in that order. If a later step fails
 * the earlier ones are undone (no orphan blob, no job that would never move) and the error goes on:
 * a dependency that is down is a 503 (lib/http/errors.ts), anything else a bug (500).
 */
export async function acceptUpload(deps: UploadDeps, owner: { id: string; email: string }, upload: Upload): Promise<Job> {
  const { db, blobs, broker, config } = deps;
  if (upload.data.length > config.limits.uploadBytes) throw new TooLargeError(config.limits.uploadBytes);
  await checkQuotas(db, owner.id, config);
  const contentType = await sniffMedia(upload.data);
  const filename = cleanFilename(upload.filename);
  const jobId = newJobId();

  const blob = await blobs.put('videos', upload.data, { owner: owner.id, filename, contentType });
  let job: Job;
  try {
    job = await createJob(db, {
      id: jobId,
      ownerId: owner.id,
      ownerEmail: owner.email,
      filename,
      contentType,
      options: upload.options,
      videoBlobId: blob.id,
      videoBytes: blob.size,
      videoSha256: blob.sha256,
    });
  } catch (err) {
    await undo(() => blobs.delete('videos', blob.id));
    throw err;
  }
  try {
    const event = videoUploaded(
      { jobId, owner: owner.id, email: owner.email, filename, videoBlobId: blob.id, options: upload.options },
      `${jobId}.uploaded`,
    );
    await broker.publish('video', toAmqp(event));
  } catch (err) {
    await undo(() => deleteJob(db, jobId));
    await undo(() => blobs.delete('videos', blob.id));
    throw err;
  }
  log.info({ jobId, owner: owner.id, bytes: blob.size, contentType }, 'video queued');
  return job;
}

async function undo(step: () => Promise<unknown>) {
  try {
    await step();
  } catch (err) {
    log.error({ err }, 'could not undo a step of a failed upload');
  }
}
