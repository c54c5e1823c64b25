// Conversion from disk to disk: the input is a host file, the MP3 is written to a host file, and the
// ffmpeg.wasm instances read and write them through host-file nodes (lib/media/host-file.ts), so memory
// does not grow with the file. Long inputs are encoded in parallel segments and joined into one gapless
// MP3 (lib/media/mp3-join.ts).
//
// The rule for parallel encoding: with a pool of K ≥ 2 instances, a known output sample rate that MP3
// has (8 to 48 kHz) and a known span of at least PARALLEL_MIN_SECONDS, the span is cut into K
// segments. Anything else, and any join that cannot be made exact (SeamError), is encoded by one
// instance.
//
// Every encoding, single or segment, decodes from the same point (the trim start, as an input seek) and
// cuts by sample count after resampling (aresample + atrim), so a segment's samples are exactly those of
// a single-instance encoding at the same positions, whatever the container's timestamp precision.
// Segments do not seek to their own start, which would save the later ones their lead-in decode (~7 %
// of a two-segment job). Where timestamps count samples (MP4) such a seek lands exactly, but an AAC
// decoder that starts mid-stream draws other noise for the bands the encoder coded as noise (PNS): the
// MP3 after the seam then differs from one instance's by −41 to −48 dB, not the −60 dB the seams keep.
import fs from 'node:fs';
import path from 'node:path';
import type { EncoderPool, EncodeRun, EncodeTask, HostFileSpec } from './encoder-pool';
import { extractCover } from './cover';
import { buildId3Tag, prependTag, type Id3Tag } from './id3';
import { canJoin, joinMp3Segments, samplesPerFrame, scanMp3, SeamError, type SeamRule } from './mp3-join';
import { correctLoudness, loudnessFilters, measureLoudness, planLoudness, type LoudnessPlan } from './loudness';
import { measureMp3Duration } from './mp3-frames';
import { sampleRates, type Mp3Options } from './options';
import { chooseAudioStream, InvalidOptions, JobFailure, parseProbe, type Probe, type ProbedStream } from './probe';
import { readFfmetadata, tagsForSpan, type InputMetadata } from './tags';

export interface ConvertFileRequest {
  input: string;
  output: string;
  options: Mp3Options;
  maxDurationSeconds: number;
  maxOutputBytes: number;
  /** Segment files are written here (and removed before returning). Defaults to the output's folder. */
  workDir?: string;
  /** At most this many segments; 1 forces one instance. Defaults to the pool's size. */
  parallelism?: number;
  /** The ID3 title when neither the options nor the input give one (e.g. from the file's name). */
  defaultTitle?: string;
  /** The conversion is stopped (its instances replaced, EncoderTimeoutError) after this long. */
  timeoutMs?: number;
  onProgress?: (p: { percent: number; timeSeconds: number }) => void;
}

export interface ConvertFileResult {
  durationSeconds: number;
  bytes: number;
  /** Decoded samples (frames × samples per frame − encoder delay − padding) at sampleRate, when known. */
  samples?: number;
  sampleRate?: number;
  /** Memory of the last instance that ran, after its run. */
  memory: EncodeRun['memory'];
  /** Segments encoded in parallel (1 = one instance). */
  segments: number;
  /** Where the segments were joined, in seconds of the MP3 (empty for one instance). */
  seamSeconds: number[];
  /** Why one instance was used although the pool has more (undefined when parallel or pool of 1). */
  singleReason?: string;
  /** The loudness measured and the gain applied, when the loudness option was given. */
  loudness?: LoudnessPlan;
  /** Whether the MP3's tag carries a front cover. */
  cover: boolean;
  /** Chapters in the MP3's tag (CHAP frames). */
  chapters: number;
  /** The text tags written (title, artist, album, date), where there are any. */
  tags: Pick<Id3Tag, 'title' | 'artist' | 'album' | 'date'>;
}

/**
 * Decoding (and demuxing) a second of input costs about this fraction of encoding it (native and wasm
 * alike on this kind of machine). Every segment decodes from the trim start, so later segments are
 * given less to encode, and all finish together.
 */
const DECODE_COST = 0.15;

/**
 * Where each of `k` segments starts, as a fraction of the span: segment i decodes [0, s_i) and then
 * decodes and encodes its share, so shares shrink as starts grow (equal finishing times).
 */
