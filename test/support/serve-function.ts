// Serves one function in its own process, as its deployed bundle does: `node --import tsx
// test/support/serve-function.ts <name>` with the configuration in the environment. Tests use it to
// kill a function mid-job.
import { handlers } from '../../functions/all';
import { functionNames, type FunctionName } from '../../lib/core/config';
import { serveFunction } from '../../lib/http/serve';

const name = process.argv[2] as FunctionName;
if (!functionNames.includes(name)) throw new Error(`unknown function ${name}`);
void serveFunction(name, handlers[name]);
