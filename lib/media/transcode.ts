/**
 * lib/media owns turning a video file into an MP3 file: a pool of warmed ffmpeg.wasm instances, each in
 * its own worker thread (encoder-pool.ts, worker.ts), reading and writing host files rather than
 * in-memory copies (host-file.ts), long inputs encoded in parallel segments and joined into one
 * gapless MP3 (convert-file.ts, mp3-join.ts), what ffmpeg says about an input (probe.ts), MP3 frame
 * parsing (mp3-frames.ts), the output options a user may choose (options.ts), and what the MP3 gets
 * besides its audio: loudness normalisation (loudness.ts), cover art (cover.ts), the input's chapters and
 * tags (tags.ts), in an ID3v2.4 tag written in front of the frames (id3.ts). It knows nothing of jobs,
 * storage or HTTP.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { formatDuration, formatSize } from '../core/format';
import { convertFile } from './convert-file';
import { createEncoderPool, EncoderTimeoutError, type EncoderPool } from './encoder-pool';
import { mp3OptionsSchema, type Mp3Options } from './options';
import type { LoudnessPlan } from './loudness';
import { InvalidOptions, JobFailure } from './probe';
import type { FailureDetail, TranscodeFailure, WorkerMemory } from './worker-protocol';

export type { LoudnessPlan, Mp3Options, TranscodeFailure };

/** A conversion that can never succeed for this input and these limits (retrying will not help). */
export class TranscodeError extends Error {
  override readonly name = 'TranscodeError';
  constructor(readonly reason: TranscodeFailure, message: string) {
    super(message);
  }
}

export interface TranscodeResult {
  /** Real duration of the MP3 (frames minus encoder delay and padding). */
  durationSeconds: number;
  bytes: number;
  elapsedMs: number;
  /** Instances that encoded it in parallel segments (1 = one instance). */
  segments: number;
  /** An instance thread's memory after the job, for spotting growth across jobs. */
  workerMemory: WorkerMemory;
  /** The loudness measured and the gain applied (only with the loudness option). */
  loudness?: LoudnessPlan;
  /** Whether the MP3's ID3v2 tag carries a front cover (APIC). */
  cover: boolean;
  /** Chapters in the MP3's ID3v2 tag (CHAP frames, listed by one CTOC). */
  chapters: number;
  /** Text tags written: the user's title or the input's, and the input's artist, album and date. */
  tags: { title?: string; artist?: string; album?: string; date?: string };
}

/** What the MP3 got besides its audio: the job's record keeps it and shows it to the user. */
export type Mp3Details = Pick<TranscodeResult, 'loudness' | 'cover' | 'chapters' | 'tags'>;

export interface TranscoderOptions {
  /** Longer sources are refused with 'too-long' (the source's duration, before any trim). */
  maxDurationSeconds: number;
  maxOutputBytes: number;
  /**
   * A conversion still running after this long is stopped (its instances are replaced) and rejected
   * with a plain Error, so a hung converter cannot hold the instance forever.
   */
  timeoutMs?: number;
  /** Called at most every 500 ms while encoding, and once with 100 when done. */
  onProgress?: (p: { percent: number; timeSeconds: number }) => void;
  /**
   * ffmpeg.wasm instances (worker threads) encoding one long input in parallel segments; default:
   * the cores this process may use (os.availableParallelism()).
   */
  parallelism?: number;
  /**
   * Where temporary files go: a subfolder per transcoder, named after its process; the subfolders of
   * dead processes are removed when a transcoder is created (crash recovery). Default: the OS temp folder.
   */
  tempDir?: string;
}

/** Per call: its own timeout, and a progress listener for this conversion alone. */
export interface TranscodeCall {
  timeoutMs?: number;
  /** Lowers the duration limit for this call (a user's remaining daily quota), never raises it. */
  maxDurationSeconds?: number;
  /** Called like TranscoderOptions.onProgress, for this call only. */
  onProgress?: (p: { percent: number; timeSeconds: number }) => void;
  /** The ID3 title when neither the options nor the input's own tags give one. */
  defaultTitle?: string;
}

export interface Transcoder {
  /**
   * Converts the file `input` into the MP3 file `output` (written only on success; removed on any
   * failure). As many calls run at once as there are instances, the rest wait their turn; a call alone
   * is split over every instance, one among others gets one. Rejects with
   * TranscodeError for inputs that cannot be converted, RangeError for invalid options, and a plain
   * Error when the converter itself failed (its instances are then replaced; a retry may work).
   */
  transcode(input: string, output: string, options: Mp3Options, call?: TranscodeCall): Promise<TranscodeResult>;
  /** Resolves once every instance is created and warmed: the first job pays no start-up. */
  ready(): Promise<void>;
  /**
   * This process's folder for temporary files (segments here; callers may put their own copies of
   * inputs and outputs here too). Emptied of dead processes' leftovers when the transcoder is created.
   */
  readonly workDir: string;
  /** Waits for running and queued calls to finish, then stops the instances. */
  close(): Promise<void>;
}

const PROGRESS_INTERVAL_MS = 500;
const TEMP_PREFIX = 'video2mp3-convert-';

