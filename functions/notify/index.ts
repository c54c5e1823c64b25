import { handleEvent } from '../../lib/http/events';
import { createRouter, handle } from '../../lib/http/router';
import { getMailer } from '../../lib/mail/mailer';
import { notifyOutcome } from '../../lib/mail/notify';
import { runWebhookTick, startWebhook } from '../../lib/mail/webhook-outbox';
import { eventTypes } from '../../lib/messaging/events';
import { getDb } from '../../lib/storage/db';

const router = createRouter();

// Event routes are HTTP functions, not CloudEvent ones, so they can answer 503 (retry) or 400 (dead-letter).
// The email first, then the webhook's first attempt (its later ones are the tick's): each is recorded
// once done, so a redelivery (after either failed) repeats only what is left.
router.post('/', handleEvent([eventTypes.conversionSucceeded, eventTypes.conversionFailed], async (event) => {
  const db = await getDb();
  const mail = await notifyOutcome(db, await getMailer(), event);
  const webhook = await startWebhook(db, event);
  return webhook ? { ...mail, webhook } : mail;
}));

// The webhook tick (a PingSource every minute on Knative, a timer on the local stack): the attempts that are due.
router.post('/webhooks', handleEvent([eventTypes.maintenanceTick, eventTypes.pingSourceTick], async () => ({ webhooks: await runWebhookTick(await getDb()) })));

export const handler = handle(router);
