// The project's ffmpeg.wasm core (vendor/ffmpeg-core/, built by scripts/build-core.sh; docs/core.md):
// ffmpeg's own command line, single-threaded, compiled to one wasm module. The module is compiled once
// per thread and every run gets a fresh instance of it: no state of one run (ffmpeg's globals, the heap
// it grew, its file system) reaches the next, and a run's heap is freed when it ends. Instances share
// the compiled code, tiered-up functions included, so a new one costs about a millisecond.
//
// The glue is not minified: FS and its node and stream ops keep their names (lib/media/host-file.ts).
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';

/** An open file in the instance's file system. */
export interface CoreStream {
  node: CoreNode;
  position: number;
}

export type CoreOps = Record<string, (...args: never[]) => unknown>;

/** A file system node (MEMFS) whose ops a host file replaces. */
export interface CoreNode {
  mode: number;
  node_ops: CoreOps & { getattr(node: CoreNode): Record<string, unknown>; setattr(node: CoreNode, attr: object): void };
  stream_ops: CoreOps;
}

/** The parts of Emscripten's FS the converter uses. */
export interface CoreFs {
  writeFile(path: string, data: Uint8Array | string): void;
  readFile(path: string): Uint8Array;
  open(path: string, flags: string): CoreStream;
  close(stream: CoreStream): void;
  unlink(path: string): void;
  ErrnoError: new (errno: number) => Error;
}

export interface CoreInstance {
  readonly fs: CoreFs;
  /** Runs ffmpeg with these arguments (after the program name); returns its exit code. Once only. */
  run(args: string[]): number;
  /** Bytes of wasm memory the instance has (its heap grows as a run needs). */
  memoryBytes(): number;
}

export interface Core {
  /** What vendor/ffmpeg-core/build.json says: versions, configure line, licence. */
  readonly info: CoreBuildInfo;
  /**
   * A fresh instance whose log lines (stderr, split at \n and \r) go to `onLine`; its stdout (the
   * listings of -encoders and the like) to `onStdout` when given, else nowhere.
   */
  instantiate(onLine: (line: string) => void, onStdout?: (line: string) => void): CoreInstance;
}

export interface CoreBuildInfo {
  ffmpeg: string;
  lame: string;
  emscripten: string;
  configuration: string;
  license: string;
  wasmBytes: number;
}

interface EmscriptenModule {
  FS: CoreFs;
  callMain(args: string[]): number;
  HEAP8: Int8Array;
}

type CoreFactory = (module: Record<string, unknown>) => Promise<EmscriptenModule>;

// Node's types leave WebAssembly's JS API out (it is a DOM lib type); these are the parts used here.
/** A compiled WebAssembly.Module of the core. */
export interface CompiledCore {
  readonly compiledCore: unique symbol;
}
type WasmModule = CompiledCore;
interface WasmInstance {
  exports: Record<string, unknown>;
}
const Wasm = (globalThis as unknown as {
  WebAssembly: { compile(bytes: Uint8Array): Promise<WasmModule>; Instance: new (module: WasmModule, imports: object) => WasmInstance };
}).WebAssembly;

/**
 * Where the core is: beside the bundle in dist/convert/ffmpeg-core/ (build.mjs copies it there), or
 * vendor/ffmpeg-core/ from source.
 */
export function getCoreDir(): string {
  return /\.[cm]?js$/.test(__filename) ? path.join(__dirname, 'ffmpeg-core') : path.join(__dirname, '../../vendor/ffmpeg-core');
}

/**
 * Compiles the core's wasm (asynchronously: V8 compiles it on background threads). The module can be
 * posted to worker threads, which then share its code instead of compiling their own.
 */
export async function compileCore(dir = getCoreDir()): Promise<CompiledCore> {
  return Wasm.compile(await fs.promises.readFile(path.join(dir, 'ffmpeg-core.wasm')));
}

/** Loads the core's glue and build record, with `compiled` from compileCore (compiled here if not given). */
export async function loadCore(dir = getCoreDir(), compiled?: CompiledCore): Promise<Core> {
  const info = JSON.parse(await fs.promises.readFile(path.join(dir, 'build.json'), 'utf8')) as CoreBuildInfo;
  const factory = createRequire(__filename)(path.join(dir, 'ffmpeg-core.js')) as CoreFactory;
  const module0 = compiled ?? (await compileCore(dir));
  return {
    info,
    instantiate(onLine, onStdout) {
      const stderr = createLineSplitter(onLine);
      const stdout = onStdout ? createLineSplitter(onStdout) : undefined;
      const module: Record<string, unknown> = {
        instantiateWasm(imports: object, receive: (instance: WasmInstance, module: WasmModule) => void) {
          const instance = new Wasm.Instance(module0, imports);
          receive(instance, module0);
          return instance.exports;
        },
        stdin: () => null,
        stdout: stdout ? stdout.byte : () => {},
        stderr: stderr.byte,
        print: () => {},
        printErr: onLine,
        // ffmpeg ends with exit(): the glue's default would set the thread's exit code and, without a
        // kept-alive runtime, end the thread. Throwing returns the code from callMain instead.
        quit: (_status: number, toThrow: unknown) => {
          throw toThrow;
        },
      };
      // The instance is made synchronously (instantiateWasm returns it), so the module is filled in
      // before the factory returns; its promise only repeats that.
      factory(module).catch(() => undefined);
      const ready = module as unknown as EmscriptenModule;
      if (typeof ready.callMain !== 'function' || !ready.FS) throw new Error('The ffmpeg core did not instantiate.');
      let ran = false;
      return {
        fs: ready.FS,
        run(args) {
          if (ran) throw new Error('A core instance runs once: instantiate another.');
          ran = true;
          try {
            return ready.callMain(args);
          } finally {
            stderr.flush();
            stdout?.flush();
          }
        },
        memoryBytes: () => ready.HEAP8.buffer.byteLength,
      };
    },
  };
}

/** Collects stderr bytes into lines: ffmpeg ends its progress lines with \r, its messages with \n. */
function createLineSplitter(onLine: (line: string) => void): { byte(code: number): void; flush(): void } {
  let bytes: number[] = [];
  const flush = (): void => {
    if (bytes.length === 0) return;
    const line = Buffer.from(bytes).toString('utf8');
    bytes = [];
    if (line.trim() !== '') onLine(line);
  };
  return {
    byte(code) {
      if (code === 10 || code === 13) flush();
      else bytes.push(code);
    },
    flush,
  };
}
