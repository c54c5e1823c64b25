// Offline checks of the Knative deployment: every manifest in knative/ validates against its schema, the
// manifests agree with the code (settings, queues, scaling, timeouts), no secret is committed, and
// scripts/deploy.sh issues the right minikube/kubectl/kn commands — run against stand-ins on PATH that record
// their arguments (test/knative-fakes/) — and stops with a clear message when something is missing.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Service as KnativeService } from '@kubernetes-models/knative/serving.knative.dev/v1/Service';
import { PingSource } from '@kubernetes-models/knative/sources.knative.dev/v1/PingSource';
import Ajv, { type ValidateFunction } from 'ajv';
import { Deployment } from 'kubernetes-models/apps/v1/Deployment';
import { StatefulSet } from 'kubernetes-models/apps/v1/StatefulSet';
import { ConfigMap } from 'kubernetes-models/v1/ConfigMap';
import { NetworkPolicy } from 'kubernetes-models/networking.k8s.io/v1/NetworkPolicy';
import { Namespace } from 'kubernetes-models/v1/Namespace';
import { Secret } from 'kubernetes-models/v1/Secret';
import { Service as CoreService } from 'kubernetes-models/v1/Service';
import { describe, expect, it } from 'vitest';
import { parse, parseAllDocuments } from 'yaml';
import { deployedRequirements, envSchema, functionNames, loadConfig, type EnvName, type FunctionName } from '../lib/core/config';
import { queueArguments, topology } from '../lib/messaging/queue';

const root = path.resolve(__dirname, '..');
const NAMESPACE = 'video2mp3';

// ---- reading knative/ ------------------------------------------------------------------------------------

interface Meta { name: string; namespace?: string; labels?: Record<string, string>; annotations?: Record<string, string> }
interface K8sObject { apiVersion: string; kind: string; metadata: Meta; [field: string]: unknown }
interface EnvVar { name: string; value?: string; valueFrom?: { secretKeyRef?: { name: string; key: string }; configMapKeyRef?: { name: string; key: string } } }
interface Probe { httpGet?: { path?: string; port?: unknown } }
interface Container {
  name: string;
  image: string;
  ports?: { name?: string; containerPort: number }[];
  env?: EnvVar[];
  envFrom?: { configMapRef?: { name: string }; secretRef?: { name: string } }[];
  readinessProbe?: Probe;
  livenessProbe?: Probe;
  resources?: { requests?: Record<string, string>; limits?: Record<string, string> };
  volumeMounts?: { name: string; mountPath: string }[];
  securityContext?: { runAsNonRoot?: boolean; allowPrivilegeEscalation?: boolean; capabilities?: { drop?: string[] }; seccompProfile?: { type?: string } };
}
interface KService extends K8sObject {
  spec: {
    template: {
      metadata?: { annotations?: Record<string, string> };
      spec: { containerConcurrency?: number; timeoutSeconds?: number; responseStartTimeoutSeconds?: number; containers: Container[]; volumes?: { name: string; emptyDir?: { sizeLimit?: string } }[] };
    };
  };
}
interface ClusterRef { name?: string; namespace?: string }
interface Queue extends K8sObject { spec: { name: string; durable?: boolean; autoDelete?: boolean; type?: string; arguments?: Record<string, unknown>; rabbitmqClusterReference: ClusterRef } }
interface Exchange extends K8sObject { spec: { name: string; type?: string; durable?: boolean; rabbitmqClusterReference: ClusterRef } }
interface Binding extends K8sObject { spec: { source: string; destination: string; destinationType: string; routingKey: string; rabbitmqClusterReference: ClusterRef } }
interface Source extends K8sObject {
  spec: {
    rabbitmqClusterReference: ClusterRef;
    rabbitmqResourcesConfig: { queueName: string; predeclared?: boolean; parallelism?: number };
    delivery: { retry: number; backoffPolicy: string; backoffDelay: string };
    sink: { ref: { apiVersion: string; kind: string; name: string } };
  };
}
interface StatefulSetObject extends K8sObject {
  spec: { serviceName: string; template: { spec: { containers: Container[] } }; volumeClaimTemplates?: { metadata: { name: string } }[] };
}

interface Manifest { file: string; object: K8sObject }

// monitoring/ holds Prometheus rule files and a Grafana dashboard, not Kubernetes objects
// (test/monitoring.test.ts checks them).
function yamlFiles(dir: string): string[] {
  return (fs.readdirSync(dir, { recursive: true }) as string[])
    .filter((f) => f.endsWith('.yaml') && !f.startsWith('schemas') && !f.startsWith('monitoring'))
    .sort()
    .map((f) => path.join('knative', f));
}

const files = yamlFiles(path.join(root, 'knative'));
const manifests: Manifest[] = files.flatMap((file) =>
  parseAllDocuments(fs.readFileSync(path.join(root, file), 'utf8'))
    .filter((doc) => doc.contents !== null)
    .map((doc) => {
      if (doc.errors.length > 0) throw new Error(`${file}: ${doc.errors.map((e) => e.message).join('; ')}`);
      return { file, object: doc.toJS() as K8sObject };
    }));

const all = <T extends K8sObject>(kind: string, apiVersion?: string) =>
  manifests.filter((m) => m.object.kind === kind && (!apiVersion || m.object.apiVersion === apiVersion)).map((m) => m.object as T);
const one = <T extends K8sObject>(kind: string, name: string, apiVersion?: string) => {
  const found = all<T>(kind, apiVersion).filter((o) => o.metadata.name === name);
  expect(found, `${kind} ${name}`).toHaveLength(1);
  return found[0];
};
const isTemplate = (m: Manifest) => m.file.endsWith('.template.yaml');

const services = () => all<KService>('Service', 'serving.knative.dev/v1');
const service = (fn: FunctionName) => one<KService>('Service', fn, 'serving.knative.dev/v1');
const container = (fn: FunctionName) => service(fn).spec.template.spec.containers[0];
const annotations = (fn: FunctionName) => service(fn).spec.template.metadata?.annotations ?? {};
const source = (queue: string) => {
  const found = all<Source>('RabbitmqSource').filter((s) => s.spec.rabbitmqResourcesConfig.queueName === queue);
  expect(found, `RabbitmqSource for queue ${queue}`).toHaveLength(1);
  return found[0];
};
const configMap = () => one<K8sObject & { data: Record<string, string> }>('ConfigMap', 'video2mp3-config');
const templateSecrets = () => manifests.filter((m) => m.object.kind === 'Secret')
  .map((m) => m.object as K8sObject & { stringData?: Record<string, string>; data?: Record<string, string> });

