// `npm run bench`: the conversion benchmark (bench/convert.ts), then cold starts (bench/cold-start.ts).
// `npm run bench -- --large`: the large-upload benchmark (bench/large-upload.ts) instead. One entry,
// because npm passes the arguments after `--` to the last command of a script only.
import { runColdStartBench } from './cold-start';
import { runConversionBench } from './convert';
import { runLargeUploadBench } from './large-upload';

async function run(): Promise<void> {
  if (process.argv.includes('--large')) return runLargeUploadBench();
  await runConversionBench();
  await runColdStartBench();
}

run().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
