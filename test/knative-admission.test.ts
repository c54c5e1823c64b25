// Knative's own admission on the deployment, without a cluster: .bin/knative-admission
// (tools/knative-admission, built by scripts/knative-admission.sh) decodes every object strictly and runs
// serving's, eventing's and eventing-rabbitmq's defaulting and validation at v0.48.0 with the webhooks'
// context, plus the sink and delivery checks RabbitmqSource's validation leaves out; with -kn-apply it
// also checks each Service as scripts/deploy.sh's `kn service apply` makes it, through kn's own code. No
// error and no warning may pass. Under CI a missing binary fails the run.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { parseAllDocuments, stringify } from 'yaml';
import { functionNames } from '../lib/core/config';

const root = path.resolve(__dirname, '..');
const binary = path.join(root, '.bin/knative-admission');

function binaryAvailable(): boolean {
  if (fs.existsSync(binary)) return true;
  const message = '.bin/knative-admission is missing: build it with bash scripts/knative-admission.sh';
  if (process.env.CI === 'true') throw new Error(`${message} (CI=true: the admission tests must not be skipped)`);
  console.warn(`[tests] ${message}; the Knative admission tests are left out (they run under CI)`);
  return false;
}

interface Run { status: number | null; stdout: string; stderr: string }

function admission(...args: string[]): Run {
  const run = spawnSync(binary, args, { cwd: root, encoding: 'utf8', timeout: 60_000 });
  if (run.error) throw run.error;
  return { status: run.status, stdout: run.stdout, stderr: run.stderr };
}

const serviceFiles = functionNames.map((fn) => `knative/40-services/${fn}.yaml`);
const manifestFiles = [
  ...fs.readdirSync(path.join(root, 'knative')).filter((f) => f.endsWith('.yaml')).sort().map((f) => `knative/${f}`),
  ...serviceFiles,
];

const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'knative-admission-'));
afterAll(() => fs.rmSync(scratch, { recursive: true, force: true }));

type Doc = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

/** Writes a copy of a manifest with `change` applied to the document of that kind, for one wrong input. */
function broken(file: string, kind: string, change: (doc: Doc) => void): string {
  const docs = parseAllDocuments(fs.readFileSync(path.join(root, file), 'utf8')).map((d) => d.toJSON() as Doc);
  const target = docs.find((d) => d.kind === kind);
  if (!target) throw new Error(`${file} holds no ${kind}`);
  change(target);
  // Under its own name: deploy.sh names each Service after its file.
  const out = path.join(fs.mkdtempSync(path.join(scratch, 'case-')), path.basename(file));
  fs.writeFileSync(out, docs.map((d) => stringify(d)).join('---\n'));
  return out;
}

