// `npm run bench`: the conversion against native ffmpeg on 10 s, 2 min and 10 min 720p clips (made at
// start with native ffmpeg), with the same LAME options. Cases, run interleaved (one of each per
// round, BENCH_ROUNDS rounds, default 5) so that a noisy neighbour hits them alike:
// - native: /usr/bin/ffmpeg, file to file, a fresh process per run;
// - one instance: lib/media/transcode with parallelism 1, file to file;
// - parallel: lib/media/transcode with one instance per available core (segments joined);
// - parallel with loudness=podcast: the same, plus measuring the span (twice when the limiter works)
//   and applying the gain; printed against the plain parallel conversion;
// - function path: what convert does per event — the video read where the directory store keeps it
//   (with BENCH_MONGODB_URI, streamed from GridFS to a file), the parallel conversion, the MP3 streamed
//   back to the store.
// Readiness = a fresh process (the built converter, bench/child.ts, run with the image's node flags and
// environment: bench/image.ts) from before loading the converter until its instances are compiled and
// warmed (transcoder.ready()), the median of three; each of those processes then converts the 2 min
// clip once, its first job, printed against the warm median. The large part's processes run the same way.
// Before them, bench/machine.ts measures what the figures depend on (node start, page faults, two
// native runs side by side), printed under the table.
// Batch: BENCH_BATCH (default 8) 2 min jobs at once, after the inputs are on disk: native as
// `xargs -P<cores>` runs them (cores processes at a time), wasm through the converter's transcoder
// (all submitted at once; its instances take them in turn), interleaved, BENCH_BATCH_ROUNDS (default 3).
// The core's size, build and licence line (vendor/ffmpeg-core/build.json) are printed with the table.
// BENCH_INPUTS=10s,120s limits the clips.
// BENCH_LARGE=1 adds the large-input part: ~200 MB and ~2 GB MP4s (the 2 min clip repeated, remuxed)
// and a ~2 GB minute of raw 720p in Matroska, each converted once in a fresh process (the built
// converter, bench/child.ts), with that process's peak RSS against native ffmpeg's.
// (`npm run bench -- --large` runs the large-upload benchmark, bench/large-upload.ts, instead: bench/index.ts.)
import fs from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { createDirectoryStore, createGridFsStore, type BlobStore } from '../lib/storage/blobs';
import type { Mp3Options, Transcoder } from '../lib/media/transcode';
import { videoFile } from '../lib/pipeline/conversion';
import * as esbuild from 'esbuild';
import { makeVideo } from './large-upload';
import { imageRuntime } from './image';
import { describeMachine } from './machine';
import { median, run } from './run';

const NATIVE_FFMPEG = process.env.FFMPEG ?? '/usr/bin/ffmpeg';
const OPTIONS: Mp3Options = { quality: 2 };
const NATIVE_LAME_ARGS = ['-c:a', 'libmp3lame', '-q:a', '2', '-ac', '2'];
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 5);
const LIMITS = { maxDurationSeconds: 4 * 3600, maxOutputBytes: 1024 * 1024 * 1024 };
const BATCH = Number(process.env.BENCH_BATCH ?? 8);
const BATCH_ROUNDS = Number(process.env.BENCH_BATCH_ROUNDS ?? 3);

interface BenchInput {
  name: string;
  seconds: number;
  file: string;
}

interface Case {
  name: string;
  run(input: BenchInput, out: string): Promise<{ segments?: number }>;
}

function makeInput(dir: string, seconds: number): Promise<string> {
  const file = path.join(dir, `${seconds}s-720p.mp4`);
  return run(NATIVE_FFMPEG, [
    '-hide_banner', '-loglevel', 'error', '-y',
    '-f', 'lavfi', '-i', `testsrc2=size=1280x720:rate=30:duration=${seconds}`,
    '-f', 'lavfi', '-i', `sine=frequency=440:beep_factor=4:sample_rate=48000:duration=${seconds}`,
    '-c:v', 'libx264', '-preset', 'ultrafast', '-crf', '30', '-pix_fmt', 'yuv420p',
    '-c:a', 'aac', '-b:a', '128k', '-ac', '2', '-movflags', '+faststart', file,
  ]).then(() => file);
}

