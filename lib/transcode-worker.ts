// Worker-thread body for lib/transcode.ts. ffmpeg.wasm's runSync blocks the thread it runs on, so it
// lives here, away from the caller's event loop. One FFmpeg instance (one compiled core) per worker,
// created on the first job and reused. After a job that threw (wasm abort) the owner terminates this
// thread and starts a new one, which frees the instance's memory and threads for certain.
//
// This build of ffmpeg.wasm always returns exit code 0 and ignores -loglevel (every line, down to
// debug, reaches the logger), so success and failure are read from the log text.
import { parentPort } from 'node:worker_threads';
import { FFmpeg, type FFmpegCoreConstructor } from '@ffmpeg.wasm/main';
import createCore from '@ffmpeg.wasm/core-mt';
import type { Mp3Options, TranscodeFailure } from './transcode';

export interface JobRequest {
  id: number;
  input: Uint8Array;
  options: Mp3Options;
  maxDurationSeconds: number;
  maxOutputBytes: number;
}

export type JobReply =
  | { id: number; kind: 'progress'; timeSeconds: number; percent: number }
  | { id: number; kind: 'done'; mp3: Uint8Array; durationSeconds: number; memory: WorkerMemory }
  | { id: number; kind: 'failed'; reason: TranscodeFailure; detail: FailureDetail }
  | { id: number; kind: 'invalid'; message: string }
  | { id: number; kind: 'crashed'; message: string };

export interface FailureDetail {
  durationSeconds?: number;
  limit?: number;
  format?: string;
  empty?: boolean;
}

export interface WorkerMemory {
  heapUsedBytes: number;
  externalBytes: number;
  arrayBuffersBytes: number;
}

class JobFailure extends Error {
  constructor(readonly reason: TranscodeFailure, readonly detail: FailureDetail = {}) {
    super(reason);
  }
}

class InvalidOptions extends Error {}

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

// --- probing ---------------------------------------------------------------------------------

interface ProbedStream {
  index: number;
  type: 'audio' | 'video' | 'other';
  channels?: number;
  isDefault: boolean;
  isAttachedPicture: boolean;
}

interface Probe {
  /** Demuxer that recognised the bytes (e.g. "mov,mp4,m4a,3gp,3g2,mj2"), even if opening then failed. */
  detectedFormat?: string;
  opened: boolean;
  durationSeconds?: number;
  streams: ProbedStream[];
}

const CHANNEL_LAYOUTS: Record<string, number> = {
  mono: 1, stereo: 2, downmix: 2, quad: 4, hexagonal: 6, octagonal: 8, hexadecagonal: 16,
};

function parseChannels(description: string): number | undefined {
  const layout = /\d+ Hz, ([^,]+)/.exec(description)?.[1]?.trim();
  if (!layout) return undefined;
  const named = CHANNEL_LAYOUTS[layout.replace(/\(.*\)$/, '')];
  if (named) return named;
  const counted = /^(\d+) channels/.exec(layout);
  if (counted) return Number(counted[1]);
  const dotted = /^(\d+)\.(\d+)/.exec(layout); // 5.1, 7.1(wide), 2.1, 22.2 …
  return dotted ? Number(dotted[1]) + Number(dotted[2]) : undefined;
}

function parseClock(text: string): number {
  const [h, m, s] = text.split(':').map(Number);
  return h * 3600 + m * 60 + s;
}

/** Reads what `ffmpeg -i input` printed about the input. */
function parseProbe(lines: string[]): Probe {
  const probe: Probe = { opened: false, streams: [] };
  let inInputBlock = false;
  for (const line of lines) {
    const detected = /^Format (.+) probed with size=\d+ and score=\d+/.exec(line);
    if (detected) probe.detectedFormat = detected[1];
    const header = /^Input #0, (.+), from '/.exec(line);
    if (header) {
      inInputBlock = header[1] !== '(null)';
      probe.opened ||= inInputBlock;
      continue;
    }
    if (!inInputBlock) continue;
    if (!line.startsWith(' ')) {
      inInputBlock = false;
      continue;
    }
    const duration = /^\s+Duration: (\d+:\d+:\d+(?:\.\d+)?)/.exec(line);
    if (duration) probe.durationSeconds = parseClock(duration[1]);
    const stream = /^\s+Stream #0:(\d+).*?: (Audio|Video|Subtitle|Data|Attachment): (.*)$/.exec(line);
    if (stream) {
      const [, index, kind, description] = stream;
      probe.streams.push({
        index: Number(index),
        type: kind === 'Audio' ? 'audio' : kind === 'Video' ? 'video' : 'other',
        channels: kind === 'Audio' ? parseChannels(description) : undefined,
        isDefault: /\(default\)/.test(description),
        isAttachedPicture: /\(attached pic\)/.test(description),
      });
    }
  }
  return probe;
}

/**
 * Classifies an input, or throws the reason it cannot be converted. The rule for bad inputs:
 * - empty input, or bytes a demuxer recognised but could not open (truncated MP4 without its moov
 *   index, broken headers) → 'corrupt': it looks like media, but is damaged.
 * - bytes no demuxer recognises, still images (ffmpeg's image demuxers), or containers with neither
 *   audio nor video (e.g. subtitles) → 'unsupported': it is not a video or audio file at all.
 * - a video without an audio stream → 'no-audio'.
 */