/** Settings that are credentials or keys: they come from Secrets, never from the ConfigMap. */
const SECRET_SETTINGS: EnvName[] = ['DATABASE_URL', 'MONGODB_URI', 'AMQP_URL', 'SMTP_URL', 'JWT_PRIVATE_KEY', 'JWT_PUBLIC_KEY', 'LINK_SECRET'];
/** Which function each queue's source calls. */
const SINKS: Record<string, FunctionName> = { video: 'convert', mp3: 'notify' };
const PUBLIC: FunctionName[] = ['auth', 'upload', 'download'];
const CLUSTER_LOCAL: FunctionName[] = ['convert', 'notify'];
const codeDefaults = envSchema.parse({});

// ---- schemas -------------------------------------------------------------------------------------------

const ajv = new Ajv({ allErrors: true, strict: false });
ajv.addFormat('int32', { type: 'number', validate: (n: number) => Number.isInteger(n) && n >= -(2 ** 31) && n < 2 ** 31 });
ajv.addFormat('int64', { type: 'number', validate: (n: number) => Number.isSafeInteger(n) });
ajv.addFormat('date-time', (s: string) => !Number.isNaN(Date.parse(s)));

type Schema = Record<string, unknown>;

/**
 * The API server prunes fields a structural schema does not list — a misspelled key is dropped without a
 * word — so here every object that lists its properties is closed, unless it preserves unknown fields.
 */
function closed(schema: Schema): Schema {
  const out: Schema = { ...schema };
  if (out.properties && out.additionalProperties === undefined && !out['x-kubernetes-preserve-unknown-fields']) out.additionalProperties = false;
  if (out.properties) out.properties = Object.fromEntries(Object.entries(out.properties as Record<string, Schema>).map(([k, v]) => [k, closed(v)]));
  if (out.items) out.items = closed(out.items as Schema);
  if (out.additionalProperties && typeof out.additionalProperties === 'object') out.additionalProperties = closed(out.additionalProperties as Schema);
  return out;
}

const crd = (file: string): ValidateFunction => ajv.compile(closed(parse(fs.readFileSync(path.join(root, 'knative/schemas', file), 'utf8')) as Schema));
const crdValidators: Record<string, ValidateFunction> = {
  'sources.knative.dev/v1alpha1/RabbitmqSource': crd('rabbitmqsource.sources.knative.dev.v1alpha1.yaml'),
  'rabbitmq.com/v1beta1/RabbitmqCluster': crd('rabbitmqcluster.rabbitmq.com.v1beta1.yaml'),
  'rabbitmq.com/v1beta1/Queue': crd('queue.rabbitmq.com.v1beta1.yaml'),
  'rabbitmq.com/v1beta1/Exchange': crd('exchange.rabbitmq.com.v1beta1.yaml'),
  'rabbitmq.com/v1beta1/Binding': crd('binding.rabbitmq.com.v1beta1.yaml'),
};
const modelValidators: Record<string, (o: K8sObject) => void> = {
  'v1/Namespace': (o) => new Namespace(o as never).validate(),
  'v1/ConfigMap': (o) => new ConfigMap(o as never).validate(),
  'v1/Secret': (o) => new Secret(o as never).validate(),
  'v1/Service': (o) => new CoreService(o as never).validate(),
  'apps/v1/StatefulSet': (o) => new StatefulSet(o as never).validate(),
  'apps/v1/Deployment': (o) => new Deployment(o as never).validate(),
  'networking.k8s.io/v1/NetworkPolicy': (o) => new NetworkPolicy(o as never).validate(),
  'serving.knative.dev/v1/Service': (o) => new KnativeService(o as never).validate(),
  'sources.knative.dev/v1/PingSource': (o) => new PingSource(o as never).validate(),
};

function validate(o: K8sObject): string[] {
  const key = `${o.apiVersion}/${o.kind}`;
  const ajvCheck = crdValidators[key];
  if (ajvCheck) return ajvCheck(o) ? [] : (ajvCheck.errors ?? []).map((e) => `${e.instancePath} ${e.message} ${JSON.stringify(e.params)}`);
  const modelCheck = modelValidators[key];
  if (!modelCheck) return [`no schema for ${key}: add one to test/knative.test.ts`];
  try {
    modelCheck(o);
    return [];
  } catch (err) {
    return [(err as Error).message];
  }
}

const videoSource = () => structuredClone(source('video'));

describe('knative/ manifests', () => {
  it('when read, then every file parses and every object has a kind, a name and the video2mp3 namespace', () => {
    expect(files).toContain('knative/00-namespace.yaml');
    for (const { file, object } of manifests) {
      expect(object.apiVersion, file).toEqual(expect.any(String));
      expect(object.kind, file).toEqual(expect.any(String));
      expect(object.metadata?.name, file).toEqual(expect.any(String));
      if (object.kind !== 'Namespace') expect(object.metadata.namespace, `${file} ${object.metadata.name}`).toBe(NAMESPACE);
    }
  });

  it.each(manifests.map((m) => [`${m.file} ${m.object.kind}/${m.object.metadata.name}`, m.object] as const))(
    'when %s is validated against its schema, then it passes',
    (_name, object) => {
      expect(validate(object)).toEqual([]);
    },
  );

  it.each([
    ['a misspelled field', (s: Source) => { Object.assign(s.spec, { rabbitmqResourceConfig: s.spec.rabbitmqResourcesConfig }); }],
    ['parallelism 0', (s: Source) => { s.spec.rabbitmqResourcesConfig.parallelism = 0; }],
    ['a string where retry is a number', (s: Source) => { Object.assign(s.spec.delivery, { retry: '5' }); }],
    ['no sink', (s: Source) => { delete (s.spec as Partial<Source['spec']>).sink; }],
  ])('when a RabbitmqSource has %s, then its CRD schema rejects it (the schemas are not vacuous)', (_case, spoil) => {
    const s = videoSource();
    spoil(s);
    expect(validate(s)).not.toEqual([]);
  });

  it.each([
    ['Queue', { spec: { durable: true, rabbitmqClusterReference: { name: 'rabbitmq' } } }],
    ['Binding', { spec: { destinationType: 'queues', rabbitmqClusterReference: { name: 'rabbitmq' } } }],
    ['RabbitmqCluster', { spec: { replica: 1 } }],
  ])('when a %s is malformed, then its CRD schema rejects it', (kind, body) => {
    expect(validate({ apiVersion: 'rabbitmq.com/v1beta1', kind, metadata: { name: 'x', namespace: NAMESPACE }, ...body })).not.toEqual([]);
  });

  it('when a Knative Service has a wrongly typed field, then its model rejects it', () => {
    const s = structuredClone(service('convert'));
    Object.assign(s.spec.template.spec, { containerConcurrency: 'one' });
    expect(validate(s)).not.toEqual([]);
  });

  it('when a revision is annotated, then every key is one Knative reads (the models do not check keys)', () => {
    const known = new Set(['min-scale', 'max-scale', 'initial-scale', 'target', 'metric', 'target-utilization-percentage',
      'scale-to-zero-pod-retention-period', 'activation-scale', 'window', 'scale-down-delay', 'panic-window-percentage',
      'panic-threshold-percentage', 'class'].map((k) => `autoscaling.knative.dev/${k}`).concat(['prometheus.io/scrape', 'prometheus.io/port', 'prometheus.io/path']));
    for (const s of services()) {
      for (const key of Object.keys(s.spec.template.metadata?.annotations ?? {})) expect(known, `${s.metadata.name}: ${key}`).toContain(key);
    }
  });
});

