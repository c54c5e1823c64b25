// Every function's handler by name, for the local stack (scripts/start.ts) and the tests, which serve
// all five in one process. A deployed bundle imports only its own function.
import type { FunctionName } from '../lib/core/config';
import type { Mount } from '../lib/http/serve';
import { handler as auth } from './auth';
import { handler as convert } from './convert';
import { handler as download } from './download';
import { handler as notify } from './notify';
import { handler as upload } from './upload';

export const handlers: Record<FunctionName, Mount['handler']> = { auth, upload, download, convert, notify };
