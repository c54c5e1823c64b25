/**
 * lib/media owns turning a video into an MP3: ffmpeg.wasm in a worker thread (worker.ts), what ffmpeg
 * says about an input (probe.ts), MP3 frame parsing (mp3-frames.ts) and the output options a user may
 * choose (options.ts). It knows nothing of jobs, storage or HTTP.
 */
import { createRequire } from 'node:module';
import path from 'node:path';
import { Worker } from 'node:worker_threads';
import { formatDuration, formatSize } from '../core/format';
import { mp3OptionsSchema, type Mp3Options } from './options';
import type { FailureDetail, JobReply, JobRequest, TranscodeFailure, WorkerMemory } from './worker-protocol';

export type { Mp3Options, TranscodeFailure };

/** A conversion that can never succeed for this input and these limits (retrying will not help). */
export class TranscodeError extends Error {
  override readonly name = 'TranscodeError';
  constructor(readonly reason: TranscodeFailure, message: string) {
    super(message);
  }
}

export interface TranscodeResult {
  mp3: Buffer;
  /** Real duration of the MP3 (frames minus encoder delay and padding). */
  durationSeconds: number;
  bytes: number;
  elapsedMs: number;
  /** The worker thread's memory after the job, for spotting growth across jobs. */
  workerMemory: WorkerMemory;
}

export interface TranscoderOptions {
  /** Longer sources are refused with 'too-long' (the source's duration, before any trim). */
  maxDurationSeconds: number;
  maxOutputBytes: number;
  /**
   * A conversion still running after this long is stopped (its thread is replaced) and rejected
   * with a plain Error, so a hung converter cannot hold the instance forever.
   */
  timeoutMs?: number;
  /** Called at most every 500 ms while encoding, and once with 100 when done. */
  onProgress?: (p: { percent: number; timeSeconds: number }) => void;
}

export interface Transcoder {
  /**
   * Converts one input. Calls run one at a time; a call made while busy waits its turn.
   * Rejects with TranscodeError for inputs that cannot be converted, RangeError for invalid options,
   * and a plain Error when the converter itself failed (its thread is then replaced; a retry may work).
   */
  transcode(input: Buffer, options: Mp3Options, call?: { timeoutMs?: number }): Promise<TranscodeResult>;
  /** Waits for queued calls to finish, then stops the worker thread. */
  close(): Promise<void>;
}

const PROGRESS_INTERVAL_MS = 500;

/**
 * Creates a transcoder. The worker thread and the ffmpeg core inside it are started on the first
 * call and reused by later ones.
 */