export function segmentStarts(k: number, decodeCost = DECODE_COST): number[] {
  const starts = (time: number): number[] => {
    const s = [0];
    for (let i = 1; i < k; i++) s.push(s[i - 1] + (time - decodeCost * s[i - 1]) / (1 + decodeCost));
    return s;
  };
  // The per-segment time that makes the shares add up to the whole span.
  let low = 0;
  let high = 1 + decodeCost;
  for (let n = 0; n < 50; n++) {
    const mid = (low + high) / 2;
    const s = starts(mid);
    const last = s[k - 1] + (mid - decodeCost * s[k - 1]) / (1 + decodeCost);
    if (last > 1) high = mid;
    else low = mid;
  }
  return starts(low);
}

/** The part of a job's progress that measuring its loudness takes (it decodes the span once more). */
const MEASURE_SHARE = 0.2;

/** Spans shorter than this are encoded by one instance: splitting costs more than it saves. */
export const PARALLEL_MIN_SECONDS = 30;

/** Where seams may fall, in frames (1152 samples at 32–48 kHz, 576 below). */
export const SEAM_RULE: SeamRule = { warmupFrames: 16, searchFrames: 64, tailFrames: 8 };

const IN = '/input';
const OUT = '/output.mp3';
const META = '/metadata.txt';
// Decoders opened on the input (ffmpeg opens them while probing streams, even ones never encoded, such
// as a cover picture or a video track) refuse frames larger than this, whatever dimensions the input
// declares: a 16000×16000 image would otherwise cost ~750 MB to decode. 4096×4096 covers 4K video.
//
// One thread per decoder and filter graph: the core is built without threads (docs/core.md), and
// parallelism comes from instances; the options say so for any core that has them.
const INPUT_LIMITS = ['-max_pixels', String(4096 * 4096), '-threads', '1', '-filter_threads', '1'];
/** Log lines a conversion reads: the probe's summary and its demuxer line (DEBUG), failures, nothing else. */
const PROBE_LINES = String.raw`^(\[[^\]]+\] )?Format .+ probed with|^(Input #|\s+(Duration|Stream #))`;
const ENCODE_LINES = String.raw`^(Conversion failed!|/input: )|: partial file$`;
// The most verbose av_log level each run reads. Below DEBUG is TRACE, where the MOV demuxer writes a
// line per sample-table entry: 46k lines, 0.13 s, for the probe of a 10-minute MP4.
const AV_LOG_INFO = 32;
const AV_LOG_DEBUG = 48;

interface EncodeSpan {
  /** First and one-past-last output sample (relative to the trim start) of this encoding. */
  fromSample: number;
  toSample?: number;
  /** Seconds, when the output rate is unknown and samples cannot be counted. */
  capSeconds?: number;
}

/** Loudness filters for every encoding of a job, and the delay (samples) they add. */
interface Shaping {
  filters: string[];
  delay: number;
}

/** Mono sources stay mono; everything else is folded to stereo (LAME encodes only those). */
const outputChannels = (stream: ProbedStream, options: Mp3Options): 1 | 2 => options.channels ?? (stream.channels === 1 ? 1 : 2);

function buildArgs(stream: ProbedStream, options: Mp3Options, rate: number | undefined, span: EncodeSpan, maxOutputBytes: number, shaping?: Shaping): string[] {
  const args: string[] = [];
  if (options.start !== undefined && options.start > 0) args.push('-ss', String(options.start));
  args.push(...INPUT_LIMITS, '-i', IN, '-map', `0:${stream.index}`, '-vn', '-sn', '-dn');
  if (rate !== undefined) {
    // Shaping filters run on every sample from the trim start, so each segment's are in the same state
    // at its part as one instance's; their delay is cut from the front and flushed at the end.
    const delay = shaping?.delay ?? 0;
    const from = span.fromSample + delay;
    const trim = [from > 0 ? `start_sample=${from}` : '', span.toSample !== undefined ? `end_sample=${span.toSample + delay}` : '']
      .filter(Boolean)
      .join(':');
    const shape = shaping ? [`aformat=channel_layouts=${outputChannels(stream, options) === 1 ? 'mono' : 'stereo'}`, ...shaping.filters] : [];
    args.push('-af', [`aresample=${rate}`, ...shape, ...(trim ? [`atrim=${trim}`] : [])].join(','));
  }
  if (span.capSeconds !== undefined) args.push('-t', String(span.capSeconds));
  args.push('-map_metadata', '-1', '-map_chapters', '-1', '-c:a', 'libmp3lame');
  if (options.bitrate !== undefined) args.push('-b:a', `${options.bitrate}k`);
  else args.push('-q:a', String(options.quality ?? 2));
  if (rate !== undefined) args.push('-ar', String(rate));
  args.push('-ac', String(outputChannels(stream, options)));
  // -fs stops the muxer once the file passes the limit, so an oversized output never fills the disk.
  args.push('-fs', String(maxOutputBytes + 1));
  // No ID3 tag: it is written in front of the frames afterwards (lib/media/id3.ts).
  args.push('-id3v2_version', '0', '-write_xing', '1', '-fflags', '+bitexact', '-f', 'mp3', OUT);
  return args;
}

