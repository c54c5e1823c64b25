import { handleEvent } from '../../lib/http/events';
import { getMailer } from '../../lib/mail/mailer';
import { notifyOutcome } from '../../lib/mail/notify';
import { eventTypes } from '../../lib/messaging/events';
import { getDb } from '../../lib/storage/db';

// An HTTP function, not a CloudEvent one, so it can answer 503 (retry) or 400 (dead-letter).
export const handler = handleEvent([eventTypes.conversionSucceeded, eventTypes.conversionFailed], async (event) =>
  notifyOutcome(await getDb(), await getMailer(), event));