const round = (value: number, digits: number): number => Math.round(value * 10 ** digits) / 10 ** digits;

function nativeCase(): Case {
  return {
    name: 'native ffmpeg CLI',
    async run(input, out) {
      await run(NATIVE_FFMPEG, ['-hide_banner', '-nostdin', '-y', '-i', input.file, '-map', '0:a:0', '-vn', '-map_metadata', '-1', ...NATIVE_LAME_ARGS, '-f', 'mp3', out]);
      return {};
    },
  };
}

function wasmCase(name: string, transcoder: Transcoder, options: Mp3Options = OPTIONS): Case {
  return {
    name,
    async run(input, out) {
      const result = await transcoder.transcode(input.file, out, options);
      return { segments: result.segments };
    },
  };
}

function functionPathCase(transcoder: Transcoder, store: BlobStore): Case {
  const videoIds = new Map<string, string>();
  return {
    name: `function path (${process.env.BENCH_MONGODB_URI ? 'GridFS' : 'directory store'})`,
    async run(input, out) {
      let videoId = videoIds.get(input.name);
      if (!videoId) {
        videoId = (await store.put('videos', fs.createReadStream(input.file), { owner: 'bench', filename: 'in.mp4', contentType: 'video/mp4' })).id;
        videoIds.set(input.name, videoId);
      }
      const local = path.join(transcoder.workDir, 'bench.video');
      const result = await transcoder.transcode(await videoFile(store, videoId, local), out, OPTIONS);
      const stored = await store.put('mp3s', fs.createReadStream(out), { owner: 'bench', filename: 'out.mp3', contentType: 'audio/mpeg' });
      fs.rmSync(local, { force: true });
      await store.delete('mp3s', stored.id);
      return { segments: result.segments };
    },
  };
}

async function largePart(dir: string, clip: string): Promise<void> {
  console.log('\nLarge inputs (BENCH_LARGE=1): one conversion each, in a fresh process.');
  const clipBytes = fs.statSync(clip).size;
  // Looping the clip makes size and duration grow together; the raw video has the 2 GB file's size
  // and a minute's duration, which tells the two apart (an MP4's index grows with its packets).
  const inputs: { file: string; minutes: number; make: (file: string) => Promise<unknown> }[] = [200e6, 2.1e9].map((targetBytes) => {
    const loops = Math.max(0, Math.ceil(targetBytes / clipBytes) - 1);
    return {
      file: path.join(dir, `large-${Math.round(targetBytes / 1e6)}MB.mp4`),
      minutes: Math.round(((loops + 1) * 120) / 60),
      make: (file) => run(NATIVE_FFMPEG, ['-hide_banner', '-loglevel', 'error', '-y', '-stream_loop', String(loops), '-i', clip, '-c', 'copy', file]),
    };
  });
  inputs.push({ file: path.join(dir, 'large-raw.mkv'), minutes: 1, make: async (file) => makeVideo(file, 62) });
  for (const { file, minutes, make } of inputs) {
    await make(file);
    const output = await runChild('--convert-large', file);
    const wasm = JSON.parse(output.trim().split('\n').at(-1)!) as { ms: number; maxRssMB: number; segments: number };
    const started = performance.now();
    const native = await run(NATIVE_FFMPEG, ['-hide_banner', '-nostdin', '-y', '-benchmark', '-i', file, '-map', '0:a:0', '-vn', ...NATIVE_LAME_ARGS, '-f', 'mp3', `${file}.mp3`]);
    const nativeMs = performance.now() - started;
    const nativeRss = Number(/maxrss=(\d+)kB/.exec(native)?.[1] ?? 0) / 1024;
    console.log(
      `  ${(fs.statSync(file).size / 1e9).toFixed(2)} GB ${path.extname(file).slice(1)} (${minutes} min): wasm ${(wasm.ms / 1000).toFixed(1)} s, ` +
        `peak RSS ${Math.round(wasm.maxRssMB)} MB (${wasm.segments} segments); native ${(nativeMs / 1000).toFixed(1)} s, peak RSS ${Math.round(nativeRss)} MB; ` +
        `${round(wasm.ms / nativeMs, 2)}× native`,
    );
    fs.rmSync(file, { force: true });
    fs.rmSync(`${file}.mp3`, { force: true });
  }
}

