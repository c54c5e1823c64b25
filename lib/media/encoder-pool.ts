// A fixed set of ffmpeg core threads (lib/media/worker.ts), created once per process and warmed at
// start; each run in a thread gets a fresh instance of the core. A run takes an idle thread (or waits
// for one); a thread that crashes, exits or outlasts its timeout is terminated and replaced by a fresh,
// warmed one.
import { createRequire } from 'node:module';
import path from 'node:path';
import { Worker } from 'node:worker_threads';
import { compileCore, type CompiledCore } from './ffmpeg-core';
import type { EncodeReply, EncodeRequest, HostFileSpec, WorkerMemory } from './worker-protocol';

export type { HostFileSpec };

/** The instance failed (not the input): a retry on a fresh instance may work. */
export class EncoderCrashError extends Error {
  override readonly name = 'EncoderCrashError';
}

/** The run outlasted its timeout; its instance was replaced. */
export class EncoderTimeoutError extends Error {
  override readonly name = 'EncoderTimeoutError';
}

export interface EncodeTask {
  args: string[];
  files: HostFileSpec[];
  /** RegExp source: log lines to return (every other line is dropped inside the worker). */
  keep: string;
  /**
   * ffmpeg's -loglevel for the run (AV_LOG_INFO = 32, the default; AV_LOG_DEBUG = 48): messages above
   * it are never formatted, which saves time.
   */
  logLevel?: number;
  timeoutMs?: number;
  onProgress?: (timeSeconds: number) => void;
}

export interface EncodeRun {
  lines: string[];
  /** Log lines ffmpeg produced in all (kept or not). */
  logLines: number;
  /** ffmpeg's exit code (0: every output written). */
  exitCode: number;
  ms: number;
  /** The instance's thread memory after the run, for spotting growth across jobs. */
  memory: WorkerMemory;
}

export interface EncoderPool {
  readonly size: number;
  /** Resolves once every instance is created and warmed (rejects if one cannot start). */
  ready(): Promise<void>;
  run(task: EncodeTask): Promise<EncodeRun>;
  /** Waits for running tasks, then stops every instance. */
  close(): Promise<void>;
}

interface Slot {
  worker: Worker;
  warmed: Promise<void>;
  busy: boolean;
}

/** Creates `size` instances now and warms them in the background. */
export function createEncoderPool(opts: { size: number }): EncoderPool {
  if (!Number.isInteger(opts.size) || opts.size < 1) throw new RangeError(`The pool size must be a whole number ≥ 1, got ${opts.size}.`);
  let nextId = 1;
  let closed = false;
  const waiting: ((slot: Slot) => void)[] = [];
  const running = new Set<Promise<unknown>>();

  function request(worker: Worker, message: EncodeRequest, onProgress?: (t: number) => void, timeoutMs?: number): Promise<EncodeRun> {
    return new Promise((resolve, reject) => {
      const timer = timeoutMs === undefined ? undefined : setTimeout(() => {
        settle();
        reject(new EncoderTimeoutError(`The encoder did not finish within ${Math.round(timeoutMs / 1000)} s.`));
      }, timeoutMs);
      const settle = (): void => {
        clearTimeout(timer);
        worker.off('message', onMessage);
        worker.off('error', onError);
        worker.off('exit', onExit);
        worker.unref(); // an idle pool never keeps the process alive
      };
      const onMessage = (reply: EncodeReply): void => {
        if (reply.id !== message.id) return;
        if (reply.kind === 'progress') {
          try {
            onProgress?.(reply.timeSeconds);
          } catch {
            // Progress is advisory.
          }
          return;
        }
        settle();
        if (reply.kind === 'done') resolve({ lines: reply.lines, logLines: reply.logLines, exitCode: reply.exitCode, ms: reply.ms, memory: reply.memory });
        else reject(new EncoderCrashError(`The encoder crashed: ${reply.message}`));
      };
      const onError = (error: Error): void => {
        settle();
        reject(new EncoderCrashError('The encoder thread failed.', { cause: error }));
      };
      const onExit = (code: number): void => {
        settle();
        reject(new EncoderCrashError(`The encoder thread exited unexpectedly (code ${code}).`));
      };
      worker.on('message', onMessage);
      worker.on('error', onError);
      worker.on('exit', onExit);
      worker.ref();
      worker.postMessage(message);
    });
  }

  function startSlot(): Slot {
    const worker = spawnWorker();
    const warmed = getCompiledCore()
      .then((module) => request(worker, { id: nextId++, kind: 'warm', module }))
      .then(() => undefined);
    const slot: Slot = { worker, warmed, busy: false };
    warmed.catch(() => undefined); // reported by ready() or by the run that uses this slot
    return slot;
  }

  const slots: Slot[] = Array.from({ length: opts.size }, startSlot);

  function release(slot: Slot): void {
    const next = waiting.shift();
    if (next) next(slot);
    else slot.busy = false;
  }

  function acquire(): Promise<Slot> {
    const idle = slots.find((s) => !s.busy);
    if (idle) {
      idle.busy = true;
      return Promise.resolve(idle);
    }
    return new Promise((resolve) => waiting.push(resolve));
  }

  function replace(slot: Slot): void {
    void slot.worker.terminate();
    const fresh = startSlot();
    slot.worker = fresh.worker;
    slot.warmed = fresh.warmed;
  }

  return {
    size: opts.size,
    async ready() {
      await Promise.all(slots.map((s) => s.warmed));
    },
    run(task) {
      if (closed) return Promise.reject(new Error('The encoder pool is closed.'));
      const job = (async () => {
        const slot = await acquire();
        try {
          try {
            await slot.warmed;
          } catch {
            replace(slot);
            await slot.warmed;
          }
          return await request(slot.worker, { id: nextId++, kind: 'run', args: task.args, files: task.files, keep: task.keep, logLevel: task.logLevel }, task.onProgress, task.timeoutMs);
        } catch (error) {
          if (error instanceof EncoderCrashError || error instanceof EncoderTimeoutError) replace(slot);
          throw error;
        } finally {
          release(slot);
        }
      })();
      running.add(job);
      void job.catch(() => undefined).finally(() => running.delete(job));
      return job;
    },
    async close() {
      closed = true;
      await Promise.allSettled([...running]);
      await Promise.all(slots.map((s) => s.worker.terminate()));
    },
  };
}

let compiled: Promise<CompiledCore> | undefined;

/**
 * The core compiled once per process: every instance's thread gets the same module and shares its code
 * (and what V8 has tiered up in it) instead of compiling its own.
 */
function getCompiledCore(): Promise<CompiledCore> {
  compiled ??= compileCore().catch((error: unknown) => {
    compiled = undefined;
    throw error;
  });
  return compiled;
}

function spawnWorker(): Worker {
  // Bundled (dist/convert/index.js) the worker is the sibling bundle transcode-worker.js; from source
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