/**
 * Creates a transcoder: its instances are created and warmed now (in worker threads, in the
 * background) and reused by every call.
 */
export function createTranscoder(opts: TranscoderOptions): Transcoder {
  requirePositive('maxDurationSeconds', opts.maxDurationSeconds);
  requirePositive('maxOutputBytes', opts.maxOutputBytes);
  const size = opts.parallelism ?? os.availableParallelism();
  if (!Number.isInteger(size) || size < 1) throw new RangeError(`parallelism must be a whole number ≥ 1, got ${size}.`);
  const workDir = createProcessTempDir(opts.tempDir ?? os.tmpdir());
  const pool: EncoderPool = createEncoderPool({ size });
  // Up to `size` conversions at once: one alone is split over every instance, the fastest one job can
  // go; with others running or waiting, each keeps to one instance, because every segment decodes the
  // span's start again, which in a queue is work taken from the next job (docs/core.md, "Speed and memory").
  let active = 0;
  const waiting: (() => void)[] = [];
  const running = new Set<Promise<unknown>>();
  let closed = false;

  async function runJob(input: string, output: string, options: Mp3Options, timeoutMs: number | undefined, maxDurationSeconds: number, call: TranscodeCall = {}, parallelism?: number): Promise<TranscodeResult> {
    const onCallProgress = call.onProgress;
    const startedAt = performance.now();
    let lastProgressAt = -Infinity;
    let lastPercent = 0;
    const report = (percent: number, timeSeconds: number): void => {
      try {
        lastPercent = percent;
        opts.onProgress?.({ percent, timeSeconds });
        onCallProgress?.({ percent, timeSeconds });
      } catch {
        // Progress is advisory: a failing listener must not fail the conversion.
      }
    };
    try {
      const result = await convertFile(pool, {
        parallelism,
        input,
        output,
        options,
        maxDurationSeconds,
        maxOutputBytes: opts.maxOutputBytes,
        workDir,
        timeoutMs,
        defaultTitle: call.defaultTitle,
        onProgress: ({ percent, timeSeconds }) => {
          if (performance.now() - lastProgressAt < PROGRESS_INTERVAL_MS) return;
          lastProgressAt = performance.now();
          report(percent, timeSeconds);
        },
      });
      if (lastPercent < 100) report(100, result.durationSeconds);
      return {
        durationSeconds: result.durationSeconds,
        bytes: result.bytes,
        elapsedMs: performance.now() - startedAt,
        segments: result.segments,
        workerMemory: result.memory,
        ...(result.loudness ? { loudness: result.loudness } : {}),
        cover: result.cover,
        chapters: result.chapters,
        tags: result.tags,
      };
    } catch (error) {
      if (error instanceof JobFailure) throw new TranscodeError(error.reason, describeFailure(error.reason, error.detail));
      if (error instanceof InvalidOptions) throw new RangeError(error.message);
      if (error instanceof EncoderTimeoutError) {
        throw new Error(`The conversion did not finish within ${Math.round((timeoutMs ?? 0) / 1000)} s and was stopped.`, { cause: error });
      }
      if (error instanceof Error && /^The (encoder|converter)/.test(error.message)) throw error;
      throw new Error('The converter failed.', { cause: error });
    }
  }

  return {
    transcode(input, output, options, call) {
      if (closed) return Promise.reject(new Error('The transcoder is closed.'));
      try {
        validateOptions(options);
      } catch (error) {
        return Promise.reject(error);
      }
      // A caller may lower the duration limit for one call (a user's remaining daily quota), never raise it.
      const maxDuration = Math.min(opts.maxDurationSeconds, call?.maxDurationSeconds ?? Infinity);
      const job = (async () => {
        if (active >= size) await new Promise<void>((resolve) => waiting.push(resolve));
        active++;
        try {
          const parallelism = active > 1 || waiting.length > 0 ? 1 : undefined;
          return await runJob(input, output, options, call?.timeoutMs ?? opts.timeoutMs, maxDuration, call, parallelism);
        } finally {
          active--;
          waiting.shift()?.();
        }
      })();
      running.add(job);
      void job.catch(() => undefined).finally(() => running.delete(job));
      return job;
    },
    ready: () => pool.ready(),
    workDir,
    async close() {
      closed = true;
      await Promise.allSettled([...running]);
      await pool.close();
      fs.rmSync(workDir, { recursive: true, force: true });
    },
  };
}

/**
 * This transcoder's folder for temporary files, `<parent>/video2mp3-convert-<pid>-<random>`. Folders
 * left by processes that no longer run (a crash, a kill) are removed first.
 */
function createProcessTempDir(parent: string): string {
  for (const name of fs.existsSync(parent) ? fs.readdirSync(parent) : []) {
    const pid = name.startsWith(TEMP_PREFIX) ? Number.parseInt(name.slice(TEMP_PREFIX.length), 10) : Number.NaN;
    if (Number.isInteger(pid) && pid !== process.pid && !isRunning(pid)) fs.rmSync(path.join(parent, name), { recursive: true, force: true });
  }
  fs.mkdirSync(parent, { recursive: true });
  return fs.mkdtempSync(path.join(parent, `${TEMP_PREFIX}${process.pid}-`));
}

function isRunning(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
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
