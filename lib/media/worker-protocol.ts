// The messages between lib/media/encoder-pool.ts (the caller's thread) and lib/media/worker.ts (a
// thread running one ffmpeg.wasm instance). Types only, so neither side imports the other.

export type TranscodeFailure = 'no-audio' | 'corrupt' | 'unsupported' | 'too-long' | 'output-too-large';

export interface FailureDetail {
  durationSeconds?: number;
  limit?: number;
  empty?: boolean;
}

/** A host file the worker exposes inside the instance's file system for one run. */
export interface HostFileSpec {
  wasmPath: string;
  hostPath: string;
  mode: 'read' | 'write';
}

export type EncodeRequest =
  | { id: number; kind: 'warm' }
  | {
      id: number;
      kind: 'run';
      args: string[];
      files: HostFileSpec[];
      /** Log lines matching this (a RegExp source) are returned; the others are dropped in the worker. */
      keep: string;
      /** Messages above this av_log level are dropped before they are formatted; undefined keeps all. */
      logLevel?: number;
    };

export type EncodeReply =
  | { id: number; kind: 'progress'; timeSeconds: number }
  | { id: number; kind: 'done'; lines: string[]; logLines: number; ms: number; memory: WorkerMemory }
  | { id: number; kind: 'crashed'; message: string };

export interface WorkerMemory {
  heapUsedBytes: number;
  externalBytes: number;
  arrayBuffersBytes: number;
  /** pthread workers the instance has started, idle or not: each a Node worker with its own isolate. */
  pthreadWorkers: number;
}