describe.runIf(binaryAvailable())('Knative admission (serving, eventing, eventing-rabbitmq v0.48.0, and kn)', () => {
  it('when every manifest in knative/ is checked, then each is admitted as a create and as a re-apply, with no error and no warning', () => {
    const run = admission(...manifestFiles);
    expect(run.stderr).toBe('');
    expect(run.status).toBe(0);
    const knativeObjects = [
      ...functionNames.map((fn) => `video2mp3/Service/${fn}`),
      'video2mp3/RabbitmqSource/video', 'video2mp3/RabbitmqSource/mp3', 'video2mp3/PingSource/maintenance',
    ];
    for (const name of knativeObjects) {
      expect(run.stdout).toMatch(new RegExp(`: ${name}: ok \\(strict decoding, defaulting and validation as a create and as a re-apply[;)]`));
    }
    // As Knative's defaulting leaves them: the timeouts queue-proxy and the activator enforce.
    for (const fn of ['convert', 'upload']) {
      expect(run.stdout).toMatch(new RegExp(`Service/${fn}: ok .*defaulted: timeoutSeconds=600 responseStartTimeoutSeconds=600 `));
    }
    // Kubernetes' own kinds are decoded strictly; the operators' kinds are left to their CRD schemas.
    expect(run.stdout).toMatch(/knative\/30-config\.yaml: video2mp3\/ConfigMap\/video2mp3-config: ok \(strict decoding\)/);
    expect(run.stdout).toMatch(/knative\/11-queues\.yaml: video2mp3\/Queue\/\S+: not checked here \(left to the RabbitMQ operators' CRD schemas/);
  });

  it('when scripts/deploy.sh deploys each function with kn service apply, then the Service kn makes is admitted as a create and as the next deploy\'s update', () => {
    const run = admission('-kn-apply', ...serviceFiles);
    expect(run.stderr).toBe('');
    expect(run.status).toBe(0);
    for (const fn of functionNames) {
      expect(run.stdout).toContain(`knative/40-services/${fn}.yaml: video2mp3/Service/${fn} as kn service apply makes it: ok`);
    }
  });

  const wrongInputs: [string, string, string, (doc: Doc) => void, RegExp][] = [
    ['a negative containerConcurrency', 'knative/40-services/convert.yaml', 'Service',
      (d) => { d.spec.template.spec.containerConcurrency = -1; },
      /Service\/convert: error \(create\): expected 0 <= -1 <= 1000: spec\.template\.spec\.containerConcurrency/],
    ['a timeoutSeconds over Knative\'s maximum', 'knative/40-services/upload.yaml', 'Service',
      (d) => { d.spec.template.spec.timeoutSeconds = 601; },
      /Service\/upload: error \(create\): expected 0 <= 601 <= 600: spec\.template\.spec\.timeoutSeconds/],
    ['a responseStartTimeoutSeconds over the request timeout', 'knative/40-services/convert.yaml', 'Service',
      (d) => { d.spec.template.spec.responseStartTimeoutSeconds = 700; },
      /Service\/convert: error \(create\): expected 0 <= 700 <= 600: spec\.template\.spec\.responseStartTimeoutSeconds/],
    ['a misspelt field in a Service', 'knative/40-services/convert.yaml', 'Service',
      (d) => { const c = d.spec.template.spec.containers[0]; c.imagePulPolicy = c.imagePullPolicy; delete c.imagePullPolicy; },
      /Service\/convert: error: unknown field "spec\.template\.spec\.containers\[0\]\.imagePulPolicy"/],
    ['a misspelt field in a Service\'s metadata', 'knative/40-services/auth.yaml', 'Service',
      (d) => { d.metadata.label = d.metadata.labels; delete d.metadata.labels; },
      /Service\/auth: error: unknown field "metadata\.label"/],
    ['a misspelt field in a RabbitmqSource', 'knative/50-sources.yaml', 'RabbitmqSource',
      (d) => { d.spec.rabbitmqResourcesConfig.paralelism = 4; delete d.spec.rabbitmqResourcesConfig.parallelism; },
      /RabbitmqSource\/video: error: unknown field "spec\.rabbitmqResourcesConfig\.paralelism"/],
    ['a bad cron in the PingSource', 'knative/55-maintenance.yaml', 'PingSource',
      (d) => { d.spec.schedule = '*/5 * * *'; },
      /PingSource\/maintenance: error \(create\): invalid value: .*: spec\.schedule/],
    ['a bad backoffDelay', 'knative/50-sources.yaml', 'RabbitmqSource',
      (d) => { d.spec.delivery.backoffDelay = '0.5s'; },
      /RabbitmqSource\/video: error \(create\): invalid value: 0\.5s: spec\.delivery\.backoffDelay/],
    ['a negative backoffDelay', 'knative/50-sources.yaml', 'RabbitmqSource',
      (d) => { d.spec.delivery.backoffDelay = '-PT1S'; },
      /RabbitmqSource\/video: error \(create\): invalid value: -PT1S \(negative\): spec\.delivery\.backoffDelay/],
    ['a backoffPolicy that is neither linear nor exponential', 'knative/50-sources.yaml', 'RabbitmqSource',
      (d) => { d.spec.delivery.backoffPolicy = 'fibonacci'; },
      /RabbitmqSource\/video: error \(create\): invalid value: fibonacci: spec\.delivery\.backoffPolicy/],
    ['a negative retry', 'knative/50-sources.yaml', 'RabbitmqSource',
      (d) => { d.spec.delivery.retry = -1; },
      /RabbitmqSource\/video: error \(create\): invalid value: -1: spec\.delivery\.retry/],
    ['a sink ref without kind', 'knative/50-sources.yaml', 'RabbitmqSource',
      (d) => { delete d.spec.sink.ref.kind; },
      /RabbitmqSource\/video: error \(create\): missing field\(s\): spec\.sink\.ref\.kind/],
    ['no sink', 'knative/50-sources.yaml', 'RabbitmqSource',
      (d) => { delete d.spec.sink; },
      /RabbitmqSource\/video: error \(create\): missing field\(s\): spec\.sink/],
    ['a container without seccompProfile', 'knative/40-services/notify.yaml', 'Service',
      (d) => { delete d.spec.template.spec.containers[0].securityContext.seccompProfile; },
      /Service\/notify: warning \(create\): Kubernetes default value is insecure, Knative may default this to secure in a future release: spec\.template\.spec\.containers\[0\]\.securityContext\.seccompProfile/],
    ['an unknown Knative kind', 'knative/55-maintenance.yaml', 'PingSource',
      (d) => { d.kind = 'PingSorce'; },
      /PingSorce\/maintenance: error: sources\.knative\.dev\/v1, Kind=PingSorce is not a Knative kind/],
    ['a misspelt field in a core kind', 'knative/30-config.yaml', 'ConfigMap',
      (d) => { d.date = d.data; delete d.data; },
      /ConfigMap\/video2mp3-config: error: unknown field "date"/],
  ];

  it.each(wrongInputs)('when a manifest has %s, then the check fails naming the object and the field', (_, file, kind, change, expected) => {
    const run = admission(broken(file, kind, change));
    expect(run.stderr).toMatch(expected);
    expect(run.status).toBe(1);
  });

  it('when convert leaves responseStartTimeoutSeconds out, then Knative\'s defaulting sets it to 300 s, below the conversion\'s own 540 s', () => {
    const file = broken('knative/40-services/convert.yaml', 'Service', (d) => { delete d.spec.template.spec.responseStartTimeoutSeconds; });
    expect(admission(file).stdout).toMatch(/Service\/convert: ok .*defaulted: timeoutSeconds=600 responseStartTimeoutSeconds=300 /);
  });

  it('when a Service file has a misspelt field, then kn drops it silently but the check of the file does not', () => {
    const file = broken('knative/40-services/download.yaml', 'Service', (d) => { d.spec.template.spec.timeoutSecond = 30; });
    const run = admission('-kn-apply', file);
    expect(run.status).toBe(1);
    expect(run.stderr).toMatch(/Service\/download: error: unknown field "spec\.template\.spec\.timeoutSecond"/);
    expect(run.stdout).toMatch(/Service\/download as kn service apply makes it: ok/);
  });

  it('when a Service file holds a Service named otherwise, then kn refuses to deploy it', () => {
    const file = broken('knative/40-services/notify.yaml', 'Service', (d) => { d.metadata.name = 'notifier'; });
    const run = admission('-kn-apply', file);
    expect(run.status).toBe(1);
    expect(run.stderr).toMatch(/video2mp3\/Service\/notify \(kn service apply\): error \(create\): .*provided service name 'notify' doesn't match name from file 'notifier'/);
  });

  it('when a Service file names its revision, then the file alone is admitted but the next deploy\'s update is refused', () => {
    // kn changes the revision template on every deploy (image, config-sha) while the name in the file
    // stays: Knative refuses a changed template under an unchanged revision name. Only the kn path sees it.
    const file = broken('knative/40-services/auth.yaml', 'Service', (d) => { d.spec.template.metadata.name = 'auth-pinned'; });
    expect(admission(file).status).toBe(0);
    const run = admission('-kn-apply', file);
    expect(run.status).toBe(1);
    expect(run.stderr).toMatch(/video2mp3\/Service\/auth \(kn service apply\): error \(update\): Saw the following changes without a name change/);
  });
});
