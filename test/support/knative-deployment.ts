// The whole deployment on the test control plane: etcd + kube-apiserver (control-plane.ts), Knative's
// controllers (knative-system.ts), the stand-ins for what cannot run here (stand-ins.ts), the Secrets
// an operator creates by hand (docs/deploy.md), then the committed scripts/deploy.sh with the built
// kubectl and kn on PATH and SKIP_IMAGES=1.
//
// test/knative-cluster.test.ts asserts what Knative made of it; test/knative-adapter.test.ts takes the
// receive adapters' env from the Deployments eventing-rabbitmq's controller made. Whichever of the two
// runs first records those Deployments in a file keyed by everything that shapes them (manifests,
// deploy.sh, pinned versions, this code), so the other reuses them, in either order.
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { parseAllDocuments, stringify } from 'yaml';
import { startControlPlane, type ControlPlane } from './control-plane';
import { installKnative } from './knative-system';
import { startStandIns, type StandIns } from './stand-ins';

const root = path.resolve(__dirname, '../..');
export const namespace = 'video2mp3';
/** The image tag deploy.sh deploys: fixed, so a second run deploys the same images, as a re-run would. */
export const imageVersion = 'cluster-test';

export interface DeployRun { code: number | null; output: string }

export interface DeployedStack {
  cp: ControlPlane;
  standIns: StandIns;
  /** Runs scripts/deploy.sh as committed; resolves when it exits. */
  deploy(): Promise<DeployRun>;
  stop(): Promise<void>;
}

/** The Secrets knative/31-secrets.template.yaml lists, with its placeholder values, except the one deploy.sh derives. */
function operatorSecrets(): string {
  const docs = parseAllDocuments(fs.readFileSync(path.join(root, 'knative/31-secrets.template.yaml'), 'utf8')).map((d) => d.toJS() as { kind?: string; metadata: { name: string } } | null);
  return docs.filter((d) => d?.kind === 'Secret' && d.metadata.name !== 'video2mp3-amqp').map((d) => stringify(d)).join('---\n');
}

/** Brings up the control plane with Knative and the stand-ins, and creates what an operator creates before deploying. */
export async function startDeployedStack(): Promise<DeployedStack> {
  const cp = await startControlPlane();
  let standIns: StandIns | undefined;
  try {
    await installKnative(cp);
    standIns = startStandIns(cp.api, namespace);
    cp.kubectl(['apply', '-f', path.join(root, 'knative/00-namespace.yaml')]);
    cp.kubectl(['apply', '-f', '-'], operatorSecrets());
  } catch (err) {
    await standIns?.stop();
    await cp.stop();
    throw err;
  }
  const stand = standIns;
  return {
    cp, standIns: stand,
    deploy: () => new Promise((resolve, reject) => {
      const child = spawn('bash', [path.join(root, 'scripts/deploy.sh')], {
        cwd: root, stdio: ['ignore', 'pipe', 'pipe'],
        env: { PATH: cp.path, HOME: cp.dir, KUBECONFIG: cp.kubeconfig, SKIP_IMAGES: '1', VERSION: imageVersion, WAIT_TIMEOUT: '120s' },
      });
      let output = '';
      child.stdout.on('data', (c: Buffer) => { output += c.toString(); });
      child.stderr.on('data', (c: Buffer) => { output += c.toString(); });
      child.on('error', reject);
      child.on('close', (code) => resolve({ code, output }));
    }),
    async stop() {
      await stand.stop();
      await cp.stop();
    },
  };
}

// ---- the receive adapters' Deployments, shared between test files ----

export interface EnvVar { name: string; value?: string; valueFrom?: { secretKeyRef?: { name: string; key: string } } }
/** Per RabbitmqSource name: its receive adapter's env, and the Secrets that env reads (decoded). */
export type AdapterDeployments = Record<string, { env: EnvVar[]; secrets: Record<string, Record<string, string>> }>;

function filesIn(dir: string): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? filesIn(path.join(dir, e.name)) : [path.join(dir, e.name)])).sort();
}

