// Progress on stderr: bars on a terminal (cli-progress), plain lines otherwise (logs, CI, pipes).
import cliProgress from 'cli-progress';

export interface Task {
  /** `percent` of the current `phase` (uploading, queued, converting, downloading, done…). */
  update(phase: string, percent?: number): void;
}

export interface Reporter {
  task(name: string): Task;
  note(line: string): void;
  stop(): void;
}

function barReporter(stream: NodeJS.WriteStream): Reporter {
  const bars = new cliProgress.MultiBar({
    stream,
    format: '{bar} {percentage}% | {phase} | {name}',
    hideCursor: true,
    clearOnComplete: false,
    stopOnComplete: false,
    barsize: 24,
    fps: 10,
  }, cliProgress.Presets.shades_classic);
  return {
    task(name) {
      const bar = bars.create(100, 0, { name, phase: 'starting' });
      return { update: (phase, percent) => bar.update(percent ?? 0, { phase }) };
    },
    note: (line) => bars.log(`${line}\n`),
    stop: () => bars.stop(),
  };
}

function lineReporter(stream: NodeJS.WriteStream): Reporter {
  return {
    task(name) {
      let last = '';
      return {
        update(phase, percent) {
          // A line per phase, and per quarter within one: enough to follow, not a flood.
          const step = percent === undefined ? '' : ` ${Math.floor(percent / 25) * 25}%`;
          const line = `${name}: ${phase}${step}`;
          if (line !== last) stream.write(`${line}\n`);
          last = line;
        },
      };
    },
    note: (line) => stream.write(`${line}\n`),
    stop: () => undefined,
  };
}

export const createReporter = (stream: NodeJS.WriteStream = process.stderr): Reporter =>
  (stream.isTTY ? barReporter(stream) : lineReporter(stream));

/** Waits `seconds`, reporting the share of the wait that has passed, once a second. */
export async function countdown(seconds: number, onProgress: (percent: number) => void): Promise<void> {
  const started = Date.now();
  const total = seconds * 1000;
  for (let passed = 0; passed < total; passed = Date.now() - started) {
    onProgress((passed / total) * 100);
    await new Promise((r) => setTimeout(r, Math.min(1000, total - passed)));
  }
  onProgress(100);
}
