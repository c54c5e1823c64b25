// Parallel segment encoding against one instance, on 40 s clips generated here with native ffmpeg (CI
// installs it) in every container/codec of the fixture matrix. A parallel MP3 must decode to exactly the
// samples of a single-instance one, report the same duration, carry a Xing frame count equal to its
// frames, match the single-instance PCM around every seam (error power ≤ −60 dB) and seek correctly.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { convertFile, PARALLEL_MIN_SECONDS, segmentStarts, type ConvertFileResult } from '../lib/media/convert-file';
import type { Mp3Options as ConvertOptions } from '../lib/media/options';
import { createEncoderPool } from '../lib/media/encoder-pool';
import { joinMp3Segments, samplesPerFrame, scanMp3 } from '../lib/media/mp3-join';
import { parseProbe } from '../lib/media/probe';

const SECONDS = 40;
const pool = createEncoderPool({ size: 2 });
let dir: string;

beforeAll(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'media-parallel-'));
  await pool.ready();
});
afterAll(async () => {
  await pool.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

const tone = (rate: number, freq = 440) => `sine=frequency=${freq}:beep_factor=4:sample_rate=${rate}:duration=${SECONDS}`;
const video = `testsrc2=size=32x32:rate=5:duration=${SECONDS}`;
const X264 = ['-c:v', 'libx264', '-preset', 'ultrafast', '-crf', '40', '-pix_fmt', 'yuv420p'];

/** The fixture matrix's containers and codecs (test/fixtures/make-fixtures.sh), 40 s long. */
const formats: { name: string; file: string; args: string[] }[] = [
  { name: 'mp4', file: 'h264-aac.mp4', args: ['-f', 'lavfi', '-i', video, '-f', 'lavfi', '-i', tone(44100), ...X264, '-c:a', 'aac', '-b:a', '48k', '-ac', '2', '-movflags', '+faststart'] },
  { name: 'mov', file: 'h264-pcm.mov', args: ['-f', 'lavfi', '-i', video, '-f', 'lavfi', '-i', tone(16000), ...X264, '-c:a', 'pcm_s16le', '-ac', '1'] },
  { name: 'mkv', file: 'vp9-opus.mkv', args: ['-f', 'lavfi', '-i', video, '-f', 'lavfi', '-i', tone(48000), '-c:v', 'libvpx-vp9', '-b:v', '20k', '-deadline', 'realtime', '-cpu-used', '8', '-c:a', 'libopus', '-b:a', '24k', '-ac', '2'] },
  { name: 'webm', file: 'vp8-vorbis.webm', args: ['-f', 'lavfi', '-i', video, '-f', 'lavfi', '-i', tone(44100), '-c:v', 'libvpx', '-b:v', '20k', '-deadline', 'realtime', '-cpu-used', '8', '-c:a', 'libvorbis', '-q:a', '0', '-ac', '2'] },
  { name: 'avi', file: 'mpeg4-mp3.avi', args: ['-f', 'lavfi', '-i', video, '-f', 'lavfi', '-i', tone(44100), '-c:v', 'mpeg4', '-q:v', '20', '-c:a', 'libmp3lame', '-b:a', '32k', '-ac', '2'] },
  { name: 'flv', file: 'h264-aac.flv', args: ['-f', 'lavfi', '-i', video, '-f', 'lavfi', '-i', tone(44100), ...X264, '-c:a', 'aac', '-b:a', '48k', '-ac', '2'] },
  { name: 'mpegts', file: 'h264-ac3.mpegts', args: ['-f', 'lavfi', '-i', video, '-f', 'lavfi', '-i', tone(48000), ...X264, '-c:a', 'ac3', '-b:a', '64k', '-ac', '2', '-f', 'mpegts'] },
  { name: 'mp4-moov-at-end', file: 'moov-at-end.mp4', args: ['-f', 'lavfi', '-i', video, '-f', 'lavfi', '-i', tone(44100), ...X264, '-c:a', 'aac', '-b:a', '48k', '-ac', '2'] },
  {
    name: 'multi-audio', file: 'two-audio-tracks.mkv',
    args: ['-f', 'lavfi', '-i', video, '-f', 'lavfi', '-i', tone(44100), '-f', 'lavfi', '-i', tone(44100, 880), '-map', '0:v', '-map', '1:a', '-map', '2:a', ...X264,
      '-c:a', 'aac', '-b:a', '48k', '-ac:a:0', '1', '-ac:a:1', '2', '-disposition:a:0', '0', '-disposition:a:1', 'default'],
  },
  { name: 'surround-5.1', file: 'surround-5.1.mp4', args: ['-f', 'lavfi', '-i', video, '-f', 'lavfi', '-i', tone(44100), ...X264, '-c:a', 'aac', '-b:a', '96k', '-ac', '6', '-channel_layout', '5.1'] },
];

const made = new Map<string, string>();
function clip(name: string): string {
  const format = formats.find((f) => f.name === name)!;
  let file = made.get(name);
  if (!file) {
    file = path.join(dir, `long-${format.file}`);
    execFileSync('ffmpeg', ['-hide_banner', '-loglevel', 'error', '-y', ...format.args, file]);
    made.set(name, file);
  }
  return file;
}

function decode(file: string, extra: string[] = []): { pcm: Float32Array; channels: number; rate: number } {
  const probe = execFileSync('ffprobe', ['-v', 'error', '-select_streams', 'a:0', '-show_entries', 'stream=channels,sample_rate', '-of', 'csv=p=0', file]).toString().trim();
  const [rate, channels] = probe.split(',').map(Number);
  const raw = execFileSync('ffmpeg', ['-v', 'error', ...extra, '-i', file, '-f', 'f32le', '-'], { maxBuffer: 256 * 1024 * 1024 });
  const copy = new Uint8Array(raw).buffer;
  return { pcm: new Float32Array(copy), channels, rate };
}

function ffprobeDuration(file: string): number {
  return Number(execFileSync('ffprobe', ['-v', 'error', '-show_entries', 'format=duration', '-of', 'csv=p=0', file]).toString());
}

/** Error power of `b` against `a` over samples [from, to) (interleaved frames), in dB. */
function errorDb(a: Float32Array, b: Float32Array, channels: number, from: number, to: number): number {
  let error = 0;
  let signal = 0;
  for (let i = Math.max(0, from) * channels; i < Math.min(to * channels, a.length, b.length); i++) {
    error += (a[i] - b[i]) ** 2;
    signal += a[i] ** 2;
  }
  return 10 * Math.log10(error / signal + 1e-30);
}

/** Where (seconds) `ffmpeg -ss target` lands in `file`: its output found in the file's full decode. */
function landing(file: string, full: { pcm: Float32Array; channels: number; rate: number }, target: number): number {
  const { pcm, channels, rate } = full;
  const snippet = decode(file, ['-ss', String(target), '-t', '0.5']).pcm;
  const skip = Math.round(rate / 10); // the first frames after a seek lack their bit reservoir and overlap
  const length = Math.round(rate / 20);
  let best = Number.NaN;
  let bestError = Infinity;
  for (let offset = Math.round((target - 1) * rate); offset <= Math.round((target + 1) * rate); offset++) {
    let error = 0;
    for (let i = 0; i < length && error < bestError; i++) error += (pcm[(offset + skip + i) * channels] - snippet[(skip + i) * channels]) ** 2;
    if (error < bestError) {
      bestError = error;
      best = offset;
    }
  }
  return best / rate;
}

function xingToc(file: string): number[] {
  const layout = scanMp3(file);
  const bytes = fs.readFileSync(file);
  const at = layout.tag!.offset + layout.tag!.xingOffset + 16;
  return [...bytes.subarray(at, at + 100)];
}

async function convertBoth(input: string, options: ConvertOptions, name: string) {
  const request = { input, options, maxDurationSeconds: 3600, maxOutputBytes: 64 * 1024 * 1024, workDir: dir };
  const single = await convertFile(pool, { ...request, output: path.join(dir, `${name}-single.mp3`), parallelism: 1 });
  const parallel = await convertFile(pool, { ...request, output: path.join(dir, `${name}-parallel.mp3`), parallelism: 2 });
  return { single, parallel, singleFile: path.join(dir, `${name}-single.mp3`), parallelFile: path.join(dir, `${name}-parallel.mp3`) };
}

function expectSameAsSingle(c: { single: ConvertFileResult; parallel: ConvertFileResult; singleFile: string; parallelFile: string }): void {
  expect(c.parallel.segments).toBe(2);
  expect(c.parallel.seamSeconds).toHaveLength(1);
  const a = decode(c.singleFile);
  const b = decode(c.parallelFile);
  // Exactly the same number of samples, and what the Xing/LAME tag says.
  expect(b.pcm.length).toBe(a.pcm.length);
  expect(b.pcm.length / b.channels).toBe(c.parallel.samples);
  expect(c.parallel.durationSeconds).toBe(c.single.durationSeconds);
  // ffprobe's duration within one frame.
  expect(Math.abs(ffprobeDuration(c.parallelFile) - ffprobeDuration(c.singleFile))).toBeLessThanOrEqual(samplesPerFrame(b.rate) / b.rate);
  // The Xing frame count is the number of frames in the file.
  const layout = scanMp3(c.parallelFile);
  const tagFrames = fs.readFileSync(c.parallelFile).readUInt32BE(layout.tag!.offset + layout.tag!.xingOffset + 8);
  expect(tagFrames).toBe(layout.frameOffsets.length - 1);
  // Around each seam (±0.5 s) the PCM matches the single-instance decode.
  for (const seam of c.parallel.seamSeconds) {
    const at = Math.round(seam * b.rate);
    expect(errorDb(a.pcm, b.pcm, b.channels, at - b.rate / 2, at + b.rate / 2)).toBeLessThanOrEqual(-60);
  }
  // Seeking into the second half lands where it should: where it lands in the single-instance MP3
  // (an MP3 has no timestamps, so a player seeks by the Xing TOC and lands near, not on, the target).
  const target = (c.single.durationSeconds * 3) / 4;
  const landedA = landing(c.singleFile, a, target);
  const landedB = landing(c.parallelFile, b, target);
  expect(Math.abs(landedB - target)).toBeLessThanOrEqual(Math.abs(landedA - target) + (2 * samplesPerFrame(b.rate)) / b.rate);
  expect(Math.abs(landedB - target)).toBeLessThan(0.5);
  const tocA = xingToc(c.singleFile);
  xingToc(c.parallelFile).forEach((v, i) => expect(Math.abs(v - tocA[i])).toBeLessThanOrEqual(3));
}

describe('parallel segment encoding', () => {
  describe.each(formats)('when a 40 s $name clip is converted by two instances', ({ name }) => {
    it('then the MP3 is the single-instance MP3: same samples, duration, frame count, seam PCM and seeking', async () => {
      expectSameAsSingle(await convertBoth(clip(name), {}, name));
    });
  });

  it('when the source is 16 kHz PCM (mov) and 44.1 kHz output is asked for, then it is encoded in parallel like the others', async () => {
    expectSameAsSingle(await convertBoth(clip('mov'), { sampleRate: 44100 }, 'mov-44k'));
  });

  it('when the source is 96 kHz (no MP3 rate) and no sample rate is asked for, then one instance encodes it, as the stated rule says', async () => {
    const file = path.join(dir, 'hi-res.mkv');
    execFileSync('ffmpeg', ['-hide_banner', '-loglevel', 'error', '-y', '-f', 'lavfi', '-i', tone(96000), '-c:a', 'flac', file]);
    const c = await convertBoth(file, {}, 'hi-res');
    expect(c.parallel.segments).toBe(1);
    expect(c.parallel.singleReason).toMatch(/sample rate is unknown/);
    expect(Math.abs(c.parallel.durationSeconds - SECONDS)).toBeLessThan(0.1);
  });

  it.each<[string, ConvertOptions]>([
    ['CBR 128 kbps', { bitrate: 128 }],
    ['CBR 320 kbps', { bitrate: 320 }],
    ['VBR quality 0', { quality: 0 }],
    ['mono', { channels: 1 }],
    ['22.05 kHz (MPEG-2 Layer III)', { sampleRate: 22050 }],
    ['22.05 kHz mono CBR 64', { sampleRate: 22050, channels: 1, bitrate: 64 }],
    ['8 kHz (MPEG-2.5 Layer III)', { sampleRate: 8000 }],
    ['44.1 kHz', { sampleRate: 44100 }],
    ['48 kHz', { sampleRate: 48000 }],
    ['a trimmed span', { start: 3.3, end: 37.9 }],
    ['a title', { title: 'Seams' }],
    ['loudness podcast', { loudness: 'podcast' }],
    ['loudness -5 LUFS (the limiter works throughout)', { loudness: -5 }],
    ['loudness broadcast on a trimmed span', { loudness: 'broadcast', start: 3.3, end: 37.9 }],
  ])('when the options are %s, then the parallel MP3 is the single-instance MP3', async (label, options) => {
    const c = await convertBoth(clip('mp4'), options, `mp4-${label.replace(/\W+/g, '-')}`);
    expectSameAsSingle(c);
    if (options.sampleRate) expect(c.parallel.sampleRate).toBe(options.sampleRate);
    if (options.start !== undefined) expect(Math.abs(c.parallel.durationSeconds - (options.end! - options.start))).toBeLessThan(1 / 44100);
    if (options.loudness !== undefined) expect(c.parallel.loudness).toEqual(c.single.loudness);
    if (options.loudness === -5) expect(c.parallel.loudness?.limited).toBe(true);
  }, 180_000); // loudness measures each span (twice when limited) before encoding it

  it('when the audio ends long before the video, then the MP3 is as long as the audio, whichever way it was encoded', async () => {
    const file = path.join(dir, 'short-audio.mp4');
    execFileSync('ffmpeg', ['-hide_banner', '-loglevel', 'error', '-y', '-f', 'lavfi', '-i', video, '-f', 'lavfi', '-i', `sine=frequency=440:sample_rate=44100:duration=12`, ...X264, '-c:a', 'aac', '-b:a', '48k', file]);
    const c = await convertBoth(file, {}, 'short-audio');
    expect(Math.abs(c.single.durationSeconds - 12)).toBeLessThan(0.1);
    expect(c.parallel.samples).toBe(c.single.samples);
  });

  it(`when the span is under ${PARALLEL_MIN_SECONDS} s, then one instance encodes it`, async () => {
    const c = await convertBoth(clip('mp4'), { start: 5, end: 30 }, 'mp4-short');
    expect(c.parallel.segments).toBe(1);
    expect(c.parallel.singleReason).toMatch(/under 30 s/);
    expect(c.parallel.samples).toBe(c.single.samples);
    expect(Math.abs(c.parallel.durationSeconds - 25)).toBeLessThanOrEqual(samplesPerFrame(44100) / 44100);
  });

  it('when conversions are done or failed, then no segment file is left behind', async () => {
    const leftovers = () => fs.readdirSync(dir).filter((f) => f.includes('.seg'));
    await convertFile(pool, { input: clip('mp4'), output: path.join(dir, 'clean.mp3'), options: {}, maxDurationSeconds: 3600, maxOutputBytes: 1e8, workDir: dir });
    expect(leftovers()).toEqual([]);
    const failed = await convertFile(pool, { input: clip('mp4'), output: path.join(dir, 'tiny.mp3'), options: {}, maxDurationSeconds: 3600, maxOutputBytes: 1000, workDir: dir }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect((failed as { reason?: string }).reason).toBe('output-too-large');
    expect(leftovers()).toEqual([]);
    expect(fs.existsSync(path.join(dir, 'tiny.mp3'))).toBe(false);
  });
});

describe('the log of a run', () => {
  const AV_LOG_INFO = 32;
  const AV_LOG_DEBUG = 48;
  const AV_LOG_TRACE = 56;

  it('when a 40 s MP4 with video is encoded at INFO, then ffmpeg hands over only INFO lines and above, not a trace line per packet', async () => {
    const input = clip('mp4');
    const output = path.join(dir, 'log.mp3');
    const files = [{ wasmPath: '/input', hostPath: input, mode: 'read' as const }, { wasmPath: '/output.mp3', hostPath: output, mode: 'write' as const }];
    const args = ['-threads', '1', '-filter_threads', '1', '-i', '/input', '-map', '0:a:0', '-vn', '-c:a', 'libmp3lame', '-f', 'mp3', '/output.mp3'];
    const full = await pool.run({ args, files, keep: String.raw`^Stream #|^\s+Stream #`, logLevel: AV_LOG_TRACE });
    const filtered = await pool.run({ args, files, keep: String.raw`^size=`, logLevel: AV_LOG_INFO });
    expect(full.logLines).toBeGreaterThan(2000); // the mov demuxer's trace lines, one per packet
    expect(filtered.logLines).toBeLessThan(200);
    expect(filtered.lines.length).toBeGreaterThan(0); // progress still arrives
    expect(filtered.exitCode).toBe(0);
    expect(fs.statSync(output).size).toBeGreaterThan(0);
  });

  it('when an MP4 is probed at DEBUG, then the demuxer and streams are read as from every line, with a fraction of the lines', async () => {
    const files = [{ wasmPath: '/input', hostPath: clip('mp4'), mode: 'read' as const }];
    const args = ['-threads', '1', '-filter_threads', '1', '-i', '/input'];
    const keep = String.raw`^(\[[^\]]+\] )?Format .+ probed with|^(Input #|\s+(Duration|Stream #))`;
    const full = await pool.run({ args, files, keep, logLevel: AV_LOG_TRACE });
    const debug = await pool.run({ args, files, keep, logLevel: AV_LOG_DEBUG });
    expect(debug.logLines).toBeLessThan(full.logLines / 5);
    expect(parseProbe(debug.lines)).toEqual(parseProbe(full.lines));
    expect(parseProbe(debug.lines)).toMatchObject({ detectedFormat: 'mov,mp4,m4a,3gp,3g2,mj2', opened: true });
  });
});

describe('the Xing/LAME tag rewrite', () => {
  it.each([
    [44100, 2, ['-q:a', '2']],
    [48000, 1, ['-b:a', '128k']],
    [32000, 2, ['-b:a', '320k']],
    [22050, 2, ['-q:a', '4']],
    [16000, 1, ['-b:a', '32k']],
    [8000, 1, ['-q:a', '6']],
  ])('when an MP3 at %i Hz, %i channel(s) is "joined" alone, then its bytes are unchanged: the tag is rewritten exactly as ffmpeg writes it', (rate, channels, lame) => {
    const file = path.join(dir, `alone-${rate}-${channels}.mp3`);
    execFileSync('ffmpeg', ['-hide_banner', '-loglevel', 'error', '-y', '-f', 'lavfi', '-i', tone(44100), '-t', '20', '-ar', String(rate), '-ac', String(channels), '-c:a', 'libmp3lame', ...lame, file]);
    const out = path.join(dir, `alone-${rate}-${channels}-joined.mp3`);
    const result = joinMp3Segments([{ path: file, layout: scanMp3(file), startFrame: 0 }], out, { warmupFrames: 0, searchFrames: 0, tailFrames: 0 });
    expect(fs.readFileSync(out).equals(fs.readFileSync(file))).toBe(true);
    expect(result.samples).toBe(decode(file).pcm.length / channels);
  });
});

describe('the split into segments', () => {
  it.each([2, 3, 4])('when %i segments each decode from the start, then later ones encode less and all take the same time', (k) => {
    const decodeCost = 0.15;
    const starts = segmentStarts(k, decodeCost);
    const ends = [...starts.slice(1), 1];
    const times = starts.map((s, i) => decodeCost * s + (1 + decodeCost) * (ends[i] - s));
    for (const t of times) expect(t).toBeCloseTo(times[0], 6);
    expect(starts[0]).toBe(0);
    expect(segmentStarts(k, 0)).toEqual(Array.from({ length: k }, (_, i) => expect.closeTo(i / k, 6)));
  });
});

describe("the instances' threads", () => {
  it('when both threads have probed, encoded and joined every clip above, then each new run starts in a fresh instance at the core\'s initial memory', async () => {
    // A run gets its own instance of the compiled core (lib/media/ffmpeg-core.ts): the heap a long encode grew
    // is not carried into the next job. A probe stays within the initial 32 MiB. Two runs at once take
    // both threads.
    const probe = { args: ['-i', '/input'], files: [{ wasmPath: '/input', hostPath: clip('mp4'), mode: 'read' as const }], keep: 'x' };
    const runs = await Promise.all([pool.run(probe), pool.run(probe)]);
    expect(runs.map((r) => r.memory.wasmMemoryBytes)).toEqual([32 * 1024 * 1024, 32 * 1024 * 1024]);
  });
});
