// Worker-thread body for lib/media/transcode.ts. ffmpeg.wasm's runSync blocks the thread it runs on, so it
// lives here, away from the caller's event loop. One FFmpeg instance (one compiled core) per worker,
// created on the first job and reused. After a job that threw (wasm abort) the owner terminates this
// thread and starts a new one, which frees the instance's memory and threads for certain.
// Success and failure are read from ffmpeg's log (probe.ts says why).
import { parentPort } from 'node:worker_threads';
import { FFmpeg, type FFmpegCoreConstructor } from '@ffmpeg.wasm/main';
import createCore from '@ffmpeg.wasm/core-mt';
import type { Mp3Options } from './options';
import { measureMp3Duration } from './mp3-frames';
import { chooseAudioStream, InvalidOptions, JobFailure, parseClock, parseProbe, type ProbedStream } from './probe';
import type { JobReply, JobRequest, WorkerMemory } from './worker-protocol';

const INPUT = 'input';
const OUTPUT = 'output.mp3';

let ffmpeg: FFmpeg | undefined;
let onLine: (line: string) => void = () => {};

async function getFFmpeg(): Promise<FFmpeg> {
  ffmpeg ??= await FFmpeg.create({
    core: createCore as unknown as FFmpegCoreConstructor,
    log: true,
    logger: (_level, ...msg) => onLine(msg.map(String).join(' ')),
  });
  return ffmpeg;
}

/** Runs ffmpeg with `args` and hands every log line to `collect`. */
function run(ff: FFmpeg, args: string[], collect: (line: string) => void): void {
  onLine = collect;
  try {
    ff.runSync('-nostdin', '-y', '-hide_banner', ...args);
  } finally {
    onLine = () => {};
  }
}

function removeFile(ff: FFmpeg, name: string): void {
  try {
    ff.fs.unlink(name);
  } catch {
    // Not there: nothing to free.
  }
}

function buildEncodeArgs(
  stream: ProbedStream,
  options: Mp3Options,
  limits: { maxOutputBytes: number; capSeconds?: number },
): string[] {
  const args: string[] = [];
  if (options.start !== undefined && options.start > 0) args.push('-ss', String(options.start));
  args.push('-i', INPUT, '-map', `0:${stream.index}`, '-vn', '-sn', '-dn');
  const span = options.end !== undefined ? options.end - (options.start ?? 0) : undefined;
  const cap = [span, limits.capSeconds].filter((v): v is number => v !== undefined);
  if (cap.length > 0) args.push('-t', String(Math.min(...cap)));
  args.push('-map_metadata', '-1', '-map_chapters', '-1', '-c:a', 'libmp3lame');
  if (options.bitrate !== undefined) args.push('-b:a', `${options.bitrate}k`);
  else args.push('-q:a', String(options.quality ?? 2));
  if (options.sampleRate !== undefined) args.push('-ar', String(options.sampleRate));
  // LAME encodes mono or stereo only; keep mono sources mono, fold everything else to stereo.
  args.push('-ac', String(options.channels ?? (stream.channels === 1 ? 1 : 2)));
  if (options.title !== undefined) args.push('-metadata', `title=${options.title}`);
  // -fs stops the muxer once the file passes the limit, so an oversized output never fills memory.
  args.push('-fs', String(limits.maxOutputBytes + 1));
  args.push('-id3v2_version', '3', '-write_xing', '1', '-fflags', '+bitexact', '-f', 'mp3', OUTPUT);
  return args;
}


function workerMemory(): WorkerMemory {
  const { heapUsed, external, arrayBuffers } = process.memoryUsage();
  return { heapUsedBytes: heapUsed, externalBytes: external, arrayBuffersBytes: arrayBuffers };
}

// --- the job ---------------------------------------------------------------------------------

async function transcode(job: JobRequest): Promise<JobReply> {
  const ff = await getFFmpeg();
  const { id, options, maxDurationSeconds, maxOutputBytes } = job;
  try {
    ff.fs.writeFile(INPUT, job.input);

    const probeLines: string[] = [];
    run(ff, ['-i', INPUT], (line) => probeLines.push(line));
    const probe = parseProbe(probeLines);
    const stream = chooseAudioStream(probe, job.input.byteLength);
    const source = probe.durationSeconds;
    if (source !== undefined && source > maxDurationSeconds) {
      throw new JobFailure('too-long', { durationSeconds: source, limit: maxDurationSeconds });
    }

    const start = options.start ?? 0;
    if (source !== undefined && start >= source) {
      throw new InvalidOptions(`The trim start (${start} s) is at or past the end of the media (${source} s).`);
    }
    const spanEnd = Math.min(options.end ?? Infinity, source ?? Infinity);
    const span = Number.isFinite(spanEnd) ? spanEnd - start : undefined;
    let failed = false;
    run(
      ff,
      // Unknown source duration: encode one second past the limit, then judge by the output.
      buildEncodeArgs(stream, options, { maxOutputBytes, capSeconds: source === undefined ? maxDurationSeconds + 1 : undefined }),
      (line) => {
        // A read error on the input (not EOF), e.g. an MP4 whose index points past the end of a cut-off
        // upload, would otherwise give a silently short MP3.
        if (line.startsWith('Conversion failed!') || line.endsWith(': partial file') || line.startsWith(`${INPUT}: `)) {
          failed = true;
        }
        const time = /time=(\d+:\d+:\d+(?:\.\d+)?)/.exec(line);
        if (time && line.includes('size=')) {
          const timeSeconds = parseClock(time[1]);
          const percent = span ? Math.min(100, Math.max(0, (timeSeconds / span) * 100)) : 0;
          parentPort?.postMessage({ id, kind: 'progress', timeSeconds, percent } satisfies JobReply);
        }
      },
    );

    let mp3: Uint8Array;
    try {
      mp3 = ff.fs.readFile(OUTPUT);
    } catch {
      mp3 = new Uint8Array(0);
    }
    if (mp3.byteLength > maxOutputBytes) throw new JobFailure('output-too-large', { limit: maxOutputBytes });
    const durationSeconds = measureMp3Duration(mp3);
    if (failed || durationSeconds === 0) throw new JobFailure('corrupt');
    if (source === undefined && durationSeconds > maxDurationSeconds) {
      throw new JobFailure('too-long', { limit: maxDurationSeconds });
    }
    // FS.readFile returns a fresh array, so the unlink below frees MEMFS's own copy.
    return { id, kind: 'done', mp3, durationSeconds, memory: workerMemory() };
  } finally {
    removeFile(ff, INPUT);
    removeFile(ff, OUTPUT);
  }
}

async function handle(job: JobRequest): Promise<void> {
  let reply: JobReply;
  try {
    reply = await transcode(job);
  } catch (error) {
    if (error instanceof JobFailure) {
      reply = { id: job.id, kind: 'failed', reason: error.reason, detail: error.detail };
    } else if (error instanceof InvalidOptions) {
      reply = { id: job.id, kind: 'invalid', message: error.message };
    } else {
      // A wasm abort leaves the instance in an unknown state; the owner replaces this whole thread.
      ffmpeg = undefined;
      reply = { id: job.id, kind: 'crashed', message: error instanceof Error ? error.message : String(error) };
    }
  }
  const transfer = reply.kind === 'done' ? [reply.mp3.buffer as ArrayBuffer] : [];
  parentPort?.postMessage(reply, transfer);
}

let busy: Promise<void> = Promise.resolve();
parentPort?.on('message', (job: JobRequest) => {
  busy = busy.then(() => handle(job));
});

