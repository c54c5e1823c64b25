// A real SMTP server for the notify tests (smtp-server on a local port), collecting what it receives.
import net from 'node:net';
import { simpleParser, type ParsedMail } from 'mailparser';
import { SMTPServer } from 'smtp-server';

export interface ReceivedMail {
  /** The SMTP envelope: who the server was asked to deliver to, whatever the headers say. */
  envelope: { from: string; to: string[] };
  user?: string;
  raw: string;
  parsed: ParsedMail;
}

export interface SmtpServer {
  port: number;
  /** SMTP_URL for the stack, with the credentials the server accepts. */
  url: string;
  received: ReceivedMail[];
  close(): Promise<void>;
}

export const smtpUser = 'mailer';
export const smtpPass = 's3cret pass';

/** SMTP_URL for a server on `port`, with the credentials startSmtp accepts. */
export const smtpUrl = (port: number) => `smtp://${encodeURIComponent(smtpUser)}:${encodeURIComponent(smtpPass)}@127.0.0.1:${port}`;

/**
 * Starts an SMTP server that requires AUTH with smtpUser/smtpPass (so the credentials in SMTP_URL
 * are tested), offers no STARTTLS, and answers RCPT TO with the reply code `refuse` returns for an
 * address (550: no such user; 451: try again later), or accepts it.
 */
export async function startSmtp(opts: { port?: number; refuse?: (address: string) => number | undefined } = {}): Promise<SmtpServer> {
  const received: ReceivedMail[] = [];
  const server = new SMTPServer({
    disabledCommands: ['STARTTLS'],
    allowInsecureAuth: true,
    logger: false,
    onAuth(auth, _session, callback) {
      if (auth.username === smtpUser && auth.password === smtpPass) callback(null, { user: auth.username });
      else callback(Object.assign(new Error('Invalid username or password'), { responseCode: 535 }));
    },
    onRcptTo(address, _session, callback) {
      const code = opts.refuse?.(address.address);
      if (code) {
        const text = code >= 500 ? '5.1.1 No such user here' : '4.7.1 Greylisted, try again later';
        callback(Object.assign(new Error(text), { responseCode: code }));
        return;
      }
      callback();
    },
    onData(stream, session, callback) {
      const chunks: Buffer[] = [];
      stream.on('data', (c: Buffer) => chunks.push(c));
      stream.on('end', () => {
        const raw = Buffer.concat(chunks).toString('utf8');
        simpleParser(raw).then((parsed) => {
          received.push({
            envelope: {
              from: session.envelope.mailFrom ? session.envelope.mailFrom.address : '',
              to: session.envelope.rcptTo.map((r) => r.address),
            },
            user: session.user as string | undefined,
            raw,
            parsed,
          });
          callback();
        }, callback);
      });
    },
  });
  const port = opts.port ?? 0;
  await new Promise<void>((resolve, reject) => {
    server.server.once('error', reject);
    server.listen(port, '127.0.0.1', () => resolve());
  });
  const bound = (server.server.address() as net.AddressInfo).port;
  return {
    port: bound,
    url: smtpUrl(bound),
    received,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
