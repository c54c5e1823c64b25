// `npm run load [-- --replicas 3 --users 6 --batch 5 --webhook-users 1 --burst 40 --time 600]`: every
// bundled function as R processes on MariaDB, RabbitMQ, FerretDB and an SMTP server (load/cluster.ts),
// U users uploading batches, a few hostile ones, then a table of figures and invariants. Loopback only;
// bounded by --time. Exits 1 when an invariant did not hold.
import { parseArgs } from 'node:util';
import { runLoad, type LoadResult } from './run';

const { values } = parseArgs({
  options: {
    replicas: { type: 'string', default: '1' },
    users: { type: 'string', default: '6' },
    batch: { type: 'string', default: '5' },
    'webhook-users': { type: 'string', default: '1' },
    burst: { type: 'string', default: '40' },
    time: { type: 'string', default: '600' },
  },
});

const fmt = (n: number, digits = 0) => (Number.isFinite(n) ? n.toFixed(digits) : '–');

function print(r: LoadResult): void {
  const o = r.options;
  console.log(`\nLoad: ${o.replicas} replica(s) of each function, ${o.users} users × ${o.batch} videos (+${o.hostileWebhookUsers} with a failing webhook), ${o.passwordBurst} wrong passwords at once`);
  console.log(`\n| jobs | done | failed | span | jobs/min | 429s waited out |\n|---|---|---|---|---|---|`);
  console.log(`| ${r.jobs.accepted} | ${r.jobs.done} | ${r.jobs.failed} | ${fmt(r.jobs.seconds, 1)} s | ${fmt(r.jobs.perMinute, 1)} | ${r.waits429.count} (${fmt(r.waits429.seconds)} s) |`);
  console.log(`\n| API call | n | p50 ms | p99 ms | non-2xx |\n|---|---|---|---|---|`);
  for (const a of r.api) console.log(`| ${a.label} | ${a.count} | ${fmt(a.p50)} | ${fmt(a.p99)} | ${a.non2xx} |`);
  console.log(`\n| user | uploads by | jobs | queue wait p50 s | p99 s |\n|---|---|---|---|---|`);
  for (const q of r.queueWait) console.log(`| ${q.user} | ${q.kind} | ${q.jobs} | ${fmt(q.p50, 1)} | ${fmt(q.p99, 1)} |`);
  console.log(`\nMail after the job ended (users without a webhook): p50 ${fmt(r.mailDelay.p50, 1)} s, p99 ${fmt(r.mailDelay.p99, 1)} s`);
  console.log('\n| invariant | held | |\n|---|---|---|');
  for (const i of r.invariants) console.log(`| ${i.name} | ${i.held ? 'yes' : '**NO**'} | ${i.detail} |`);
}

runLoad({
  replicas: Number(values.replicas),
  users: Number(values.users),
  batch: Number(values.batch),
  hostileWebhookUsers: Number(values['webhook-users']),
  passwordBurst: Number(values.burst),
  timeLimitSeconds: Number(values.time),
  log: (line) => console.log(JSON.stringify({ time: new Date().toISOString(), msg: line })),
}).then((result) => {
  print(result);
  if (result.invariants.some((i) => !i.held)) process.exitCode = 1;
}, (err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
