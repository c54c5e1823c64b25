import { handleEvent } from '../../lib/http/events';
import { getMailer } from '../../lib/mail/mailer';
import { notifyOutcome } from '../../lib/mail/notify';
import { deliverWebhook } from '../../lib/mail/webhook';
import { eventTypes } from '../../lib/messaging/events';
import { getDb } from '../../lib/storage/db';

// An HTTP function, not a CloudEvent one, so it can answer 503 (retry) or 400 (dead-letter).
// The email first, then the webhook: each is recorded once done, so a redelivery (after either
// failed) repeats only what is left.
export const handler = handleEvent([eventTypes.conversionSucceeded, eventTypes.conversionFailed], async (event) => {
  const db = await getDb();
  const mail = await notifyOutcome(db, await getMailer(), event);
  const webhook = await deliverWebhook(db, event);
  return webhook ? { ...mail, webhook } : mail;
});