/** The host files of an encoding: the input, and the MP3 written. */
const encodeFiles = (input: string, output: string): HostFileSpec[] => [
  { wasmPath: IN, hostPath: input, mode: 'read' },
  { wasmPath: OUT, hostPath: output, mode: 'write' },
];

function textTags(tag: Id3Tag): ConvertFileResult['tags'] {
  const { title, artist, album, date } = tag;
  return Object.fromEntries(Object.entries({ title, artist, album, date }).filter(([, v]) => v !== undefined));
}

/** Duration of the MP3 on disk, from its Xing/LAME tag (the first frame, within the first 64 KiB). */
function readMp3Duration(file: string): number {
  const fd = fs.openSync(file, 'r');
  try {
    const head = Buffer.alloc(64 * 1024);
    return measureMp3Duration(head.subarray(0, fs.readSync(fd, head, 0, head.length, 0)));
  } finally {
    fs.closeSync(fd);
  }
}

function removeQuietly(file: string): void {
  fs.rmSync(file, { force: true });
}

/**
 * Converts the host file `input` to the MP3 `output` with the pool's instances. Throws JobFailure
 * for inputs that cannot be converted, InvalidOptions for options that do not fit the input,
 * EncoderCrashError / EncoderTimeoutError when an instance failed. `output` exists only on success.
 */
