// Worker-thread body of the encoder pool (lib/media/encoder-pool.ts): one ffmpeg.wasm instance, created
// and warmed once (a tiny conversion pays the encoder's JIT warm-up, platform.md §4), then one run at a
// time with host files as input and output (lib/media/host-file.ts). runSync blocks this thread, never
// the caller's.
// A run that throws leaves the instance in an unknown state: the pool terminates this thread.
import v8 from 'node:v8';
import { parentPort, Worker } from 'node:worker_threads';
import { FFmpeg, type FFmpegCoreConstructor } from '@ffmpeg.wasm/main';
import createCore from '@ffmpeg.wasm/core-mt';
import { attachHostFile, type HostFile, type WasmFs } from './host-file';
import { createLogFilter, type LogFilter } from './log-filter';
import type { EncodeReply, EncodeRequest, WorkerMemory } from './worker-protocol';

// V8 validates a whole wasm module before it compiles any of it: ~85 ms of every instance's start for
// this 25 MB core. The core is a pinned package, checked against the lockfile's hash when installed,
// so its functions are validated when first compiled instead. The flag is read when a module compiles.
v8.setFlagsFromString('--wasm-lazy-validation');

let ffmpeg: FFmpeg | undefined;
let logFilter: LogFilter | undefined;
let onLine: (line: string) => void = () => {};

async function getFFmpeg(): Promise<FFmpeg> {
  ffmpeg ??= await FFmpeg.create({
    core: createCore as unknown as FFmpegCoreConstructor,
    log: true,
    logger: (_level, ...msg) => onLine(msg.length === 1 ? String(msg[0]) : msg.map(String).join(' ')),
  });
  return ffmpeg;
}

/** Counts the log lines `run` makes (for the log filter's self-check). */
function countLines(run: () => void): number {
  let lines = 0;
  onLine = () => lines++;
  try {
    run();
  } finally {
    onLine = () => {};
  }
  return lines;
}

function runSync(ff: FFmpeg, args: string[], collect: (line: string) => void): void {
  onLine = collect;
  try {
    ff.runSync('-nostdin', '-y', '-hide_banner', ...args);
  } finally {
    onLine = () => {};
  }
}

const WARM_OUTPUT = '/warm.mp3';

/**
 * Generated audio from a filtergraph that runs on this thread, as every job's filters do
 * (lib/media/convert-file.ts). The lavfi demuxer's graph, and a -filter_complex one unless told, runs a
 * thread per core, and each thread is a pthread worker that must boot Node and the core before the run
 * goes on: that was ~0.3 s of the warm-up, and the workers then idled in the instance.
 */
const ONE_THREAD_SOURCE = ['-filter_complex_threads', '1', '-filter_complex'];

/**
 * A half-second conversion through the same encoder, so the first real job finds LAME compiled. The
 * demuxer and decoder a job needs still compile on its first run (~0.1–0.3 s more on a 10 s clip);
 * warming them too, on a real clip, would move that time into the start instead (about as much).
 */
function warm(ff: FFmpeg): void {
  runSync(ff, [...ONE_THREAD_SOURCE, 'sine=frequency=440:sample_rate=44100:duration=0.5', '-c:a', 'libmp3lame', '-q:a', '2', '-f', 'mp3', WARM_OUTPUT], () => {});
  try {
    ff.fs.unlink(WARM_OUTPUT);
  } catch {
    // Not written: nothing to free.
  }
}

const PROGRESS = /time=(\d+):(\d+):(\d+(?:\.\d+)?)/;

async function handle(request: EncodeRequest): Promise<EncodeReply> {
  const started = performance.now();
  const ff = await getFFmpeg();
  if (request.kind === 'warm') {
    warm(ff);
    // After the warm-up its probe runs are JIT-compiled: ~0.1 s instead of ~0.5 s.
    logFilter ??= createLogFilter(ff, countLines);
    return { id: request.id, kind: 'done', lines: [], logLines: 0, ms: performance.now() - started, memory: workerMemory() };
  }
  const keep = new RegExp(request.keep);
  logFilter?.set(request.logLevel ?? 'all');
  const lines: string[] = [];
  let logLines = 0;
  const attached: HostFile[] = [];
  try {
    for (const f of request.files) attached.push(attachHostFile(ff.fs as unknown as WasmFs, f.wasmPath, f.hostPath, f.mode));
    runSync(ff, request.args, (line) => {
      logLines++;
      if (keep.test(line)) lines.push(line);
      if (line.includes('size=')) {
        const t = PROGRESS.exec(line);
        if (t) {
          const timeSeconds = Number(t[1]) * 3600 + Number(t[2]) * 60 + Number(t[3]);
          parentPort?.postMessage({ id: request.id, kind: 'progress', timeSeconds } satisfies EncodeReply);
        }
      }
    });
  } finally {
    for (const f of attached) f.close();
  }
  return { id: request.id, kind: 'done', lines, logLines, ms: performance.now() - started, memory: workerMemory() };
}

function workerMemory(): WorkerMemory {
  const { heapUsed, external, arrayBuffers } = process.memoryUsage();
  return { heapUsedBytes: heapUsed, externalBytes: external, arrayBuffersBytes: arrayBuffers, pthreadWorkers: pthreadWorkers() };
}

/**
 * The core's pthread workers, idle ones (kept for reuse) included. Emscripten's PThread object is
 * exported, but minified: its pool and running set are the arrays and maps that hold Workers.
 */
function pthreadWorkers(): number {
  const pthread = (ffmpeg as unknown as { core?: { PThread?: Record<string, unknown> } } | undefined)?.core?.PThread ?? {};
  const held = Object.values(pthread).flatMap((v) => (Array.isArray(v) ? v : v && typeof v === 'object' ? Object.values(v) : []));
  return held.filter((w) => w instanceof Worker).length;
}

let queue: Promise<void> = Promise.resolve();
parentPort?.on('message', (request: EncodeRequest) => {
  queue = queue.then(async () => {
    let reply: EncodeReply;
    try {
      reply = await handle(request);
    } catch (error) {
      ffmpeg = undefined;
      reply = { id: request.id, kind: 'crashed', message: error instanceof Error ? error.message : String(error) };
    }
    parentPort?.postMessage(reply);
  });
});
