// This build's av_log callback formats every message down to TRACE whatever -loglevel says (platform.md
// §4b): tens of thousands of demuxer trace lines per job, each formatted in C and handed to JS. The
// callback is a function pointer in wasm memory (libavutil's av_log_callback, next to av_log_level),
// so it can be swapped for a JS function that passes on only messages up to a level.
//
// Both are found at run time: av_log_level is the one word that -loglevel quiet/info/trace sets to
// -8/32/56; the word after it must hold a function of the table that, when cleared, silences the log.
// The JS function exists only on the instance's own thread, not in its pthread workers, so the filter
// is for runs whose decoders and filters are single-threaded (a frame-threaded video decoder logs from
// pthreads): a run that asks for no level gets the original callback back.
import type { FFmpeg } from '@ffmpeg.wasm/main';

export interface LogFilter {
  /** Passes on messages up to `level` (AV_LOG_INFO = 32) only, or everything with 'all'. */
  set(level: number | 'all'): void;
}

interface Table {
  get(index: number): unknown;
}

// Node's types leave WebAssembly's JS API out (it is a DOM lib type); these are the parts used here.
const WasmTable = (globalThis as unknown as { WebAssembly: { Table: abstract new () => Table } }).WebAssembly.Table;

interface Core {
  wasmMemory: { buffer: ArrayBuffer };
  asm: Record<string, unknown>;
  addFunction(fn: (...args: number[]) => void, signature: string): number;
}

/** av_log_level sits in the data section, within the first megabytes of the heap. */
const SCAN_BYTES = 16 * 1024 * 1024;

/** Finds and installs the filter on a fresh instance; undefined when this build has another shape. */
export function createLogFilter(ff: FFmpeg, countLines: (run: () => void) => number): LogFilter | undefined {
  const core = (ff as unknown as { core: Core }).core;
  const table = Object.values(core.asm ?? {}).find((v): v is Table => v instanceof WasmTable);
  if (!table || typeof core.addFunction !== 'function') return undefined;
  const words = () => new Int32Array(core.wasmMemory.buffer, 0, Math.min(SCAN_BYTES, core.wasmMemory.buffer.byteLength) / 4);
  // A one-thread filtergraph source, as in the warm-up (lib/media/worker.ts): no pthread is started.
  const tiny = (level: string) => ff.runSync('-nostdin', '-loglevel', level, '-filter_complex_threads', '1', '-filter_complex', 'anullsrc=d=0.01', '-f', 'null', '-');

  tiny('info');
  // Reading shared memory word by word is slow: copy the region once, then scan the copy.
  const copy = new Int32Array(core.wasmMemory.buffer.slice(0, words().byteLength));
  let candidates: number[] = [];
  for (let i = 0; i < copy.length; i++) if (copy[i] === 32) candidates.push(i);
  for (const [level, value] of [['quiet', -8], ['trace', 56], ['info', 32]] as const) {
    tiny(level);
    const w = words();
    candidates = candidates.filter((i) => w[i] === value);
  }
  if (candidates.length !== 1) return undefined;
  const at = candidates[0] + 1;
  const original = words()[at];
  let originalFn: ((...args: number[]) => void) | undefined;
  try {
    originalFn = table.get(original) as typeof originalFn;
  } catch {
    return undefined;
  }
  if (typeof originalFn !== 'function') return undefined;
  const silent = countLines(() => {
    words()[at] = 0;
    try {
      tiny('info');
    } finally {
      words()[at] = original;
    }
  });
  if (silent !== 0 || countLines(() => tiny('info')) === 0) return undefined;

  let max = Infinity;
  const filter = core.addFunction((avcl: number, level: number, fmt: number, vl: number) => {
    if (level <= max) originalFn(avcl, level, fmt, vl);
  }, 'viiii');
  return {
    set(level) {
      if (level === 'all') {
        words()[at] = original;
      } else {
        max = level;
        words()[at] = filter;
      }
    },
  };
}