export function createTranscoder(opts: TranscoderOptions): Transcoder {
  requirePositive('maxDurationSeconds', opts.maxDurationSeconds);
  requirePositive('maxOutputBytes', opts.maxOutputBytes);
  let worker: Worker | undefined;
  let nextId = 1;
  let tail: Promise<unknown> = Promise.resolve();
  let closed = false;

  function discard(w: Worker): void {
    if (worker === w) worker = undefined;
    void w.terminate();
  }

  function runJob(input: Buffer, options: Mp3Options, timeoutMs = opts.timeoutMs): Promise<TranscodeResult> {
    const w = (worker ??= spawnWorker());
    const id = nextId++;
    const startedAt = performance.now();
    let lastProgressAt = -Infinity;
    let lastPercent = 0;
    const report = (percent: number, timeSeconds: number): void => {
      try {
        lastPercent = percent;
        opts.onProgress?.({ percent, timeSeconds });
      } catch {
        // Progress is advisory: a failing listener must not fail the conversion.
      }
    };

    return new Promise<TranscodeResult>((resolve, reject) => {
      const timer = timeoutMs === undefined ? undefined : setTimeout(() => {
        settle();
        discard(w);
        reject(new Error(`The conversion did not finish within ${Math.round(timeoutMs / 1000)} s and was stopped.`));
      }, timeoutMs);
      const settle = (): void => {
        clearTimeout(timer);
        w.off('message', onMessage);
        w.off('error', onError);
        w.off('exit', onExit);
        w.unref(); // an idle transcoder never keeps the process alive
      };
      const onMessage = (reply: JobReply): void => {
        if (reply.id !== id) return;
        switch (reply.kind) {
          case 'progress':
            if (performance.now() - lastProgressAt >= PROGRESS_INTERVAL_MS) {
              lastProgressAt = performance.now();
              report(reply.percent, reply.timeSeconds);
            }
            return;
          case 'done': {
            settle();
            const mp3 = Buffer.from(reply.mp3.buffer, reply.mp3.byteOffset, reply.mp3.byteLength);
            if (lastPercent < 100) report(100, reply.durationSeconds);
            resolve({
              mp3,
              durationSeconds: reply.durationSeconds,
              bytes: mp3.byteLength,
              elapsedMs: performance.now() - startedAt,
              workerMemory: reply.memory,
            });
            return;
          }
          case 'failed':
            settle();
            reject(new TranscodeError(reply.reason, describeFailure(reply.reason, reply.detail)));
            return;
          case 'invalid':
            settle();
            reject(new RangeError(reply.message));
            return;
          case 'crashed':
            settle();
            discard(w);
            reject(new Error(`The converter crashed: ${reply.message}`));
            return;
        }
      };
      const onError = (error: Error): void => {
        settle();
        discard(w);
        reject(new Error('The converter thread failed.', { cause: error }));
      };
      const onExit = (code: number): void => {
        settle();
        discard(w);
        reject(new Error(`The converter thread exited unexpectedly (code ${code}).`));
      };
      w.on('message', onMessage);
      w.on('error', onError);
      w.on('exit', onExit);
      w.ref();
      // A private copy is transferred, so the caller's buffer is never detached.
      const copy = new Uint8Array(input);
      const request: JobRequest = {
        id,
        input: copy,
        options,
        maxDurationSeconds: opts.maxDurationSeconds,
        maxOutputBytes: opts.maxOutputBytes,
      };
      w.postMessage(request, [copy.buffer]);
    });
  }

  return {
    transcode(input, options, call) {
      if (closed) return Promise.reject(new Error('The transcoder is closed.'));
      try {
        validateOptions(options);
      } catch (error) {
        return Promise.reject(error);
      }
      const job = tail.then(() => runJob(input, options, call?.timeoutMs ?? opts.timeoutMs));
      tail = job.catch(() => undefined);
      return job;
    },
    async close() {
      closed = true;
      await tail;
      const w = worker;
      worker = undefined;
      await w?.terminate();
    },
  };
}

function spawnWorker(): Worker {
  // Bundled (dist/<fn>/index.js) the worker is the sibling bundle transcode-worker.js; from source
  // (tsx, vitest) it is the .ts file, loaded through tsx's CommonJS hook inside the new thread.
  const here = __filename;
  const worker = /\.[cm]?js$/.test(here)
    ? new Worker(path.join(__dirname, 'transcode-worker.js'))
    : new Worker(
        `require(${JSON.stringify(createRequire(here).resolve('tsx/cjs/api'))}).register();` +
          `require(${JSON.stringify(path.join(path.dirname(here), 'worker.ts'))});`,
        { eval: true },
      );
  worker.unref();
  return worker;
}

function requirePositive(name: string, value: number): void {
  if (!Number.isFinite(value) || value <= 0) throw new RangeError(`${name} must be a positive number, got ${value}.`);
}

/** The same rules as the upload's options (one schema), as a RangeError for a direct caller. */
function validateOptions(o: Mp3Options): void {
  const result = mp3OptionsSchema.safeParse(o);
  if (!result.success) {
    const issue = result.error.issues[0]!;
    throw new RangeError(`${issue.path.join('.') || 'options'}: ${issue.message}`);
  }
}

function describeFailure(reason: TranscodeFailure, detail: FailureDetail): string {
  switch (reason) {
    case 'no-audio':
      return 'The video has no audio track, so there is nothing to convert to MP3.';
    case 'corrupt':
      return detail.empty
        ? 'The file is empty, so there is nothing to convert.'
        : 'The file is damaged or incomplete (perhaps the upload was cut off), so it cannot be read.';
    case 'unsupported':
      return 'The file is not a video or audio format that can be converted to MP3.';
    case 'too-long':
      return detail.durationSeconds !== undefined
        ? `The video is ${formatDuration(detail.durationSeconds)} long; only videos up to ${formatDuration(detail.limit ?? 0)} can be converted.`
        : `The video is longer than ${formatDuration(detail.limit ?? 0)}, the most that can be converted.`;
    case 'output-too-large':
      return `The MP3 would be larger than the ${formatSize(detail.limit ?? 0)} limit; choose a lower bitrate or a shorter part of the video.`;
  }
}