/** Runs `jobs` with at most `width` at a time, as `xargs -P<width>` does. */
async function withWidth(jobs: (() => Promise<unknown>)[], width: number): Promise<void> {
  const queue = [...jobs];
  await Promise.all(Array.from({ length: width }, async () => {
    for (let job = queue.shift(); job; job = queue.shift()) await job();
  }));
}

/**
 * BATCH jobs of the clip at once, interleaved rounds: native ffmpeg `cores` at a time; the converter's
 * transcoder (jobs in turn, each in parallel segments on every instance, as one convert process runs
 * them); and `cores` one-instance transcoders taking jobs in turn (as that many one-core pods would).
 */
async function batchPart(clip: BenchInput, parallel: Transcoder, singles: Transcoder[], dir: string): Promise<void> {
  const cores = singles.length;
  const out = (i: number) => path.join(dir, `batch-${i}.mp3`);
  const jobs = (convert: (i: number) => Promise<unknown>) => Array.from({ length: BATCH }, (_, i) => () => convert(i));
  const variants: [string, () => Promise<unknown>][] = [
    [`native ffmpeg CLI, xargs -P${cores}`, () => withWidth(jobs((i) => run(NATIVE_FFMPEG, ['-hide_banner', '-nostdin', '-y', '-i', clip.file, '-map', '0:a:0', '-vn', '-map_metadata', '-1', ...NATIVE_LAME_ARGS, '-f', 'mp3', out(i)])), cores)],
    [`wasm, one transcoder of ${cores} instances`, () => Promise.all(jobs((i) => parallel.transcode(clip.file, out(i), OPTIONS)).map((job) => job()))],
    [`wasm, ${cores} one-instance transcoders`, () => Promise.all(jobs((i) => singles[i % cores].transcode(clip.file, out(i), OPTIONS)).map((job) => job()))],
  ];
  const times = new Map<string, number[]>();
  for (const [, batch] of variants.slice(1)) await batch(); // untimed: every instance warm on this clip
  for (let r = 0; r < BATCH_ROUNDS; r++) {
    for (const [name, batch] of variants) {
      const started = performance.now();
      await batch();
      times.set(name, [...(times.get(name) ?? []), performance.now() - started]);
    }
  }
  const native = median(times.get(variants[0][0])!);
  console.log(`Batch: ${BATCH} jobs of the ${clip.name} clip submitted at once (inputs on disk), median of ${BATCH_ROUNDS} interleaved rounds:`);
  for (const [name] of variants) {
    const m = median(times.get(name)!);
    console.log(`  ${name.padEnd(40)} ${(m / 1000).toFixed(2).padStart(6)} s  ${((BATCH * clip.seconds) / (m / 1000)).toFixed(0).padStart(4)} s of audio per s  ${round(m / native, 2)}× native`);
    console.log(JSON.stringify({ bench: 'batch', jobs: BATCH, input: clip.name, case: name, medianMs: Math.round(m), ratioToNative: round(m / native, 2) }));
  }
}

/** The core's line: what it is, its size and its licence (vendor/ffmpeg-core/build.json). */
function coreLine(): string {
  const dir = path.resolve(__dirname, '../vendor/ffmpeg-core');
  const info = JSON.parse(fs.readFileSync(path.join(dir, 'build.json'), 'utf8')) as { ffmpeg: string; lame: string; emscripten: string; license: string; wasmBytes: number };
  const glue = fs.statSync(path.join(dir, 'ffmpeg-core.js')).size;
  return `Core: vendor/ffmpeg-core, ffmpeg ${info.ffmpeg} + LAME ${info.lame} (Debian sources, emscripten ${info.emscripten}), ` +
    `${(info.wasmBytes / 1e6).toFixed(2)} MB wasm + ${(glue / 1e3).toFixed(0)} kB glue; licence: ${info.license}.`;
}

let childBuild: Promise<string> | undefined;