describe('manifests and the code agree', () => {
  it('when a function is scraped, then its annotations name the metrics port the code listens on, which Knative neither declares nor routes', () => {
    for (const fn of functionNames) {
      expect(service(fn).spec.template.metadata?.annotations, fn).toMatchObject({
        'prometheus.io/scrape': 'true', 'prometheus.io/port': String(codeDefaults.METRICS_PORT), 'prometheus.io/path': '/metrics',
      });
      // Knative allows one containerPort: the routed one. The metrics port must not be it.
      expect(container(fn).ports?.map((p) => p.containerPort), fn).toEqual([Number(configMap().data.PORT ?? codeDefaults.PORT)]);
      expect(codeDefaults.METRICS_PORT).not.toBe(codeDefaults.PORT);
    }
  });

  it('when the functions are listed, then each has a Knative Service, a container and a place in both scripts', () => {
    const folders = fs.readdirSync(path.join(root, 'functions')).filter((n) => fs.existsSync(path.join(root, 'functions', n, 'index.ts')));
    expect(functionNames).toEqual(expect.arrayContaining(folders));
    const files40 = fs.readdirSync(path.join(root, 'knative/40-services')).map((f) => f.replace(/\.yaml$/, ''));
    expect(files40.sort()).toEqual([...functionNames].sort());
    for (const fn of functionNames) {
      expect(service(fn).metadata.name).toBe(fn);
      expect(service(fn).spec.template.spec.containers).toHaveLength(1);
      expect(container(fn).image).toMatch(new RegExp(`^dev\\.local/${fn}:`));
    }
    for (const script of ['scripts/deploy.sh', 'scripts/images.sh']) {
      const list = /^FUNCTIONS=\(([^)]*)\)/m.exec(fs.readFileSync(path.join(root, script), 'utf8'))?.[1].trim().split(/\s+/);
      expect(list, script).toEqual([...functionNames]);
    }
  });

  it.each(functionNames)('when %s starts on Knative with these manifests, then it has every setting it needs and only its own secrets', (fn) => {
    const c = container(fn);
    const env: Record<string, string> = { K_SERVICE: fn };
    for (const from of c.envFrom ?? []) {
      expect(from.secretRef, `${fn}: secrets are passed key by key, not whole`).toBeUndefined();
      expect(from.configMapRef?.name).toBe(configMap().metadata.name);
      Object.assign(env, configMap().data);
    }
    const fromSecrets: string[] = [];
    for (const v of c.env ?? []) {
      const ref = v.valueFrom?.secretKeyRef;
      if (ref) {
        const secret = templateSecrets().find((s) => s.metadata.name === ref.name);
        expect(secret?.stringData?.[ref.key], `${fn}: ${v.name} from ${ref.name}/${ref.key}, listed in 31-secrets.template.yaml`).toBeDefined();
        env[v.name] = secret?.stringData?.[ref.key] ?? '';
        fromSecrets.push(v.name);
      } else if (v.value !== undefined) {
        env[v.name] = v.value;
      }
    }
    for (const name of Object.keys(env)) expect(Object.keys(envSchema.shape), `${fn}: ${name} is read by lib/core/config.ts`).toContain(name);
    expect(Object.keys(env)).toEqual(expect.arrayContaining(deployedRequirements[fn]));
    expect(fromSecrets.sort()).toEqual(deployedRequirements[fn].filter((n) => SECRET_SETTINGS.includes(n)).sort());
    expect(() => loadConfig(env, fn)).not.toThrow();
  });

  it('when the keys are handed out, then only auth can sign tokens', () => {
    for (const fn of functionNames) {
      const names = (container(fn).env ?? []).map((v) => v.name);
      expect(names.includes('JWT_PRIVATE_KEY'), fn).toBe(fn === 'auth');
    }
  });

  it('when the ConfigMap is read, then it holds only settings the code parses, none of them secret', () => {
    const data = configMap().data;
    const keys = Object.keys(data);
    for (const key of keys) expect(Object.keys(envSchema.shape), key).toContain(key);
    expect(keys.filter((k) => SECRET_SETTINGS.includes(k as EnvName))).toEqual([]);
    // Knative sets PORT and K_SERVICE; the *_SOURCE_* settings are the RabbitmqSources' own fields.
    expect(keys.filter((k) => k === 'PORT' || k === 'K_SERVICE' || k.includes('_SOURCE_'))).toEqual([]);
    expect(() => loadConfig(data)).not.toThrow();
  });

  it('when the NetworkPolicy is read, then it covers exactly convert and notify and admits only the sources\' adapters, the activator/autoscaler, the ingress and Prometheus on the metrics port', () => {
    interface Selector { matchLabels?: Record<string, string>; matchExpressions?: { key: string; operator: string; values: string[] }[] }
    interface Peer { podSelector?: Selector; namespaceSelector?: Selector; ipBlock?: unknown }
    const policy = one<K8sObject & { spec: { podSelector: Selector; policyTypes: string[]; ingress: { from?: Peer[]; ports?: unknown[] }[] } }>('NetworkPolicy', 'event-receivers');
    const values = (sel: Selector | undefined, key: string) =>
      sel?.matchLabels?.[key] !== undefined ? [sel.matchLabels[key]] : sel?.matchExpressions?.find((e) => e.key === key && e.operator === 'In')?.values;
    expect(values(policy.spec.podSelector, 'serving.knative.dev/service')?.sort()).toEqual([...CLUSTER_LOCAL].sort());
    expect(policy.spec.policyTypes).toEqual(['Ingress']);
    const peers = policy.spec.ingress.flatMap((rule) => {
      expect(rule.from?.length, 'a rule without `from` admits everyone').toBeGreaterThan(0);
      return rule.from!;
    });
    for (const peer of peers) {
      expect(peer.ipBlock, 'no address ranges').toBeUndefined();
      expect(peer.podSelector, 'an empty pod selector admits every pod').toBeDefined();
      expect(Object.keys(peer.podSelector!).length).toBeGreaterThan(0);
    }
    // The adapters: pods in this namespace (no namespaceSelector) labelled with our sources' names.
    const adapters = peers.find((p) => !p.namespaceSelector)!;
    expect(values(adapters.podSelector, 'eventing.knative.dev/source')).toEqual(['rabbitmq-source-controller']);
    expect(values(adapters.podSelector, 'eventing.knative.dev/SourceName')?.sort()).toEqual(all<Source>('RabbitmqSource').map((s) => s.metadata.name).sort());
    const inNamespace = (ns: string) => peers.find((p) => values(p.namespaceSelector, 'kubernetes.io/metadata.name')?.includes(ns));
    expect(values(inNamespace('knative-serving')?.podSelector, 'app')?.sort()).toEqual(['activator', 'autoscaler']);
    expect(values(inNamespace('kourier-system')?.podSelector, 'app')).toEqual(['3scale-kourier-gateway']);
    // Prometheus, and only on the metrics port (the functions' own port stays closed to it).
    const scraper = policy.spec.ingress.find((rule) => rule.from!.some((p) => values(p.namespaceSelector, 'kubernetes.io/metadata.name')?.includes('monitoring')));
    expect(scraper?.ports).toEqual([{ protocol: 'TCP', port: codeDefaults.METRICS_PORT }]);
    expect(policy.spec.ingress.filter((rule) => rule.ports === undefined)).toHaveLength(policy.spec.ingress.length - 1);
    expect(peers).toHaveLength(4);
    // The public functions are not covered: their callers are on the internet, behind the ingress.
    for (const fn of PUBLIC) expect(values(policy.spec.podSelector, 'serving.knative.dev/service')).not.toContain(fn);
  });

  it('when a NetworkPolicy is malformed, then its model rejects it (the check is not vacuous)', () => {
    const policy = structuredClone(one<K8sObject & { spec: Record<string, unknown> }>('NetworkPolicy', 'event-receivers'));
    policy.spec.policyTypes = 'Ingress';
    expect(validate(policy)).not.toEqual([]);
  });

  it('when the ConfigMap sets TRUST_PROXY, then it trusts named hops only, never every client', () => {
    const config = loadConfig(configMap().data);
    expect(Array.isArray(config.trustProxy)).toBe(true);
    expect(config.trustProxy).toContain('loopback');
    expect(config.trustProxy).not.toContain('0.0.0.0/0');
  });

  it('when the Secrets are looked for, then only templates exist, with placeholders instead of values', () => {
    const secrets = manifests.filter((m) => m.object.kind === 'Secret');
    expect(secrets.length).toBeGreaterThan(0);
    for (const m of secrets) {
      const s = m.object as K8sObject & { stringData?: Record<string, string>; data?: unknown };
      expect(isTemplate(m), `${s.metadata.name} lives in a *.template.yaml`).toBe(true);
      expect(s.data, `${s.metadata.name}: stringData only`).toBeUndefined();
      for (const [key, value] of Object.entries(s.stringData ?? {})) {
        const placeholder = value.includes('CHANGE_ME');
        const harmless = !/password|secret|key/i.test(key) && !/:\/\/[^\s/@]*@/.test(value) && !value.includes('-----BEGIN');
        expect(placeholder || harmless, `${s.metadata.name}/${key} must be a CHANGE_ME placeholder`).toBe(true);
      }
    }
  });

  it('when the committed deployment files are scanned, then none holds a credential or a key', () => {
    const scanned = [...files, 'docs/deploy.md', 'scripts/deploy.sh', 'scripts/images.sh', 'Dockerfile'];
    for (const file of scanned) {
      const text = fs.readFileSync(path.join(root, file), 'utf8');
      for (const [, password] of text.matchAll(/\b[a-z][a-z0-9+.-]*:\/\/[^\s:@/'"]+:([^\s@/'"]+)@/gi)) {
        expect(password, `${file}: a password in a URL`).toMatch(/^(CHANGE_ME|\$|%s|<)/);
      }
      for (const [, body] of text.matchAll(/-----BEGIN [A-Z ]*KEY-----([\s\S]*?)-----END/g)) {
        expect(body.trim(), `${file}: a PEM body`).toBe('CHANGE_ME');
      }
    }
  });

  it('when a manifest reads a Secret, then the template lists that Secret and key, and deploy.sh checks or creates it', () => {
    const templates = new Map(templateSecrets().map((s) => [s.metadata.name, s.stringData ?? {}]));
    const refs = manifests.flatMap((m) => JSON.stringify(m.object).match(/"secretKeyRef":\{[^}]*\}/g) ?? [])
      .map((r) => JSON.parse(r.slice('"secretKeyRef":'.length)) as { name: string; key: string });
    expect(refs.length).toBeGreaterThan(0);
    for (const ref of refs) expect(templates.get(ref.name)?.[ref.key], `${ref.name}/${ref.key}`).toBeDefined();
    const checked = /^SECRETS=\(([^)]*)\)/m.exec(fs.readFileSync(path.join(root, 'scripts/deploy.sh'), 'utf8'))?.[1].trim().split(/\s+/) ?? [];
    expect([...checked, 'video2mp3-amqp'].sort()).toEqual([...templates.keys()].sort());
  });

  it('when the broker objects are compared with lib/messaging/queue.ts, then names, arguments and bindings match', () => {
    const cluster = one('RabbitmqCluster', 'rabbitmq');
    const queues = all<Queue>('Queue');
    const exchanges = all<Exchange>('Exchange');
    const bindings = all<Binding>('Binding');
    for (const o of [...queues, ...exchanges, ...bindings]) expect(o.spec.rabbitmqClusterReference.name).toBe(cluster.metadata.name);

    expect(exchanges.map((e) => e.spec)).toEqual([expect.objectContaining({ name: topology.deadLetterExchange, type: 'direct', durable: true })]);
    expect(queues.map((q) => q.spec.name).sort()).toEqual(topology.queues.flatMap((q) => [q.name, q.deadLetterQueue]).sort());
    expect(bindings).toHaveLength(topology.queues.length);
    for (const q of topology.queues) {
      const work = queues.find((x) => x.spec.name === q.name);
      const dlq = queues.find((x) => x.spec.name === q.deadLetterQueue);
      // amqplib asserts exactly these: any other argument (x-queue-type included) fails with PRECONDITION_FAILED.
      expect(work?.spec).toMatchObject({ durable: true, arguments: queueArguments });
      expect(work?.spec.autoDelete ?? false).toBe(false);
      expect(work?.spec.type).toBeUndefined();
      expect(dlq?.spec).toMatchObject({ durable: true });
      expect(dlq?.spec.arguments ?? {}).toEqual({});
      expect(dlq?.spec.type).toBeUndefined();
      // Messages go through the default exchange with routing key = queue name, which dead-lettering keeps.
      expect(bindings.find((b) => b.spec.destination === q.deadLetterQueue)?.spec).toMatchObject({
        source: topology.deadLetterExchange, destinationType: 'queue', routingKey: q.name,
      });
    }
  });

  it('when the sources are read, then each feeds its function from a predeclared queue with the local stand-in\'s defaults', () => {
    expect(all<Source>('RabbitmqSource').map((s) => s.spec.rabbitmqResourcesConfig.queueName).sort()).toEqual(topology.queues.map((q) => q.name).sort());
    const { sources } = loadConfig({});
    for (const [queue, fn] of Object.entries(SINKS)) {
      const s = source(queue);
      expect(s.metadata.name, 'the stand-in names each source after its queue').toBe(queue);
      expect(s.spec.rabbitmqClusterReference.name).toBe(one('RabbitmqCluster', 'rabbitmq').metadata.name);
      expect(s.spec.rabbitmqResourcesConfig.predeclared).toBe(true);
      expect(s.spec.sink.ref).toEqual({ apiVersion: 'serving.knative.dev/v1', kind: 'Service', name: fn });
      const prefix = queue.toUpperCase();
      const defaults = codeDefaults as Record<string, unknown>;
      expect(s.spec.delivery, queue).toEqual({
        retry: defaults[`${prefix}_SOURCE_RETRY`],
        backoffPolicy: defaults[`${prefix}_SOURCE_BACKOFF_POLICY`],
        backoffDelay: defaults[`${prefix}_SOURCE_BACKOFF_DELAY`],
      });
      expect(s.spec.rabbitmqResourcesConfig.parallelism, queue).toBe(sources[queue as keyof typeof sources].parallelism);
    }
  });

  it('when the video queue fills, then convert scales from zero with one conversion per pod, up to the source\'s parallelism', () => {
    const spec = service('convert').spec.template.spec;
    expect(spec.containerConcurrency).toBe(1);
    expect(annotations('convert')).toMatchObject({
      'autoscaling.knative.dev/min-scale': '0',
      'autoscaling.knative.dev/max-scale': String(source('video').spec.rabbitmqResourcesConfig.parallelism),
      'autoscaling.knative.dev/target-utilization-percentage': '100',
    });
  });

  it('when idle, then every function scales to zero; auth, upload and download are public, convert and notify cluster-local', () => {
    for (const fn of functionNames) expect(annotations(fn)['autoscaling.knative.dev/min-scale'], fn).toBe('0');
    for (const fn of PUBLIC) expect(service(fn).metadata.labels?.['networking.knative.dev/visibility'], fn).toBeUndefined();
    for (const fn of CLUSTER_LOCAL) expect(service(fn).metadata.labels?.['networking.knative.dev/visibility'], fn).toBe('cluster-local');
  });

  it('when convert splits a conversion, then it runs as many instances as its CPU limit (Node sees the node\'s cores, not the quota)', () => {
    expect(configMap().data.CONVERT_PARALLELISM).toBe(container('convert').resources?.limits?.cpu);
  });

  it('when the longest video the configuration allows is converted, then it ends before the converter\'s own timeout, which ends before Knative\'s', () => {
    // Measured by `npm run bench` on 2 cores: the function's path (blob read, wasm conversion, blob write)
    // takes ~2.0 s per 120 s of 720p H.264/AAC. Only the audio is decoded (-vn), so resolution hardly
    // matters; the margin covers slower nodes, the CPU limit and costlier codecs. Transfers: read up to
    // MAX_UPLOAD_BYTES from GridFS, store the MP3, start the core.
    const SECONDS_PER_VIDEO_SECOND = 2.0 / 120;
    const SAFETY_FACTOR = 2.5;
    const TRANSFER_SECONDS = 60;
    const MAX_REVISION_TIMEOUT = 600; // Knative's default max-revision-timeout-seconds
    const { limits, timeouts } = loadConfig(configMap().data);
    const convertSeconds = timeouts.convertMs / 1000;
    const worst = limits.durationSeconds * SECONDS_PER_VIDEO_SECOND * SAFETY_FACTOR + TRANSFER_SECONDS;
    const { timeoutSeconds, responseStartTimeoutSeconds } = service('convert').spec.template.spec;
    // convert writes its first byte when the conversion ends, so the response-start timeout, not only
    // the request timeout, must outlast the conversion's own (docs/deploy.md, "How the request timeouts nest").
    expect(convertSeconds).toBeGreaterThan(worst);
    expect(responseStartTimeoutSeconds).toBeGreaterThan(convertSeconds);
    expect(timeoutSeconds).toBeGreaterThanOrEqual(responseStartTimeoutSeconds!);
    expect(timeoutSeconds).toBeLessThanOrEqual(MAX_REVISION_TIMEOUT);
  });

  it('when upload takes one POST of the largest video, then its first byte may come as late as its request timeout, and the rate that needs is the one upload.yaml names', () => {
    const { timeoutSeconds, responseStartTimeoutSeconds } = service('upload').spec.template.spec;
    expect(responseStartTimeoutSeconds).toBe(timeoutSeconds);
    expect(timeoutSeconds).toBeLessThanOrEqual(600);
    const mbitPerSecond = (loadConfig(configMap().data).limits.uploadBytes * 8) / timeoutSeconds! / 1e6;
    const named = Number(/needs ≥ (\d+) Mbit\/s/.exec(fs.readFileSync(path.join(root, 'knative/40-services/upload.yaml'), 'utf8'))?.[1]);
    expect(Math.ceil(mbitPerSecond)).toBe(named);
  });

  it.each(functionNames)('when %s runs longer than Knative\'s default response-start timeout, then it sets its own, within its request timeout', (fn) => {
    // Knative defaults responseStartTimeoutSeconds to revision-response-start-timeout-seconds (300 s by
    // default) whenever that is below timeoutSeconds, and answers 504 when no byte was written by then.
    const DEFAULT_RESPONSE_START = 300;
    const { timeoutSeconds = 300, responseStartTimeoutSeconds } = service(fn).spec.template.spec;
    if (timeoutSeconds > DEFAULT_RESPONSE_START) expect(responseStartTimeoutSeconds, fn).toBeDefined();
    expect(responseStartTimeoutSeconds ?? timeoutSeconds, fn).toBeLessThanOrEqual(timeoutSeconds);
  });

  it.each(functionNames)('when %s runs, then it has /healthz probes, requests and limits, and runs as non-root', (fn) => {
    const c = container(fn);
    expect(c.readinessProbe?.httpGet?.path).toBe('/healthz');
    expect(c.livenessProbe?.httpGet?.path).toBe('/healthz');
    // Knative probes the serving port itself and rejects any other.
    expect(c.readinessProbe?.httpGet?.port).toBeUndefined();
    expect(Object.keys(c.resources?.requests ?? {})).toEqual(expect.arrayContaining(['cpu', 'memory']));
    expect(Object.keys(c.resources?.limits ?? {})).toEqual(expect.arrayContaining(['cpu', 'memory']));
    expect(c.securityContext).toMatchObject({ runAsNonRoot: true, allowPrivilegeEscalation: false, capabilities: { drop: ['ALL'] }, seccompProfile: { type: 'RuntimeDefault' } });
    expect(service(fn).spec.template.spec.timeoutSeconds, fn).toBeGreaterThan(0);
  });

  it('when convert takes the largest video the limits allow, then its /tmp emptyDir and ephemeral-storage limit hold the video and the MP3', () => {
    const { limits } = loadConfig(configMap().data);
    const spec = service('convert').spec.template.spec as { volumes?: { name: string; emptyDir?: { sizeLimit?: string } }[] };
    const c = container('convert') as { volumeMounts?: { name: string; mountPath: string }[]; resources?: { limits?: Record<string, string>; requests?: Record<string, string> } };
    const tmp = spec.volumes?.find((v) => v.name === c.volumeMounts?.find((m) => m.mountPath === '/tmp')?.name);
    const bytes = (q: string) => Number(/^(\d+)Gi$/.exec(q)?.[1] ?? NaN) * 1024 ** 3 || Number(/^(\d+)Mi$/.exec(q)?.[1] ?? NaN) * 1024 ** 2;
    const needed = limits.uploadBytes + limits.outputBytes;
    expect(bytes(tmp?.emptyDir?.sizeLimit ?? '')).toBeGreaterThanOrEqual(needed);
    expect(bytes(c.resources?.limits?.['ephemeral-storage'] ?? '')).toBeGreaterThanOrEqual(needed);
    expect(c.resources?.requests?.['ephemeral-storage']).toBeDefined();
  });

  it('when upload streams the largest video, then its memory limit does not depend on MAX_UPLOAD_BYTES and /tmp is a bounded emptyDir', () => {
    const c = container('upload') as { volumeMounts?: { name: string; mountPath: string }[]; resources?: { limits?: Record<string, string> } };
    const spec = service('upload').spec.template.spec as { volumes?: { name: string; emptyDir?: { sizeLimit?: string } }[] };
    expect(c.volumeMounts?.find((m) => m.mountPath === '/tmp')).toBeDefined();
    expect(spec.volumes?.find((v) => v.name === 'tmp')?.emptyDir?.sizeLimit).toBeDefined();
    expect(c.resources?.limits?.['ephemeral-storage']).toBeDefined();
    expect(loadConfig(configMap().data).limits.uploadBytes).toBeGreaterThan(4 * 1024 ** 3);
  });

  it.each([['mysql', /^mysql:\d/], ['mongodb', /^mongo:\d/]] as const)(
    'when %s is deployed, then it is a StatefulSet of a real image with a persistent volume behind a headless Service',
    (name, image) => {
      const set = one<StatefulSetObject>('StatefulSet', name);
      expect(set.spec.template.spec.containers[0].image).toMatch(image);
      expect(set.spec.volumeClaimTemplates?.length).toBeGreaterThan(0);
      const svc = one<K8sObject & { spec: { clusterIP?: string } }>('Service', set.spec.serviceName, 'v1');
      expect(svc.spec.clusterIP).toBe('None');
    },
  );

  it('when an image is built, then it is a slim or distroless Node 20, non-root, carrying only that function\'s bundle', () => {
    const dockerfile = fs.readFileSync(path.join(root, 'Dockerfile'), 'utf8');
    const from = [...dockerfile.matchAll(/^FROM\s+(\S+)/gm)].map((m) => m[1]);
    expect(from).toHaveLength(1);
    expect(from[0]).toMatch(/^(gcr\.io\/distroless\/nodejs20-debian12:nonroot|node:20(\.\d+)*-slim)$/);
    // Numeric: with a user name the kubelet cannot verify runAsNonRoot and refuses to start the pod.
    expect(dockerfile).toMatch(/^USER\s+[1-9]\d*(:\d+)?\s*$/m);
    expect([...dockerfile.matchAll(/^COPY\s+(\S+)/gm)].map((m) => m[1]).every((src) => src.startsWith('dist/${FUNCTION}/'))).toBe(true);
    const ignore = fs.readFileSync(path.join(root, '.dockerignore'), 'utf8').split('\n').filter((l) => l && !l.startsWith('#'));
    expect(ignore).toEqual(['*', '!dist/']);
  });

  // glibc ignores a tunable it does not know, silently: a misspelt GLIBC_TUNABLES would leave the image
  // as slow to start as without it. This runs node with the Dockerfile's value, a worker thread
  // mallocing as a converter instance's thread does, and reads the process's own mappings.
  it('when node runs with the image\'s GLIBC_TUNABLES, then every thread mallocs from one arena on transparent huge pages', () => {
    const dockerfile = fs.readFileSync(path.join(root, 'Dockerfile'), 'utf8');
    const tunables = /^ENV GLIBC_TUNABLES=(\S+)/m.exec(dockerfile)?.[1];
    expect(tunables).toBeDefined();
    const probe = `
      const { Worker } = require('node:worker_threads');
      const fs = require('node:fs');
      Buffer.alloc(64 << 20).fill(1);
      new Worker("const a = []; for (let i = 0; i < 2000; i++) a.push(Buffer.alloc(4096).fill(1)); require('node:worker_threads').parentPort.postMessage(0)", { eval: true }).on('message', () => {
        const hugeKB = [...fs.readFileSync('/proc/self/smaps', 'utf8').matchAll(/^AnonHugePages:\\s+(\\d+) kB/gm)].reduce((sum, m) => sum + Number(m[1]), 0);
        // A thread's own arena is a heap glibc reserves as a 64 MiB mapping, mostly PROT_NONE.
        const arenaHeaps = [...fs.readFileSync('/proc/self/maps', 'utf8').matchAll(/^([0-9a-f]+)-([0-9a-f]+) ---p \\S+ \\S+ 0\\s*$/gm)]
          .map((m) => parseInt(m[2], 16) - parseInt(m[1], 16)).filter((n) => n > 32 * 2 ** 20 && n <= 64 * 2 ** 20).length;
        console.log(JSON.stringify({ hugeKB, arenaHeaps }));
        process.exit(0);
      });`;
    const measure = (env: Record<string, string>) => {
      const { GLIBC_TUNABLES: _, ...base } = process.env;
      const out = spawnSync(process.execPath, ['-e', probe], { encoding: 'utf8', env: { ...base, ...env } });
      expect(out.status, out.stderr).toBe(0);
      return JSON.parse(out.stdout) as { hugeKB: number; arenaHeaps: number };
    };
    const plain = measure({});
    const image = measure({ GLIBC_TUNABLES: tunables! });
    expect(plain.arenaHeaps).toBeGreaterThan(0);
    expect(image.arenaHeaps).toBe(0);
    // Huge pages need the kernel's consent: `madvise` (the usual default) grants them only to memory
    // that asks, `always` to all, `never` to none.
    const thp = /\[(\w+)\]/.exec(fs.readFileSync('/sys/kernel/mm/transparent_hugepage/enabled', 'utf8'))?.[1];
    if (thp === 'madvise') expect(plain.hugeKB).toBe(0);
    if (thp !== 'never') expect(image.hugeKB).toBeGreaterThan(0);
  });

  it('when docs/deploy.md names an npm script or a repository file, then it exists', () => {
    const doc = fs.readFileSync(path.join(root, 'docs/deploy.md'), 'utf8');
    const scripts = (JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')) as { scripts: Record<string, string> }).scripts;
    const used = [...doc.matchAll(/npm run ([\w:-]+)/g)].map((m) => m[1]);
    expect(used).toEqual(expect.arrayContaining(['deploy']));
    for (const name of used) expect(Object.keys(scripts), `npm run ${name}`).toContain(name);
    for (const [file] of doc.matchAll(/\b(?:knative|scripts)\/[\w./-]*\w/g)) expect(fs.existsSync(path.join(root, file)), file).toBe(true);
  });
});

