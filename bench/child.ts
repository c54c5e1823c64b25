// The benchmark's fresh-process measurements (bench/convert.ts), bundled by it beside the built
// converter (dist/convert/bench-child.js) and run with plain node: the instances' threads then load
// dist/convert/transcode-worker.js as deployed, not TypeScript through tsx, whose compiler in every
// thread would add its own time and memory to what is measured.
//   --ready N [F]      time from before loading the converter until N instances are compiled and warmed;
//                      then, given F, the time of one conversion of F right after (the first job a
//                      converter started from zero runs)
//   --convert-large F  one conversion of F with one instance per core: its time and the peak RSS
import fs from 'node:fs';
import os from 'node:os';

const LIMITS = { maxDurationSeconds: 4 * 3600, maxOutputBytes: 1024 * 1024 * 1024 };

async function ready(parallelism: number, file?: string): Promise<void> {
  const started = performance.now();
  const { createTranscoder } = await import('../lib/media/transcode');
  const transcoder = createTranscoder({ ...LIMITS, parallelism });
  await transcoder.ready();
  const ms = performance.now() - started;
  let firstMs: number | undefined;
  if (file) {
    const first = performance.now();
    await transcoder.transcode(file, `${file}.${process.pid}.mp3`, { quality: 2 });
    firstMs = performance.now() - first;
    fs.rmSync(`${file}.${process.pid}.mp3`, { force: true });
  }
  await transcoder.close();
  process.stdout.write(`${JSON.stringify({ ms, firstMs })}\n`);
}

async function convertLarge(file: string): Promise<void> {
  const { createTranscoder } = await import('../lib/media/transcode');
  const transcoder = createTranscoder({ ...LIMITS, parallelism: os.availableParallelism() });
  await transcoder.ready();
  const started = performance.now();
  const result = await transcoder.transcode(file, `${file}.mp3`, { quality: 2 });
  const ms = performance.now() - started;
  await transcoder.close();
  fs.rmSync(`${file}.mp3`, { force: true });
  process.stdout.write(`${JSON.stringify({ ms, maxRssMB: process.resourceUsage().maxRSS / 1024, segments: result.segments })}\n`);
}

const [flag, arg] = process.argv.slice(2);
(flag === '--ready' ? ready(Number(arg), process.argv[4]) : flag === '--convert-large' ? convertLarge(arg!) : Promise.reject(new Error(`unknown mode ${flag}`)))
  .catch((error: unknown) => {
    console.error(error);
    process.exitCode = 1;
  });
