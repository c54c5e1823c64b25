// Worker-thread body of the encoder pool (lib/media/encoder-pool.ts): the project's ffmpeg core
// (lib/media/ffmpeg-core.ts), compiled once per thread and warmed (a tiny conversion pays the encoder's JIT
// warm-up, docs/media-engine.md), then one run at a time, each in a fresh instance with host files as input
// and output (lib/media/host-file.ts). A run blocks this thread, never the caller's.
import { parentPort } from 'node:worker_threads';
import { loadCore, type Core, type CoreInstance } from './ffmpeg-core';
import { attachHostFile, type HostFile } from './host-file';
import type { EncodeReply, EncodeRequest, WorkerMemory } from './worker-protocol';

let core: Promise<Core> | undefined;

function run(instance: CoreInstance, args: string[], logLevel: number | undefined): number {
  // -loglevel first, so a caller's own -loglevel in args still wins. ffmpeg formats only the messages
  // up to this level: a probe at TRACE would format a line per MOV sample-table entry.
  return instance.run(['-nostdin', '-y', '-hide_banner', '-loglevel', String(logLevel ?? AV_LOG_INFO), ...args]);
}

const AV_LOG_INFO = 32;

/**
 * A half-second conversion through the same encoder, so the first real job finds LAME compiled. The
 * demuxer and decoder a job needs still compile on its first run.
 */
function warm(c: Core): void {
  const instance = c.instantiate(() => {});
  run(instance, ['-f', 'lavfi', '-i', 'sine=frequency=440:sample_rate=44100:duration=0.5', '-c:a', 'libmp3lame', '-q:a', '2', '-f', 'mp3', '/warm.mp3'], undefined);
}

const PROGRESS = /time=(\d+):(\d+):(\d+(?:\.\d+)?)/;

async function handle(request: EncodeRequest): Promise<EncodeReply> {
  const started = performance.now();
  if (request.kind === 'warm') core ??= loadCore(undefined, request.module);
  if (!core) throw new Error('The core was not loaded: warm first.');
  const c = await core;
  if (request.kind === 'warm') {
    warm(c);
    return { id: request.id, kind: 'done', lines: [], logLines: 0, exitCode: 0, ms: performance.now() - started, memory: workerMemory(0) };
  }
  const keep = new RegExp(request.keep);
  const lines: string[] = [];
  let logLines = 0;
  const instance = c.instantiate((line) => {
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
  const attached: HostFile[] = [];
  let exitCode: number;
  try {
    for (const f of request.files) attached.push(attachHostFile(instance.fs, f.wasmPath, f.hostPath, f.mode));
    exitCode = run(instance, request.args, request.logLevel);
  } finally {
    for (const f of attached) f.close();
  }
  return { id: request.id, kind: 'done', lines, logLines, exitCode, ms: performance.now() - started, memory: workerMemory(instance.memoryBytes()) };
}

function workerMemory(wasmMemoryBytes: number): WorkerMemory {
  const { heapUsed, external, arrayBuffers } = process.memoryUsage();
  return { heapUsedBytes: heapUsed, externalBytes: external, arrayBuffersBytes: arrayBuffers, wasmMemoryBytes };
}

let queue: Promise<void> = Promise.resolve();
parentPort?.on('message', (request: EncodeRequest) => {
  queue = queue.then(async () => {
    let reply: EncodeReply;
    try {
      reply = await handle(request);
    } catch (error) {
      core = undefined;
      reply = { id: request.id, kind: 'crashed', message: error instanceof Error ? error.message : String(error) };
    }
    parentPort?.postMessage(reply);
  });
});
