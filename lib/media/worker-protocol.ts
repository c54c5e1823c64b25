// The messages between lib/media/encoder-pool.ts (the caller's thread) and lib/media/worker.ts (a
// thread running the ffmpeg core, lib/media/ffmpeg-core.ts). Types only, so neither side imports the other.
import type { CompiledCore } from './ffmpeg-core';

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
  /** The core's compiled module (lib/media/ffmpeg-core.ts), compiled once per process and shared. */
  | { id: number; kind: 'warm'; module: CompiledCore }
  | {
      id: number;
      kind: 'run';
      args: string[];
      files: HostFileSpec[];
      /** Log lines matching this (a RegExp source) are returned; the others are dropped in the worker. */
      keep: string;
      /** ffmpeg's -loglevel for the run (messages above it are never formatted); default AV_LOG_INFO. */
      logLevel?: number;
    };

export type EncodeReply =
  | { id: number; kind: 'progress'; timeSeconds: number }
  | { id: number; kind: 'done'; lines: string[]; logLines: number; exitCode: number; ms: number; memory: WorkerMemory }
  | { id: number; kind: 'crashed'; message: string };

export interface WorkerMemory {
  heapUsedBytes: number;
  externalBytes: number;
  arrayBuffersBytes: number;
  /** The run's wasm memory as it ended (its heap grows as it needs; freed with the instance). */
  wasmMemoryBytes: number;
}
