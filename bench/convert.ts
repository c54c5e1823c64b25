// `npm run bench`: the conversion path (Buffer → lib/transcode → MP3 Buffer) against native ffmpeg on
// the same inputs and LAME options. Inputs are made at start with native ffmpeg (ffmpeg.wasm when
// /usr/bin/ffmpeg is absent). Cold = import + core compile + first conversion in a fresh process;
// warm = median of several conversions on one long-lived Transcoder / fresh native processes.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createDirectoryStore, createGridFsStore, type BlobStore } from '../lib/storage/blobs';
import type { Mp3Options, Transcoder } from '../lib/media/transcode';

const NATIVE_FFMPEG = process.env.FFMPEG ?? '/usr/bin/ffmpeg';
const OPTIONS: Mp3Options = { quality: 2 };
const NATIVE_LAME_ARGS = ['-c:a', 'libmp3lame', '-q:a', '2', '-ac', '2'];

interface BenchInput {
  name: string;
  file: string;
  /** lavfi recipe used to make it. */
  args: string[];
  warmRuns: number;
}

interface CaseContext {
  input: BenchInput;
  inputBuffer: Buffer;
  workDir: string;
}

/** One way of turning an input into an MP3. Add cases (e.g. with storage reads/writes) here. */
interface BenchCase {
  name: string;
  engine: 'wasm' | 'native';
  /** Import + core compile + first conversion, in a fresh process; returns ms and that process's peak RSS. */
  cold(ctx: CaseContext): Promise<{ ms: number; maxRssMB: number }>;
  /** One warm conversion; returns the MP3 bytes and, when it ran in a child, the child's peak RSS. */
  warm(ctx: CaseContext): Promise<{ bytes: number; maxRssMB?: number }>;
  /** Releases what the case holds for one input. */
  close?(): Promise<void>;
}

interface Row {
  case: string;
  engine: string;
  input: string;
  inputMB: number;
  coldMs: number;
  warmMedianMs: number;
  warmRuns: number;
  ratioToNative?: number;
  /** Peak RSS during the warm runs. */
  peakRssMB: number;
  /** Peak RSS of the fresh process that did the cold conversion. */
  coldPeakRssMB: number;
  mp3Bytes: number;
}

function inputs(dir: string): BenchInput[] {
  const clip = (seconds: number, size: string): string[] => [
    '-f', 'lavfi', '-i', `testsrc2=size=${size}:rate=30:duration=${seconds}`,
    '-f', 'lavfi', '-i', `sine=frequency=440:beep_factor=4:sample_rate=48000:duration=${seconds}`,
    '-c:v', 'libx264', '-preset', 'ultrafast', '-crf', '30', '-pix_fmt', 'yuv420p',
    '-c:a', 'aac', '-b:a', '128k', '-ac', '2', '-movflags', '+faststart',
  ];
  return [
    { name: '10s-720p', file: path.join(dir, '10s-720p.mp4'), args: clip(10, '1280x720'), warmRuns: 7 },
    { name: '120s-720p', file: path.join(dir, '120s-720p.mp4'), args: clip(120, '1280x720'), warmRuns: 5 },
  ];
}

function run(cmd: string, args: string[]): Promise<{ stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => {
      if (code === 0) resolve({ stderr: stdout + stderr });
      else reject(new Error(`${cmd} exited with ${code}: ${stderr.slice(-2000)}`));
    });
  });
}

async function makeInputsNatively(list: BenchInput[]): Promise<void> {
  for (const input of list) await run(NATIVE_FFMPEG, ['-hide_banner', '-loglevel', 'error', '-y', ...input.args, input.file]);
}