// ---- scripts/deploy.sh against stand-ins -----------------------------------------------------------------

const FAKES = ['kn', 'kubectl', 'minikube', 'npm'] as const;
const SYSTEM_TOOLS = ['bash', 'env', 'cat', 'tr', 'base64', 'date', 'git', 'sha256sum', 'cut', 'dirname', 'basename'];
const VERSION = '1.2.3-test';

function which(tool: string): string | undefined {
  return ['/usr/local/bin', '/usr/bin', '/bin'].map((d) => path.join(d, tool)).find((p) => fs.existsSync(p));
}

interface Run { status: number | null; stdout: string; stderr: string; calls: string[][] }

/** A copy of the deployment files with fake tools on a PATH that has nothing else but basic system tools. */
function sandbox(fakes: readonly string[] = FAKES) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'video2mp3-deploy-'));
  for (const entry of ['scripts/deploy.sh', 'scripts/images.sh', 'knative', 'Dockerfile', '.dockerignore', 'package.json']) {
    fs.cpSync(path.join(root, entry), path.join(dir, entry), { recursive: true });
  }
  for (const fn of functionNames) {
    fs.mkdirSync(path.join(dir, 'dist', fn), { recursive: true });
    fs.writeFileSync(path.join(dir, 'dist', fn, 'index.js'), '');
  }
  fs.writeFileSync(path.join(dir, 'dist/convert/transcode-worker.js'), '');
  fs.mkdirSync(path.join(dir, 'dist/convert/node_modules/@ffmpeg.wasm/core-mt'), { recursive: true });
  fs.writeFileSync(path.join(dir, 'dist/convert/node_modules/@ffmpeg.wasm/core-mt/package.json'), '{}');

  const bin = path.join(dir, '.fake-bin');
  const sys = path.join(dir, '.sys-bin');
  fs.mkdirSync(bin);
  fs.mkdirSync(sys);
  for (const tool of fakes) fs.copyFileSync(path.join(root, 'test/knative-fakes/fake-tool.sh'), path.join(bin, tool));
  for (const tool of fakes) fs.chmodSync(path.join(bin, tool), 0o755);
  for (const tool of SYSTEM_TOOLS) {
    const found = which(tool);
    if (found) fs.symlinkSync(found, path.join(sys, tool));
  }
  fs.symlinkSync(process.execPath, path.join(sys, 'node'));
  const log = path.join(dir, 'calls.log');

  const run = (script: string, args: string[] = [], env: Record<string, string> = {}): Run => {
    fs.writeFileSync(log, '');
    const result = spawnSync(which('bash') ?? 'bash', [script, ...args], {
      cwd: dir,
      encoding: 'utf8',
      env: { PATH: `${bin}:${sys}`, HOME: dir, FAKE_LOG: log, VERSION, ...env },
      timeout: 30_000,
    });
    const calls = fs.readFileSync(log, 'utf8').split('\n').filter(Boolean).map((line) => line.split('\t'));
    return { status: result.status, stdout: result.stdout, stderr: result.stderr, calls };
  };
  /** The fake kn alone, as deploy.sh would call it from the sandbox. */
  const kn = (args: string[]) => spawnSync(path.join(bin, 'kn'), args, { cwd: dir, encoding: 'utf8', env: { PATH: `${bin}:${sys}`, FAKE_LOG: log } });
  return { dir, run, kn, deploy: (env: Record<string, string> = {}) => run('scripts/deploy.sh', [], env) };
}