function recordFile(): string {
  const inputs = [
    ...filesIn(path.join(root, 'knative')), 'scripts/deploy.sh', 'tools/knative/go.sum', 'tools/kube/go.sum',
    ...['control-plane', 'knative-system', 'stand-ins', 'knative-deployment'].map((f) => `test/support/${f}.ts`),
  ].map((f) => path.resolve(root, f));
  const hash = createHash('sha256');
  for (const f of inputs) hash.update(f).update(fs.readFileSync(f));
  return path.join(root, 'node_modules/.cache/video2mp3', `knative-adapters-${hash.digest('hex').slice(0, 16)}.json`);
}

/** Reads each RabbitmqSource's receive-adapter Deployment (the one it owns) and records them for the other test file. */
export async function recordAdapterDeployments(cp: ControlPlane): Promise<AdapterDeployments> {
  type Deployment = { metadata: { ownerReferences?: { kind: string; name: string }[] }; spec: { template: { spec: { containers: { env?: EnvVar[] }[] } } } };
  const deployments = await cp.api.list<Deployment>(`/apis/apps/v1/namespaces/${namespace}/deployments`);
  const record: AdapterDeployments = {};
  for (const d of deployments) {
    const owner = d.metadata.ownerReferences?.find((o) => o.kind === 'RabbitmqSource');
    if (!owner) continue;
    const env = d.spec.template.spec.containers[0]!.env ?? [];
    const secrets: Record<string, Record<string, string>> = {};
    for (const name of new Set(env.flatMap((e) => (e.valueFrom?.secretKeyRef ? [e.valueFrom.secretKeyRef.name] : [])))) {
      const secret = await cp.api.get<{ data: Record<string, string> }>(`/api/v1/namespaces/${namespace}/secrets/${name}`);
      secrets[name] = Object.fromEntries(Object.entries(secret?.data ?? {}).map(([k, v]) => [k, Buffer.from(v, 'base64').toString()]));
    }
    record[owner.name] = { env, secrets };
  }
  const file = recordFile();
  fs.mkdirSync(path.dirname(file), { recursive: true });
  // Records of earlier inputs are stale for good.
  for (const old of fs.readdirSync(path.dirname(file)).filter((f) => f.startsWith('knative-adapters-'))) fs.rmSync(path.join(path.dirname(file), old));
  fs.writeFileSync(file, JSON.stringify(record, null, 2));
  return record;
}

/**
 * The receive adapters' Deployments as eventing-rabbitmq's controller made them from knative/: from the
 * record when one matches the current inputs, else by deploying once on a fresh control plane.
 */
export async function adapterDeployments(): Promise<AdapterDeployments> {
  const file = recordFile();
  if (fs.existsSync(file)) return JSON.parse(fs.readFileSync(file, 'utf8')) as AdapterDeployments;
  const stack = await startDeployedStack();
  try {
    const run = await stack.deploy();
    if (run.code !== 0) throw new Error(`scripts/deploy.sh failed (${run.code}):\n${run.output}\n${stack.cp.logs()}`);
    return await recordAdapterDeployments(stack.cp);
  } finally {
    await stack.stop();
  }
}

/**
 * Receive adapter `name`'s env as its Deployment sets it, with only what a cluster resolves differently
 * replaced by `local`: the broker URL (from the Secret the controller made out of the default user),
 * the vhost when the source names none, and the sink's URL. Any other variable from a Secret fails.
 */
export function deployedAdapterEnv(record: AdapterDeployments, name: string, local: { rabbitUrl: string; vhost: string; sink: string }): Record<string, string> {
  const deployed = record[name];
  if (!deployed) throw new Error(`no receive-adapter Deployment for RabbitmqSource ${name} (have: ${Object.keys(record).join(', ')})`);
  const env: Record<string, string> = {};
  for (const e of deployed.env) {
    if (e.name === 'RABBIT_URL' && e.valueFrom?.secretKeyRef) env.RABBIT_URL = local.rabbitUrl;
    else if (e.valueFrom) throw new Error(`${name}: ${e.name} comes from ${JSON.stringify(e.valueFrom)}; give the test's value`);
    else env[e.name] = e.value ?? '';
  }
  if (!env.RABBIT_URL || !env.K_SINK) throw new Error(`${name}: the Deployment has no RABBIT_URL or K_SINK: ${JSON.stringify(deployed.env)}`);
  env.K_SINK = local.sink;
  if (!env.RABBITMQ_VHOST) env.RABBITMQ_VHOST = local.vhost;
  return env;
}