async function makeInputsWithWasm(list: BenchInput[]): Promise<void> {
  const { FFmpeg } = await import('@ffmpeg.wasm/main');
  const { writeFile } = await import('node:fs/promises');
  const ff = await FFmpeg.create({ core: '@ffmpeg.wasm/core-mt' });
  for (const input of list) {
    ff.runSync('-nostdin', '-y', '-hide_banner', ...input.args, 'out.mp4');
    await writeFile(input.file, ff.fs.readFile('out.mp4'));
    ff.fs.unlink('out.mp4');
  }
  ff.exit();
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

const selfMaxRssMB = (): number => process.resourceUsage().maxRSS / 1024;

// --- cases -----------------------------------------------------------------------------------

function wasmCase(): BenchCase & { transcoder?: Transcoder } {
  const self: BenchCase & { transcoder?: Transcoder } = {
    name: 'wasm lib/transcode',
    engine: 'wasm',
    async cold({ input }) {
      const { stderr } = await run(process.execPath, [...process.execArgv, __filename, '--cold', input.file]);
      const report = JSON.parse(stderr.trim().split('\n').at(-1) ?? '{}') as { ms: number; maxRssMB: number };
      return report;
    },
    async warm({ inputBuffer }) {
      if (!self.transcoder) {
        const { createTranscoder } = await import('../lib/media/transcode');
        self.transcoder = createTranscoder({ maxDurationSeconds: 4 * 3600, maxOutputBytes: 512 * 1024 * 1024 });
        await self.transcoder.transcode(inputBuffer, OPTIONS); // compile the core outside the timing
      }
      const { bytes } = await self.transcoder.transcode(inputBuffer, OPTIONS);
      return { bytes };
    },
  };
  return self;
}

/**
 * What the convert function does per event: read the video from the blob store, convert, store the
 * MP3 (then drop it, so runs stay alike). The directory store by default; GridFS when
 * BENCH_MONGODB_URI is set (e.g. FerretDB or a real MongoDB).
 */
function functionPathCase(wasm: ReturnType<typeof wasmCase>): BenchCase {
  let store: BlobStore | undefined;
  let videoId: string | undefined;
  const uri = process.env.BENCH_MONGODB_URI;
  const convertOnce = async ({ inputBuffer, workDir }: CaseContext) => {
    if (!store) {
      store = uri ? await createGridFsStore(uri) : createDirectoryStore(path.join(workDir, 'blobs'));
    }
    if (!videoId) videoId = (await store.put('videos', inputBuffer, { owner: 'bench', filename: 'in.mp4', contentType: 'video/mp4' })).id;
    if (!wasm.transcoder) await wasm.warm({ inputBuffer, workDir } as CaseContext);
    const input = await store.readAll('videos', videoId);
    const { mp3 } = await wasm.transcoder!.transcode(input, OPTIONS);
    const stored = await store.put('mp3s', mp3, { owner: 'bench', filename: 'out.mp3', contentType: 'audio/mpeg' });
    await store.delete('mp3s', stored.id);
    return { bytes: stored.size };
  };
  return {
    name: `function path (${uri ? 'GridFS' : 'directory store'} read + wasm + write)`,
    engine: 'wasm',
    // Its cold start is the wasm case's (it shares that transcoder): not measured again, shown as —.
    async cold(ctx) {
      await convertOnce(ctx);
      return { ms: Number.NaN, maxRssMB: Number.NaN };
    },
    async warm(ctx) {
      const result = await convertOnce(ctx);
      return result;
    },
    async close() {
      if (videoId) await store?.delete('videos', videoId);
      videoId = undefined;
      await store?.close();
      store = undefined;
    },
  };
}

function nativeCase(): BenchCase {
  const convert = async ({ input, workDir }: CaseContext): Promise<{ bytes: number; maxRssMB: number }> => {
    const out = path.join(workDir, `native-${input.name}.mp3`);
    const { stderr } = await run(NATIVE_FFMPEG, [
      '-hide_banner', '-nostdin', '-y', '-benchmark', '-i', input.file,
      '-map', '0:a:0', '-vn', '-map_metadata', '-1', ...NATIVE_LAME_ARGS, '-f', 'mp3', out,
    ]);
    const maxRssKB = Number(/maxrss=(\d+)kB/.exec(stderr)?.[1] ?? 0);
    return { bytes: (await stat(out)).size, maxRssMB: maxRssKB / 1024 };
  };
  return {
    name: 'native /usr/bin/ffmpeg',
    engine: 'native',
    async cold(ctx) {
      const started = performance.now();
      const { maxRssMB } = await convert(ctx);
      return { ms: performance.now() - started, maxRssMB };
    },
    warm: convert,
  };
}

// --- modes -----------------------------------------------------------------------------------

/** Child-process mode: one cold conversion, timed from before the module import. */
async function coldChild(file: string): Promise<void> {
  const input = await readFile(file);
  const started = performance.now();
  const { createTranscoder } = await import('../lib/media/transcode');
  const transcoder = createTranscoder({ maxDurationSeconds: 4 * 3600, maxOutputBytes: 512 * 1024 * 1024 });
  await transcoder.transcode(input, OPTIONS);
  const ms = performance.now() - started;
  await transcoder.close();
  process.stderr.write(`${JSON.stringify({ ms, maxRssMB: selfMaxRssMB() })}\n`);
}

async function main(): Promise<void> {
  const benchStarted = performance.now();
  const haveNative = existsSync(NATIVE_FFMPEG);
  const workDir = await mkdtemp(path.join(tmpdir(), 'bench-convert-'));
  try {
    const list = inputs(workDir);
    if (haveNative) {
      console.log(`Making inputs with ${NATIVE_FFMPEG} in ${workDir} …`);
      await makeInputsNatively(list);
    } else {
      console.log(`${NATIVE_FFMPEG} is not installed: no native comparison; making inputs with ffmpeg.wasm (slow) …`);
      await makeInputsWithWasm(list);
    }
    const wasm = wasmCase();
    const cases = [wasm, functionPathCase(wasm), ...(haveNative ? [nativeCase()] : [])];
    const rows: Row[] = [];
    for (const input of list) {
      const inputBuffer = await readFile(input.file);
      const ctx: CaseContext = { input, inputBuffer, workDir };
      for (const c of cases) {
        const cold = await c.cold(ctx);
        const times: number[] = [];
        let bytes = 0;
        let childRss = 0;
        for (let i = 0; i < input.warmRuns; i++) {
          const started = performance.now();
          const result = await c.warm(ctx);
          times.push(performance.now() - started);
          bytes = result.bytes;
          childRss = Math.max(childRss, result.maxRssMB ?? 0);
        }
        rows.push({
          case: c.name,
          engine: c.engine,
          input: input.name,
          inputMB: round(inputBuffer.byteLength / 1024 / 1024, 1),
          coldMs: Math.round(cold.ms),
          warmMedianMs: Math.round(median(times)),
          warmRuns: input.warmRuns,
          // Native runs in its own process; the wasm case runs inside this one.
          peakRssMB: Math.round(c.engine === 'native' ? childRss : selfMaxRssMB()),
          coldPeakRssMB: Math.round(cold.maxRssMB),
          mp3Bytes: bytes,
        });
        await c.close?.();
      }
    }
    for (const row of rows) {
      const native = rows.find((r) => r.engine === 'native' && r.input === row.input);
      if (native && row.engine !== 'native') row.ratioToNative = round(row.warmMedianMs / native.warmMedianMs, 2);
    }
    for (const c of cases) await (c as { transcoder?: Transcoder }).transcoder?.close();

    printTable(rows);
    console.log('Cold: wasm = import + worker start + core compile + first conversion in a fresh process; native = first run.');
    console.log('Peak RSS: wasm = this process (worker thread included); native = the ffmpeg process (-benchmark maxrss).');
    if (!haveNative) console.log(`No native figures: ${NATIVE_FFMPEG} is not installed.`);
    for (const row of rows) console.log(JSON.stringify({ bench: 'convert', ...row }));
    console.log(`Total bench time ${round((performance.now() - benchStarted) / 1000, 1)} s.`);
  } finally {
    await rm(workDir, { recursive: true, force: true });
  }
}

function round(value: number, digits: number): number {
  return Math.round(value * 10 ** digits) / 10 ** digits;
}

function printTable(rows: Row[]): void {
  const header = ['case', 'input', 'input MB', 'cold s', 'warm median s', 'runs', 'wasm/native', 'peak RSS MB', 'cold RSS MB', 'MP3 KB'];
  const body = rows.map((r) => [
    r.case, r.input, String(r.inputMB), Number.isFinite(r.coldMs) ? (r.coldMs / 1000).toFixed(2) : '—', (r.warmMedianMs / 1000).toFixed(2),
    String(r.warmRuns), r.ratioToNative === undefined ? '' : `${r.ratioToNative}×`, String(r.peakRssMB),
    Number.isFinite(r.coldPeakRssMB) ? String(r.coldPeakRssMB) : '—', String(Math.round(r.mp3Bytes / 1024)),
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((b) => b[i].length)));
  const line = (cells: string[]): string => cells.map((c, i) => c.padEnd(widths[i])).join('  ');
  console.log(`\n${line(header)}\n${widths.map((w) => '-'.repeat(w)).join('  ')}`);
  for (const b of body) console.log(line(b));
  console.log('');
}

const coldIndex = process.argv.indexOf('--cold');
(coldIndex >= 0 ? coldChild(process.argv[coldIndex + 1]) : main()).catch((error: unknown) => {
  console.error(error);
  process.exitCode = 1;
});