const has = (call: string[], ...parts: string[]) => parts.every((p) => call.includes(p));
const indexOf = (calls: string[][], predicate: (c: string[]) => boolean) => calls.findIndex(predicate);
const applied = (calls: string[][]) => calls.filter((c) => c[0] === 'kubectl' && c[1] === 'apply' && c[2] === '-f' && c[3] !== '-').map((c) => c[3]);

describe('scripts/deploy.sh', () => {
  it('when everything is in place, then it builds, applies the infrastructure, deploys each function with kn and then the sources', () => {
    const { status, stderr, calls } = sandbox().deploy();
    expect(stderr).toBe('');
    expect(status).toBe(0);

    expect(calls.filter((c) => c[0] === 'npm')).toEqual([['npm', 'run', 'build']]);
    expect(calls.filter((c) => has(c, 'image', 'build'))).toEqual(functionNames.map((fn) =>
      ['minikube', '-p', 'knative', 'image', 'build', '-t', `dev.local/${fn}:${VERSION}`, `--build-opt=build-arg=FUNCTION=${fn}`, '.']));

    const infra = files.filter((f) => /^knative\/[0-3]\d-/.test(f) && !f.endsWith('.template.yaml'));
    expect([...new Set(applied(calls))]).toEqual([...infra, 'knative/50-sources.yaml', 'knative/55-maintenance.yaml']);
    expect(applied(calls)).not.toContain('knative/31-secrets.template.yaml');

    const knApplies = calls.filter((c) => c[0] === 'kn' && c[1] === 'service' && c[2] === 'apply');
    expect(knApplies.map((c) => c[3])).toEqual([...functionNames]);
    for (const c of knApplies) {
      const fn = c[3];
      expect(c.slice(4, 12)).toEqual(['--namespace', NAMESPACE, '--filename', `knative/40-services/${fn}.yaml`, '--image', `dev.local/${fn}:${VERSION}`, '--annotation-revision', expect.stringMatching(/^video2mp3\/config-sha=[0-9a-f]{12}$/)]);
    }

    // Order: secrets checked before anything is built; backends ready before functions; functions before sources.
    const firstBuild = indexOf(calls, (c) => c[0] === 'npm');
    expect(indexOf(calls, (c) => has(c, 'get', 'secret', 'video2mp3-jwt'))).toBeLessThan(firstBuild);
    const firstKn = indexOf(calls, (c) => has(c, 'kn', 'service', 'apply'));
    for (const target of ['rabbitmqcluster/rabbitmq', 'statefulset/mysql', 'statefulset/mongodb', 'queues.rabbitmq.com', 'deployment/mailpit']) {
      const waited = indexOf(calls, (c) => c[0] === 'kubectl' && (c.includes('wait') || c.includes('rollout')) && c.includes(target));
      expect(waited, target).toBeGreaterThan(firstBuild);
      expect(waited, target).toBeLessThan(firstKn);
    }
    expect(indexOf(calls, (c) => has(c, 'apply', 'knative/50-sources.yaml'))).toBeGreaterThan(indexOf(calls, (c) => has(c, 'apply', 'notify')));
  });

  it('when it derives the AMQP Secret, then the URL carries the operator\'s user and password, escaped, via stdin', () => {
    const { status, calls } = sandbox().deploy();
    expect(status).toBe(0);
    // The two ends of a pipe run at once, so their calls may be logged in either order; each call's stdin
    // follows it directly.
    const create = indexOf(calls, (c) => has(c, 'create', 'secret', 'generic', 'video2mp3-amqp'));
    expect(calls[create]).toEqual(expect.arrayContaining(['--from-file=AMQP_URL=/dev/stdin', '--dry-run=client', '-o', 'yaml']));
    expect(calls[create + 1]).toEqual(['kubectl:stdin', `amqp://rabbit:${encodeURIComponent('p4ss/word+=')}@rabbitmq.video2mp3.svc.cluster.local:5672`]);
    const apply = indexOf(calls, (c) => c.join(' ') === 'kubectl apply -f -');
    expect(Math.abs(apply - create)).toBeLessThanOrEqual(3);
  });

  it('when it runs twice, then the second run issues the same commands (everything is an apply)', () => {
    const box = sandbox();
    const first = box.deploy();
    const second = box.deploy();
    expect(second.status).toBe(0);
    const sorted = (calls: string[][]) => calls.map((c) => c.join('\t')).sort();
    expect(sorted(second.calls)).toEqual(sorted(first.calls));
    expect(first.calls.some((c) => c[0] === 'kn' && (c[2] === 'create' || c[2] === 'update'))).toBe(false);
  });

  it.each(['kn', 'kubectl', 'minikube'])('when %s is missing, then it stops before changing anything and names the tool', (tool) => {
    const { status, stderr, calls } = sandbox(FAKES.filter((t) => t !== tool)).deploy();
    expect(status).not.toBe(0);
    expect(stderr).toContain(`${tool} is not installed or not on PATH`);
    expect(calls.filter((c) => c.includes('apply') || c.includes('build'))).toEqual([]);
  });

  it('when kn is older than 1.0, then it stops naming the minimum before changing anything', () => {
    const { status, stderr, calls } = sandbox().deploy({ FAKE_KN_VERSION: 'v0.26.0' });
    expect(status).not.toBe(0);
    expect(stderr).toContain('kn 0.26 is too old: kn ≥ 1.0 is needed');
    expect(calls.filter((c) => c.includes('apply') || c.includes('build'))).toEqual([]);
  });

  it.each([
    ['an unknown flag', ['--image', `dev.local/auth:${VERSION}`, '--env-from', 'secret:x'], /unknown flag: --env-from/],
    ['another service\'s image', ['--image', `dev.local/upload:${VERSION}`], /image 'dev.local\/upload:.*' is not dev.local\/auth:<tag>/],
    ['no image', [], /image '' is not/],
    ['a malformed annotation', ['--image', `dev.local/auth:${VERSION}`, '--annotation-revision', '=x'], /invalid annotation/],
    ['a malformed env', ['--image', `dev.local/auth:${VERSION}`, '--env', '1X=y'], /invalid env/],
    ['another namespace', ['--image', `dev.local/auth:${VERSION}`, '--namespace', 'default'], /not in namespace 'default'/],
  ])('when kn service apply gets %s, then the fake kn refuses it (kn would, or would deploy the wrong thing)', (_what, flags, message) => {
    const box = sandbox();
    const base = ['service', 'apply', 'auth', '--namespace', NAMESPACE, '--filename', 'knative/40-services/auth.yaml'];
    expect(box.kn([...base, '--image', `dev.local/auth:${VERSION}`, '--annotation-revision', 'video2mp3/config-sha=0123456789ab', '--env', 'A=b']).status).toBe(0);
    const wrongName = box.kn(['service', 'apply', 'upload', '--namespace', NAMESPACE, '--filename', 'knative/40-services/auth.yaml', '--image', `dev.local/upload:${VERSION}`]);
    expect(wrongName.stderr).toMatch(/doesn't match name from file/);
    const run = box.kn([...base, ...flags]);
    expect(run.status).not.toBe(0);
    expect(run.stderr).toMatch(message);
  });

  it('when no cluster answers, then it says so and changes nothing', () => {
    const { status, stderr, calls } = sandbox().deploy({ FAKE_CLUSTER_DOWN: '1' });
    expect(status).not.toBe(0);
    expect(stderr).toMatch(/no Kubernetes cluster answers on the current kubectl context \(knative\)/);
    expect(calls.filter((c) => c.includes('apply'))).toEqual([]);
  });

  it('when operators are missing, then it lists each with what installs it', () => {
    const { status, stderr, calls } = sandbox().deploy({ FAKE_MISSING_CRDS: 'queues.rabbitmq.com rabbitmqsources.sources.knative.dev' });
    expect(status).not.toBe(0);
    expect(stderr).toContain('Messaging Topology Operator');
    expect(stderr).toContain('Knative RabbitMQ source');
    expect(stderr).not.toContain('Cluster Operator (CRD');
    expect(calls.filter((c) => c.includes('apply'))).toEqual([]);
  });

  it('when a Secret is missing, then it names it, points to the docs and builds nothing', () => {
    const { status, stderr, calls } = sandbox().deploy({ FAKE_MISSING_SECRETS: 'video2mp3-jwt video2mp3-links' });
    expect(status).not.toBe(0);
    expect(stderr).toContain('missing Secrets in namespace video2mp3: video2mp3-jwt video2mp3-links');
    expect(stderr).toContain('docs/deploy.md');
    expect(calls.filter((c) => c[0] === 'npm' || (c[0] === 'kn' && c[1] !== 'version') || c.includes('image'))).toEqual([]);
  });

  it('when the Minikube profile is not running, then images.sh says which and nothing is deployed', () => {
    const { status, stderr, calls } = sandbox().deploy({ FAKE_MINIKUBE_DOWN: '1' });
    expect(status).not.toBe(0);
    expect(stderr).toContain("minikube profile 'knative' is not running");
    expect(calls.filter((c) => c[0] === 'kn' && c[1] !== 'version')).toEqual([]);
  });

  it('when a bundle is missing, then images.sh names it before building any image', () => {
    const box = sandbox();
    fs.rmSync(path.join(box.dir, 'dist/notify'), { recursive: true });
    const { status, stderr, calls } = box.run('scripts/images.sh');
    expect(status).not.toBe(0);
    expect(stderr).toContain('dist/notify/index.js is missing');
    expect(calls.filter((c) => c.includes('image'))).toEqual([]);
  });

  it('when no VERSION is given outside a git checkout, then images are tagged with the package version', () => {
    const { status, stdout } = sandbox().run('scripts/images.sh', ['--version'], { VERSION: '' });
    expect(status).toBe(0);
    const { version } = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')) as { version: string };
    expect(stdout.trim()).toBe(version);
  });
});
