import { getConfig } from '../../lib/core/config';
import { handleEvent } from '../../lib/http/events';
import { eventTypes } from '../../lib/messaging/events';
import { getBroker } from '../../lib/messaging/queue';
import { convertJob, getTranscoder } from '../../lib/pipeline/conversion';
import { getBlobs } from '../../lib/storage/blobs';
import { getDb } from '../../lib/storage/db';

// An HTTP function, not a CloudEvent one, so it can answer 503 (retry) or 400 (dead-letter).
export const handler = handleEvent([eventTypes.videoUploaded], async (event) => {
  const deps = { db: await getDb(), blobs: await getBlobs(), broker: await getBroker(), transcoder: await getTranscoder(), config: getConfig() };
  return { jobId: event.data.jobId, outcome: await convertJob(deps, event.data) };
});

// The instances are created and warmed at start, so the first event pays no compile or JIT warm-up;
// a failure here shows again, and is answered, on the first event.
void getTranscoder().then((t) => t.ready()).catch(() => undefined);