function chooseAudioStream(probe: Probe, inputBytes: number): ProbedStream {
  if (inputBytes === 0) throw new JobFailure('corrupt', { empty: true });
  if (!probe.opened) throw new JobFailure(probe.detectedFormat ? 'corrupt' : 'unsupported', { format: probe.detectedFormat });
  const format = probe.detectedFormat ?? '';
  if (/_pipe$|^image2$/.test(format)) throw new JobFailure('unsupported', { format });
  const audio = probe.streams.filter((s) => s.type === 'audio');
  if (audio.length === 0) {
    const hasVideo = probe.streams.some((s) => s.type === 'video' && !s.isAttachedPicture);
    throw new JobFailure(hasVideo ? 'no-audio' : 'unsupported', { format });
  }
  return audio.find((s) => s.isDefault) ?? audio[0];
}

// --- encoding --------------------------------------------------------------------------------

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

const BITRATES_V1 = [0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320];
const BITRATES_V2 = [0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160];
const SAMPLE_RATES: Record<number, number[]> = { 3: [44100, 48000, 32000], 2: [22050, 24000, 16000], 0: [11025, 12000, 8000] };

interface FrameHeader {
  version: number; // 3 = MPEG-1, 2 = MPEG-2, 0 = MPEG-2.5
  sampleRate: number;
  samplesPerFrame: number;
  length: number;
  mono: boolean;
}

function readFrameHeader(mp3: Uint8Array, at: number): FrameHeader | undefined {
  if (at + 4 > mp3.length || mp3[at] !== 0xff || (mp3[at + 1] & 0xe0) !== 0xe0) return undefined;
  const version = (mp3[at + 1] >> 3) & 3;
  const layer = (mp3[at + 1] >> 1) & 3;
  const bitrateIndex = mp3[at + 2] >> 4;
  const sampleRate = SAMPLE_RATES[version]?.[(mp3[at + 2] >> 2) & 3];
  if (layer !== 1 || !sampleRate || bitrateIndex === 0 || bitrateIndex === 15) return undefined;
  const bitrate = (version === 3 ? BITRATES_V1 : BITRATES_V2)[bitrateIndex] * 1000;
  const padding = (mp3[at + 2] >> 1) & 1;
  const samplesPerFrame = version === 3 ? 1152 : 576;
  const length = Math.floor(((samplesPerFrame / 8) * bitrate) / sampleRate) + padding;
  return { version, sampleRate, samplesPerFrame, length, mono: (mp3[at + 3] >> 6) === 3 };
}

/**
 * Duration of an MP3 in seconds: from the Xing/Info frame count minus the LAME tag's encoder delay
 * and padding when present (what ffmpeg's muxer writes), else by walking every frame.
 */
function measureMp3Duration(mp3: Uint8Array): number {
  let at = 0;
  if (mp3.length >= 10 && mp3[0] === 0x49 && mp3[1] === 0x44 && mp3[2] === 0x33) {
    const size = ((mp3[6] & 0x7f) << 21) | ((mp3[7] & 0x7f) << 14) | ((mp3[8] & 0x7f) << 7) | (mp3[9] & 0x7f);
    at = 10 + size + (mp3[5] & 0x10 ? 10 : 0);
  }
  const first = readFrameHeader(mp3, at);
  if (!first) return 0;
  const sideInfo = first.version === 3 ? (first.mono ? 17 : 32) : first.mono ? 9 : 17;
  const tag = at + 4 + sideInfo;
  const tagId = String.fromCharCode(...mp3.subarray(tag, tag + 4));
  if ((tagId === 'Xing' || tagId === 'Info') && mp3[tag + 7] & 1) {
    const view = new DataView(mp3.buffer, mp3.byteOffset, mp3.byteLength);
    const flags = view.getUint32(tag + 4);
    const frames = view.getUint32(tag + 8);
    const lame = tag + 8 + 4 + (flags & 2 ? 4 : 0) + (flags & 4 ? 100 : 0) + (flags & 8 ? 4 : 0);
    let trimmed = 0;
    if (lame + 24 <= mp3.length && /^(LAME|Lavc|Lavf)/.test(String.fromCharCode(...mp3.subarray(lame, lame + 4)))) {
      const packed = (mp3[lame + 21] << 16) | (mp3[lame + 22] << 8) | mp3[lame + 23];
      trimmed = (packed >> 12) + (packed & 0xfff);
    }
    return Math.max(0, frames * first.samplesPerFrame - trimmed) / first.sampleRate;
  }
  let samples = 0;
  for (let frame: FrameHeader | undefined = first; frame; frame = readFrameHeader(mp3, at)) {
    samples += frame.samplesPerFrame;
    at += frame.length;
  }
  return samples / first.sampleRate;
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
    if (failed || durationSeconds === 0) throw new JobFailure('corrupt', { format: probe.detectedFormat });
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
