// The messages between lib/media/transcode.ts (the caller's thread) and lib/media/worker.ts (the
// thread running ffmpeg.wasm). Types only, so neither side imports the other.
import type { Mp3Options } from './options';

export type TranscodeFailure = 'no-audio' | 'corrupt' | 'unsupported' | 'too-long' | 'output-too-large';

export interface JobRequest {
  id: number;
  input: Uint8Array;
  options: Mp3Options;
  maxDurationSeconds: number;
  maxOutputBytes: number;
}

export type JobReply =
  | { id: number; kind: 'progress'; timeSeconds: number; percent: number }
  | { id: number; kind: 'done'; mp3: Uint8Array; durationSeconds: number; memory: WorkerMemory }
  | { id: number; kind: 'failed'; reason: TranscodeFailure; detail: FailureDetail }
  | { id: number; kind: 'invalid'; message: string }
  | { id: number; kind: 'crashed'; message: string };

export interface FailureDetail {
  durationSeconds?: number;
  limit?: number;
  empty?: boolean;
}

export interface WorkerMemory {
  heapUsedBytes: number;
  externalBytes: number;
  arrayBuffersBytes: number;
}

