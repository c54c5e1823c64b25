import * as ff from '@google-cloud/functions-framework';
import { getBlobs } from '../../lib/blobs';
import { getConfig } from '../../lib/config';
import { convertJob, getTranscoder } from '../../lib/conversion';
import { getDb } from '../../lib/db';
import { eventTypes } from '../../lib/events';
import { handleEvent } from '../../lib/http';
import { getBroker } from '../../lib/queue';

ff.http('convert', handleEvent([eventTypes.videoUploaded], async (event) => {
  const deps = { db: await getDb(), blobs: await getBlobs(), broker: await getBroker(), transcoder: await getTranscoder(), config: getConfig() };
  return { jobId: event.data.jobId, outcome: await convertJob(deps, event.data) };
}));
