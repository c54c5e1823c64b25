// The machine the figures are taken on, measured by `npm run bench` before them and printed under
// them. The targets are ratios to native ffmpeg and milliseconds from a process's start, and both move
// with the host:
// - node's own start (`node -e 0`), which every cold start and readiness pays before our code runs;
// - how fast fresh memory is first touched: a cold start or an instance's start touches tens of MB,
//   and a nested VM can fault pages in ten times slower than bare metal;
// - two native ffmpeg runs at once against one alone: the parallel path's ceiling. Where the two vCPUs
//   share a core or a neighbour is busy, runs side by side are each slower, and so are the segments.
import { median, run } from './run';

/** Runs the command and returns how long it took and what it printed. */
async function timed(cmd: string, args: string[]): Promise<{ ms: number; out: string }> {
  const started = performance.now();
  const out = await run(cmd, args);
  return { ms: performance.now() - started, out };
}

/** Measures the three figures (median of three each), the pair on `clip` with native `ffmpeg`; returns one line. */
export async function describeMachine(ffmpeg: string, clip: { name: string; file: string }): Promise<string> {
  const nodeStart: number[] = [];
  const touchMBps: number[] = [];
  const pairRatio: number[] = [];
  const MB = 128;
  const native = (out: string) => timed(ffmpeg, ['-hide_banner', '-nostdin', '-y', '-i', clip.file, '-map', '0:a:0', '-vn', '-c:a', 'libmp3lame', '-q:a', '2', '-ac', '2', '-f', 'mp3', out]);
  for (let i = 0; i < 3; i++) {
    nodeStart.push((await timed(process.execPath, ['-e', '0'])).ms);
    const touch = await timed(process.execPath, ['-e', `const b = Buffer.alloc(${MB} << 20); const t = performance.now(); b.fill(1); console.log(performance.now() - t)`]);
    touchMBps.push(MB / (Number(touch.out) / 1000));
    const alone = (await native(`${clip.file}.a.mp3`)).ms;
    const pair = await Promise.all([native(`${clip.file}.a.mp3`), native(`${clip.file}.b.mp3`)]);
    pairRatio.push(Math.max(...pair.map((p) => p.ms)) / alone);
  }
  return (
    `Machine: node -e 0 takes ${Math.round(median(nodeStart))} ms; fresh memory is touched at ${Math.round(median(touchMBps))} MB/s; ` +
    `two native ffmpeg runs at once on the ${clip.name} clip take ${median(pairRatio).toFixed(2)}× one alone (the slower of the pair; medians of 3).`
  );
}