/**
 * bench/child.ts bundled beside the built converter (npm run build first, done here), so its fresh
 * processes run the converter as deployed: plain node, the bundled worker (see bench/child.ts).
 */
function childBundle(): Promise<string> {
  childBuild ??= (async () => {
    const root = path.resolve(__dirname, '..');
    await run(process.execPath, [path.join(root, 'build.mjs')]);
    const outfile = path.join(root, 'dist/convert/bench-child.js');
    await esbuild.build({ entryPoints: [path.join(__dirname, 'child.ts')], bundle: true, platform: 'node', format: 'cjs', target: 'node20', outfile, logLevel: 'error' });
    return outfile;
  })();
  return childBuild;
}

/** The child, run as the image runs convert (its node flags and environment, bench/image.ts). */
async function runChild(...args: string[]): Promise<string> {
  const { flags, env } = imageRuntime();
  return run(process.execPath, [...flags, await childBundle(), ...args], env);
}

/**
 * Readiness of a fresh converter with `parallelism` instances, and the time of its first job on `clip`
 * right after: a converter scaled from zero runs that job before its code is fully optimized (V8 tiers
 * up the decoder's and demuxer's hot functions while it runs) and into fresh memory. Medians of three.
 */
async function readiness(parallelism: number, clip: string | undefined): Promise<{ readyMs: number; firstMs?: number }> {
  const ready: number[] = [];
  const first: number[] = [];
  for (let i = 0; i < 3; i++) {
    const output = await runChild('--ready', String(parallelism), ...(clip ? [clip] : []));
    const result = JSON.parse(output.trim().split('\n').at(-1)!) as { ms: number; firstMs?: number };
    ready.push(result.ms);
    if (result.firstMs !== undefined) first.push(result.firstMs);
  }
  return { readyMs: median(ready), firstMs: first.length ? median(first) : undefined };
}

