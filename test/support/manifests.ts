// The environment each process gets on Knative, read from the manifests themselves so that the tests
// that run the bundles and the real receive adapter cannot drift from what is deployed: a function's
// from knative/30-config.yaml and knative/40-services/<fn>.yaml, an adapter's from knative/50-sources.yaml
// the way the RabbitmqSource controller builds it (eventing-rabbitmq v0.48.0,
// pkg/reconciler/source/resources/receive_adapter.go). Only what a cluster resolves differently —
// Secret values, URLs, ports — comes from the test.
import fs from 'node:fs';
import path from 'node:path';
import { parseAllDocuments } from 'yaml';
import type { FunctionName } from '../../lib/core/config';

const knative = path.resolve(__dirname, '../../knative');

interface EnvVar { name: string; value?: string; valueFrom?: { secretKeyRef?: { name: string; key: string }; configMapKeyRef?: { name: string; key: string } } }
interface Container { env?: EnvVar[]; envFrom?: { configMapRef?: { name: string }; secretRef?: { name: string } }[] }
interface K8sObject { kind: string; metadata: { name: string; namespace?: string }; data?: Record<string, string>; spec?: unknown }
export interface SourceSpec {
  rabbitmqResourcesConfig: { queueName: string; predeclared?: boolean; parallelism?: number; vhost?: string; exchangeName?: string };
  delivery?: { retry?: number; backoffPolicy?: 'exponential' | 'linear'; backoffDelay?: string };
  sink: { ref?: { name: string }; uri?: string };
}

function read(file: string): K8sObject[] {
  return parseAllDocuments(fs.readFileSync(path.join(knative, file), 'utf8')).map((d) => d.toJS() as K8sObject).filter(Boolean);
}

function configMap(name: string): Record<string, string> {
  const found = fs.readdirSync(knative).filter((f) => f.endsWith('.yaml')).flatMap(read).find((o) => o.kind === 'ConfigMap' && o.metadata.name === name);
  if (!found) throw new Error(`no ConfigMap ${name} in knative/`);
  return found.data ?? {};
}

/** The RabbitmqSources of knative/50-sources.yaml, by name. */
export function sources(): Map<string, K8sObject & { spec: SourceSpec }> {
  return new Map(read('50-sources.yaml').filter((o) => o.kind === 'RabbitmqSource').map((o) => [o.metadata.name, o as K8sObject & { spec: SourceSpec }]));
}

/** The source whose sink is the Knative Service `fn`. */
export function sourceFor(fn: FunctionName): K8sObject & { spec: SourceSpec } {
  const found = [...sources().values()].find((s) => s.spec.sink.ref?.name === fn);
  if (!found) throw new Error(`no RabbitmqSource in knative/50-sources.yaml sinks to ${fn}`);
  return found;
}

/**
 * What `fn`'s container sees on Knative: every ConfigMap it reads (envFrom, configMapKeyRef) and its
 * literal env values, then `local` for what a cluster resolves differently. Each variable taken from a
 * Secret must be in `local` (a new secret in a manifest fails here instead of going unnoticed); other
 * `local` values replace only variables the manifest gives this function, plus PORT (Knative's own).
 */
export function functionEnv(fn: FunctionName, local: Record<string, string>): Record<string, string> {
  const [service] = read(`40-services/${fn}.yaml`) as (K8sObject & { spec: { template: { spec: { containers: Container[] } } } })[];
  const [container] = service!.spec.template.spec.containers;
  const env: Record<string, string> = {};
  for (const from of container!.envFrom ?? []) {
    if (from.configMapRef) Object.assign(env, configMap(from.configMapRef.name));
    if (from.secretRef) throw new Error(`${fn}: whole Secrets in envFrom are not supported here`);
  }
  for (const v of container!.env ?? []) {
    if (v.value !== undefined) env[v.name] = v.value;
    else if (v.valueFrom?.configMapKeyRef) env[v.name] = configMap(v.valueFrom.configMapKeyRef.name)[v.valueFrom.configMapKeyRef.key] ?? '';
    else if (v.valueFrom?.secretKeyRef) {
      const value = local[v.name];
      if (value === undefined) throw new Error(`${fn}: ${v.name} comes from Secret ${v.valueFrom.secretKeyRef.name}; give the test's value`);
      env[v.name] = value;
    }
  }
  for (const [name, value] of Object.entries(local)) if (name in env || name === 'PORT') env[name] = value;
  return { ...env, K_SERVICE: fn };
}

/**
 * The receive adapter's environment for source `name`, as the controller sets it: the spec's queue,
 * parallelism and delivery, the source's name and namespace, with the broker URL, vhost and sink URL
 * the test provides (a cluster resolves them from the RabbitmqCluster and the sink ref).
 */
export function adapterEnv(name: string, local: { rabbitUrl: string; vhost: string; sink: string }): Record<string, string> {
  const source = sources().get(name);
  if (!source) throw new Error(`no RabbitmqSource ${name} in knative/50-sources.yaml`);
  const { rabbitmqResourcesConfig: r, delivery } = source.spec;
  const env: Record<string, string> = {
    RABBIT_URL: local.rabbitUrl,
    RABBITMQ_CHANNEL_PARALLELISM: String(r.parallelism ?? 1),
    RABBITMQ_EXCHANGE_NAME: r.exchangeName ?? '',
    RABBITMQ_QUEUE_NAME: r.queueName,
    RABBITMQ_PREDECLARED: String(r.predeclared ?? false),
    K_SINK: local.sink,
    NAME: source.metadata.name,
    NAMESPACE: source.metadata.namespace ?? 'default',
    K_LOGGING_CONFIG: '{}',
    K_OBSERVABILITY_CONFIG: '{}',
    RABBITMQ_VHOST: r.vhost ?? local.vhost,
  };
  if (delivery) {
    if (delivery.retry !== undefined) env.HTTP_SENDER_RETRY = String(delivery.retry);
    env.HTTP_SENDER_BACKOFF_POLICY = delivery.backoffPolicy ?? 'exponential';
    if (delivery.backoffDelay !== undefined) env.HTTP_SENDER_BACKOFF_DELAY = delivery.backoffDelay;
  }
  return env;
}
