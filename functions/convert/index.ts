import { getConfig } from '../../lib/core/config';
import { handleEvent } from '../../lib/http/events';
import { createRouter, handle } from '../../lib/http/router';
import { eventTypes } from '../../lib/messaging/events';
import { getBroker } from '../../lib/messaging/queue';
import { convertJob, getTranscoder } from '../../lib/pipeline/conversion';
import { measureJobs } from '../../lib/pipeline/job-stats';
import { reconcile } from '../../lib/pipeline/reconcile';
import { sweepExpired } from '../../lib/pipeline/retention';
import { getBlobs } from '../../lib/storage/blobs';
import { getDb } from '../../lib/storage/db';

const router = createRouter();

// Event routes are HTTP functions, not CloudEvent ones, so they can answer 503 (retry) or 400 (dead-letter).
router.post('/', handleEvent([eventTypes.videoUploaded], async (event) => {
  const deps = { db: await getDb(), blobs: await getBlobs(), broker: await getBroker(), transcoder: await getTranscoder(), config: getConfig() };
  return { jobId: event.data.jobId, outcome: await convertJob(deps, event.data) };
}));

// The scheduled maintenance tick (a PingSource on Knative, a timer on the local stack): first the
// retention sweep, then the reconciler, so a swept job is not re-published; then the job gauges.
router.post('/maintenance', handleEvent([eventTypes.maintenanceTick, eventTypes.pingSourceTick], async () => {
  const deps = { db: await getDb(), blobs: await getBlobs(), broker: await getBroker(), config: getConfig() };
  return { swept: await sweepExpired(deps), reconciled: await reconcile(deps), jobs: await measureJobs(deps) };
}));

export const handler = handle(router);

/**
 * Run once the function serves (its bundle's entry, `npm start`): the instances are created and warmed
 * then, so the first event pays no compile or JIT warm-up. A failure here shows again, and is
 * answered, on the first event.
 */
export const warmUp = (): Promise<void> => getTranscoder().then((t) => t.ready()).catch(() => undefined);