export async function convertFile(pool: EncoderPool, req: ConvertFileRequest): Promise<ConvertFileResult> {
  const { input, output, options, maxDurationSeconds, maxOutputBytes } = req;
  const inputBytes = fs.statSync(input).size;
  const deadline = req.timeoutMs === undefined ? undefined : performance.now() + req.timeoutMs;
  let lastMemory: EncodeRun['memory'] | undefined;
  // Every run gets what is left of the conversion's time.
  const run = async (task: Omit<EncodeTask, 'timeoutMs'>) => {
    const result = await pool.run({ ...task, timeoutMs: deadline === undefined ? undefined : Math.max(1, deadline - performance.now()) });
    lastMemory = result.memory;
    return result;
  };
  const dir = req.workDir ?? path.dirname(output);
  const base = path.join(dir, `.${path.basename(output)}.${process.pid}.${Date.now().toString(36)}`);
  // The probe also dumps the input's tags and chapters (ffmpeg's FFMETADATA format; no stream is read).
  const metaFile = `${base}.meta.txt`;
  let metadata: InputMetadata;
  let probe: Probe;
  try {
    const probed = await run({
      args: [...INPUT_LIMITS, '-i', IN, '-f', 'ffmetadata', META],
      files: [{ wasmPath: IN, hostPath: input, mode: 'read' }, { wasmPath: META, hostPath: metaFile, mode: 'write' }],
      keep: PROBE_LINES,
      logLevel: AV_LOG_DEBUG,
    });
    probe = parseProbe(probed.lines);
    metadata = readFfmetadata(metaFile);
  } finally {
    removeQuietly(metaFile);
  }
  const stream = chooseAudioStream(probe, inputBytes);
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
  const sourceRate = stream.sampleRate !== undefined && (sampleRates as readonly number[]).includes(stream.sampleRate) ? stream.sampleRate : undefined;
  // Loudness is shaped at a known rate (its limiter's delay is counted in samples): a source at a rate
  // MP3 has not is brought to 48 kHz, as LAME would choose for it, or 44.1 kHz when its rate is unknown.
  const rate = options.sampleRate ?? sourceRate ?? (options.loudness === undefined ? undefined : (stream.sampleRate ?? 0) >= 48000 ? 48000 : 44100);
  const endSample = rate !== undefined && options.end !== undefined ? Math.round((options.end - start) * rate) : undefined;

  const wanted = Math.max(1, Math.min(req.parallelism ?? pool.size, pool.size));
  const singleReason =
    wanted < 2 ? undefined
    : rate === undefined || !canJoin(rate) ? `the output sample rate is ${rate === undefined ? 'unknown' : `${rate} Hz, not an MP3 rate`}`
    : span === undefined ? 'the duration is unknown'
    : span < PARALLEL_MIN_SECONDS ? `the span (${span.toFixed(1)} s) is under ${PARALLEL_MIN_SECONDS} s`
    : undefined;

  const segmentCount = wanted >= 2 && singleReason === undefined ? wanted : 1;
  // Progress: each loudness measurement (a decode of the span) counts for MEASURE_SHARE of the work,
  // the encoding for the rest.
  let measured = 0;
  let measuring = false;
  const progressOf = (done: number[]) => {
    if (!req.onProgress) return;
    const timeSeconds = done.reduce((a, b) => a + b, 0);
    const fraction = span ? Math.min(1, timeSeconds / span) : 0;
    const base = measured * MEASURE_SHARE;
    try {
      req.onProgress({ timeSeconds, percent: 100 * (base + fraction * (measuring ? MEASURE_SHARE : 1 - base)) });
    } catch {
      // Progress is advisory.
    }
  };

  // The user's title, else the input's, else the caller's default.
  const tag: Id3Tag = tagsForSpan(metadata, { title: options.title, startSeconds: start, spanSeconds: span, inputStartSeconds: probe.startSeconds });
  tag.title ??= req.defaultTitle;
  let loudness: LoudnessPlan | undefined;
  let shaping: Shaping | undefined;
  /** Measures the loudness (when asked for) and plans the filters every encoding applies. */
  const shape = async () => {
    if (options.loudness !== undefined) {
      const r = rate!;
      const channels = outputChannels(stream, options);
      const measure = async (shaped?: Shaping) => {
        measuring = true;
        const values = await measureLoudness(run, {
          input: [...(start > 0 ? ['-ss', String(start)] : []), ...INPUT_LIMITS, '-i', IN, '-map', `0:${stream.index}`, '-vn', '-sn', '-dn'],
          files: [{ wasmPath: IN, hostPath: input, mode: 'read' }],
          filters: [`aresample=${r}`, `aformat=channel_layouts=${channels === 1 ? 'mono' : 'stereo'}`, ...(shaped?.filters ?? [])],
          delay: shaped?.delay ?? 0,
          endSample,
          capSeconds: span === undefined ? maxDurationSeconds + 1 : undefined,
          failureLines: ENCODE_LINES,
          onProgress: (t) => progressOf([t]),
        });
        measuring = false;
        measured++;
        if (!values) throw new JobFailure('corrupt');
        return values;
      };
      loudness = planLoudness(options.loudness, await measure());
      shaping = loudnessFilters(loudness, r, channels);
      // The limiter lowers the loudness where it works: measured once more with it, the gain makes up for that.
      if (loudness.limited) {
        loudness = correctLoudness(loudness, await measure(shaping));
        shaping = loudnessFilters(loudness, r, channels);
      }
    }
  };
  // The cover is taken on another instance while the loudness is measured (or one instance encodes).
  const coverFile = `${base}.cover.jpg`;
  const getCover = async () => {
    const found = await extractCover({ input, output: coverFile, option: options.cover, streams: probe.streams, startSeconds: start, spanSeconds: span, inputArgs: INPUT_LIMITS, run });
    if (found) tag.coverJpeg = coverFile;
  };

  const singleFile = `${base}.single.mp3`;
  /** Encodes the span in one instance; the MP3 without its tag, and its duration. */
  const encodeSingle = async (): Promise<number> => {
    const capSeconds = rate === undefined ? (span ?? maxDurationSeconds + 1) : source === undefined ? maxDurationSeconds + 1 : undefined;
    const args = buildArgs(stream, options, rate, { fromSample: 0, toSample: endSample, capSeconds }, maxOutputBytes, shaping);
    const done = [0];
    const result = await run({
      args,
      files: encodeFiles(input, singleFile),
      keep: ENCODE_LINES,
      logLevel: AV_LOG_INFO,
      onProgress: (t) => progressOf([(done[0] = t)]), // output time: 0 at the trim start
    });
    checkRun(result.lines);
    return readMp3Duration(singleFile);
  };

  const covered = getCover();
  covered.catch(() => undefined); // awaited below, and before the files are removed
  try {
    const tagged = async (): Promise<Buffer> => {
      await covered;
      return buildId3Tag(tag);
    };
    await shape();
    let segments = 1;
    let joined: { samples: number; sampleRate: number; seamFrames: number[] } | undefined;
    let singleSeconds = 0;
    if (segmentCount >= 2) {
      try {
        joined = await encodeParallel(segmentCount, tagged);
        segments = segmentCount;
      } catch (error) {
        if (!(error instanceof SeamError)) throw error;
        singleSeconds = await encodeSingle();
      }
    } else {
      singleSeconds = await encodeSingle();
    }
    if (!joined) {
      const id3 = await tagged();
      if (id3.length > 0) prependTag(id3, singleFile, output);
      else fs.renameSync(singleFile, output);
    }
    const bytes = fs.statSync(output).size;
    if (bytes > maxOutputBytes) throw new JobFailure('output-too-large', { limit: maxOutputBytes });
    const durationSeconds = joined ? joined.samples / joined.sampleRate : singleSeconds;
    if (durationSeconds === 0) throw new JobFailure('corrupt');
    if (source === undefined && durationSeconds > maxDurationSeconds) throw new JobFailure('too-long', { limit: maxDurationSeconds });
    // A frame's samples come out of the decoder delayed by the encoder delay (576) plus the decoder's 529.
    const seamSeconds = (joined?.seamFrames ?? []).map((f) => (f * samplesPerFrame(joined!.sampleRate) - 1105) / joined!.sampleRate);
    const samples = joined?.samples ?? (rate === undefined ? undefined : Math.round(durationSeconds * rate));
    return { durationSeconds, bytes, samples, sampleRate: rate, memory: lastMemory!, segments, seamSeconds, singleReason: segments === 1 ? singleReason : undefined, loudness, cover: tag.coverJpeg !== undefined, chapters: tag.chapters?.length ?? 0, tags: textTags(tag) };
  } catch (error) {
    removeQuietly(output);
    throw error;
  } finally {
    await covered.catch(() => undefined);
    removeQuietly(coverFile);
    removeQuietly(singleFile);
  }

  async function encodeParallel(k: number, tagged: () => Promise<Buffer>): Promise<{ samples: number; sampleRate: number; seamFrames: number[] }> {
    const r = rate!;
    const frameSamples = samplesPerFrame(r);
    const totalFrames = Math.floor((endSample ?? Math.round(span! * r)) / frameSamples);
    const { warmupFrames, searchFrames, tailFrames } = SEAM_RULE;
    // Segment i starts warm-up frames before its share; all but the last run past the next seam window.
    const startFrames = segmentStarts(k).map((share, i) => (i === 0 ? 0 : Math.max(0, Math.round(share * totalFrames) - warmupFrames)));
    const files = startFrames.map((_, i) => `${base}.seg${i}.mp3`);
    const done = startFrames.map(() => 0);
    try {
      const runs = startFrames.map((from, i) => {
        const to = i === k - 1 ? endSample : (startFrames[i + 1] + warmupFrames + searchFrames + tailFrames + 2) * frameSamples;
        const args = buildArgs(stream, options, r, { fromSample: from * frameSamples, toSample: to }, maxOutputBytes, shaping);
        const fromSeconds = (from * frameSamples) / r;
        return run({
          args,
          files: encodeFiles(input, files[i]),
          keep: ENCODE_LINES,
          logLevel: AV_LOG_INFO,
          onProgress: (t) => {
            // Output time counts from the trim start: a segment's own part begins at fromSeconds.
            done[i] = Math.max(0, t - fromSeconds);
            progressOf(done);
          },
        });
      });
      const results = await Promise.allSettled(runs);
      const failed = results.find((x): x is PromiseRejectedResult => x.status === 'rejected');
      if (failed) throw failed.reason;
      for (const x of results) checkRun((x as PromiseFulfilledResult<{ lines: string[] }>).value.lines);
      const segments = files.map((file, i) => {
        try {
          return { path: file, layout: scanMp3(file), startFrame: startFrames[i] };
        } catch (error) {
          // E.g. the audio ends before the container does, and a segment got no audio at all.
          throw new SeamError(`Segment ${i} is not an MP3 that can be joined.`, { cause: error });
        }
      });
      return joinMp3Segments(segments, output, SEAM_RULE, await tagged());
    } finally {
      for (const file of files) removeQuietly(file);
    }
  }
}

/** A read error on the input (not EOF) would otherwise give a silently short MP3. */
function checkRun(lines: string[]): void {
  if (lines.length > 0) throw new JobFailure('corrupt');
}
