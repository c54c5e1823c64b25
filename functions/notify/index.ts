import * as ff from '@google-cloud/functions-framework';
import { getDb } from '../../lib/db';
import { eventTypes } from '../../lib/events';
import { handleEvent } from '../../lib/http';
import { getMailer } from '../../lib/mailer';
import { notifyOutcome } from '../../lib/notify';

// Registered with ff.http, not ff.cloudEvent, so it can answer 503 (retry) or 400 (dead-letter).
ff.http('notify', handleEvent([eventTypes.conversionSucceeded, eventTypes.conversionFailed], async (event) =>
  notifyOutcome(await getDb(), await getMailer(), event)));