export async function runConversionBench(): Promise<void> {
  if (!fs.existsSync(NATIVE_FFMPEG)) throw new Error(`${NATIVE_FFMPEG} is needed to make the inputs and as the reference (apt-get install ffmpeg).`);
  const benchStarted = performance.now();
  const cores = os.availableParallelism();
  const dir = await mkdtemp(path.join(os.tmpdir(), 'bench-convert-'));
  const { createTranscoder } = await import('../lib/media/transcode');
  const single = createTranscoder({ ...LIMITS, parallelism: 1, tempDir: dir });
  const parallel = createTranscoder({ ...LIMITS, parallelism: cores, tempDir: dir });
  const uri = process.env.BENCH_MONGODB_URI;
  const store = uri ? await createGridFsStore(uri) : createDirectoryStore(path.join(dir, 'blobs'));
  try {
    const wanted = (process.env.BENCH_INPUTS ?? '10s,120s,600s').split(',');
    console.log(`Making ${wanted.join(', ')} 720p inputs with ${NATIVE_FFMPEG} in ${dir} …`);
    const list: BenchInput[] = [];
    for (const name of wanted) {
      const seconds = Number.parseInt(name, 10);
      list.push({ name: `${seconds >= 120 ? `${seconds / 60} min` : `${seconds} s`} 720p`, seconds, file: await makeInput(dir, seconds) });
    }
    const firstClip = list.find((i) => i.seconds === 120);
    console.log('Measuring the machine …');
    const machine = await describeMachine(NATIVE_FFMPEG, firstClip ?? list.at(-1)!);
    console.log('Measuring readiness (fresh processes) …');
    const readySingle = await readiness(1, firstClip?.file);
    const readyParallel = await readiness(cores, firstClip?.file);
    await Promise.all([single.ready(), parallel.ready()]);

    const loudnessCase = wasmCase(`parallel wasm, loudness=podcast`, parallel, { ...OPTIONS, loudness: 'podcast' });
    const cases = [nativeCase(), wasmCase('one wasm instance', single), wasmCase(`parallel wasm (${cores} instances)`, parallel), loudnessCase, functionPathCase(parallel, store)];
    const times = new Map<string, number[]>();
    const segments = new Map<string, number>();
    const out = path.join(dir, 'out.mp3');
    for (const input of list) {
      for (const c of cases) await c.run(input, out); // one untimed run each: files cached, code warm
      for (let r = 0; r < ROUNDS; r++) {
        for (const c of cases) {
          const started = performance.now();
          const result = await c.run(input, out);
          const key = `${input.name}|${c.name}`;
          times.set(key, [...(times.get(key) ?? []), performance.now() - started]);
          if (result.segments) segments.set(key, result.segments);
        }
      }
      console.log(`  ${input.name}: done`);
    }

    const header = ['input', 'case', 'median s', 'min s', 'max s', '× native', 'segments'];
    const rows: string[][] = [];
    for (const input of list) {
      const native = median(times.get(`${input.name}|${cases[0].name}`)!);
      for (const c of cases) {
        const t = times.get(`${input.name}|${c.name}`)!;
        const m = median(t);
        rows.push([input.name, c.name, (m / 1000).toFixed(2), (Math.min(...t) / 1000).toFixed(2), (Math.max(...t) / 1000).toFixed(2), `${round(m / native, 2)}×`, String(segments.get(`${input.name}|${c.name}`) ?? '')]);
        console.log(JSON.stringify({ bench: 'convert', input: input.name, case: c.name, medianMs: Math.round(m), runs: t.length, ratioToNative: round(m / native, 2) }));
      }
    }
    const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
    const line = (cells: string[]): string => cells.map((cell, i) => cell.padEnd(widths[i])).join('  ');
    console.log(`\n${line(header)}\n${widths.map((w) => '-'.repeat(w)).join('  ')}\n${rows.map(line).join('\n')}\n`);
    const loudnessCost = list.map((input) => {
      const ratio = median(times.get(`${input.name}|${loudnessCase.name}`)!) / median(times.get(`${input.name}|${cases[2].name}`)!);
      return `${input.name} ${round(ratio, 2)}×`;
    });
    console.log(`Loudness normalisation (podcast) against the plain parallel conversion: ${loudnessCost.join(', ')}.`);
    const batchClip = list.find((i) => i.seconds === 120);
    if (batchClip && BATCH > 0) {
      const singles = [single, ...Array.from({ length: cores - 1 }, () => createTranscoder({ ...LIMITS, parallelism: 1, tempDir: dir }))];
      try {
        await batchPart(batchClip, parallel, singles, dir);
      } finally {
        await Promise.all(singles.slice(1).map((t) => t.close()));
      }
    }
    console.log(coreLine());
    console.log(
      `Convert readiness (import → instances compiled and warmed, median of 3 fresh processes, as in the image: ${imageRuntime().describe}): ` +
        `one instance ${Math.round(readySingle.readyMs)} ms, ${cores} instances ${Math.round(readyParallel.readyMs)} ms.`,
    );
    if (firstClip && readySingle.firstMs !== undefined && readyParallel.firstMs !== undefined) {
      const warm = (name: string) => median(times.get(`${firstClip.name}|${name}`)!);
      const first = (ms: number, warmMs: number) => `${(ms / 1000).toFixed(2)} s (${round(ms / warmMs, 2)}× its warm median)`;
      console.log(
        `First job right after readiness, ${firstClip.name} (what a converter scaled from zero runs first; median of 3): ` +
          `one instance ${first(readySingle.firstMs, warm(cases[1].name))}, ${cores} instances ${first(readyParallel.firstMs, warm(cases[2].name))}.`,
      );
    }
    console.log(`${ROUNDS} interleaved rounds per input, ${cores} cores; peak RSS of this process ${Math.round(process.resourceUsage().maxRSS / 1024)} MB.`);
    console.log(machine);
    if (process.env.BENCH_LARGE === '1') {
      await largePart(dir, list.find((i) => i.seconds === 120)?.file ?? (await makeInput(dir, 120)));
    }
    console.log(`Total bench time ${round((performance.now() - benchStarted) / 1000, 1)} s.`);
  } finally {
    // The child bundle is the bench's own: it must not ship in convert's image.
    if (childBuild) fs.rmSync(await childBuild, { force: true });
    await Promise.all([single.close(), parallel.close()]);
    await store.close();
    await rm(dir, { recursive: true, force: true });
  }
}

