// Knative on the test control plane (test/support/control-plane.ts), at the version tools/knative/go.mod
// pins: the CRDs and system ConfigMaps straight from the downloaded modules' config/ directories (as a
// release YAML carries them), the RabbitMQ operators' CRDs from knative/schemas/, and Knative's own
// controllers (scripts/knative.sh) as local processes inside the control plane's network namespace.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { parse, parseAllDocuments, stringify } from 'yaml';
import { binDir, type ControlPlane, type Process } from './control-plane';
import { eventually } from './stack';

const root = path.resolve(__dirname, '../..');
const toolModule = path.join(root, 'tools/knative');

/** The images the controllers write into Deployments (`ko://…` in the modules' config). No pod runs them. */
export const systemImages = {
  queueProxy: 'ko.local/knative.dev/serving/cmd/queue:v0.48.0',
  receiveAdapter: 'ko.local/knative.dev/eventing-rabbitmq/cmd/receive_adapter:v0.48.0',
};

/** The domain `kn quickstart minikube` configures (docs/deploy.md, knative/30-config.yaml's URLs). */
export const clusterDomain = '127.0.0.1.sslip.io';

/** Where Go keeps each module tools/knative builds from (downloading it if it is not there yet). */
function moduleDirs(): Record<'serving' | 'eventing' | 'eventing-rabbitmq' | 'networking' | 'caching', string> {
  const r = spawnSync('go', ['mod', 'download', '-json', 'knative.dev/serving', 'knative.dev/eventing', 'knative.dev/eventing-rabbitmq', 'knative.dev/networking', 'knative.dev/caching'], {
    cwd: toolModule, encoding: 'utf8', env: { ...process.env, GOFLAGS: '-mod=mod', GOTOOLCHAIN: 'local' }, timeout: 300_000,
  });
  if (r.status !== 0) throw new Error(`go mod download in tools/knative failed: ${r.stderr}`);
  const dirs: Record<string, string> = {};
  for (const m of r.stdout.matchAll(/"Path": "knative\.dev\/([\w-]+)",[\s\S]*?"Dir": "([^"]+)"/g)) dirs[m[1]!] = m[2]!;
  return dirs as ReturnType<typeof moduleDirs>;
}

/** Each RabbitMQ operator kind's schema in knative/schemas/, as the CRD the operator installs. */
function rabbitmqOperatorCrds(): object[] {
  const kinds = [['RabbitmqCluster', 'rabbitmqclusters', 'rabbitmqcluster'], ['Queue', 'queues', 'queue'], ['Exchange', 'exchanges', 'exchange'], ['Binding', 'bindings', 'binding']] as const;
  return kinds.map(([kind, plural, file]) => ({
    apiVersion: 'apiextensions.k8s.io/v1', kind: 'CustomResourceDefinition',
    metadata: { name: `${plural}.rabbitmq.com` },
    spec: {
      group: 'rabbitmq.com', scope: 'Namespaced',
      names: { kind, plural, singular: kind.toLowerCase(), listKind: `${kind}List` },
      versions: [{
        name: 'v1beta1', served: true, storage: true, subresources: { status: {} },
        schema: { openAPIV3Schema: parse(fs.readFileSync(path.join(root, `knative/schemas/${file}.rabbitmq.com.v1beta1.yaml`), 'utf8')) },
      }],
    },
  }));
}

const yamlFiles = (dir: string) => fs.readdirSync(dir).filter((f) => f.endsWith('.yaml')).map((f) => path.join(dir, f));
const documents = (file: string) => parseAllDocuments(fs.readFileSync(file, 'utf8')).map((d) => d.toJS() as { kind?: string } | null).filter((d): d is { kind: string } => Boolean(d?.kind));

export interface KnativeSystem {
  /** Serving's controller and webhook, eventing-rabbitmq's source controller and webhook. */
  processes: Process[];
}

/**
 * Starts a webhook in its own pod, with the Service its configurations name (WEBHOOK_NAME) pointing at
 * the address the API server reaches it at. The webhook makes its own certificate and fills in its
 * webhook configurations.
 */
async function startWebhook(cp: ControlPlane, name: string, binary: string, service: { name: string; namespace: string }, env: Record<string, string>): Promise<Process> {
  const proc = await cp.runPod(name, path.join(binDir, binary), [`--kubeconfig=${cp.innerKubeconfig}`], { ...env, WEBHOOK_NAME: service.name, WEBHOOK_PORT: '8443' });
  const address = await cp.expose(name, 8443);
  const port = { name: 'https-webhook', port: 8443, protocol: 'TCP' };
  await cp.api.create(`/api/v1/namespaces/${service.namespace}/services`, {
    metadata: { name: service.name, namespace: service.namespace }, spec: { ports: [{ name: port.name, port: 443, targetPort: 8443 }] },
  });
  await cp.api.create(`/api/v1/namespaces/${service.namespace}/endpoints`, {
    metadata: { name: service.name, namespace: service.namespace }, subsets: [{ addresses: [{ ip: address }], ports: [port] }],
  });
  await cp.api.create(`/apis/discovery.k8s.io/v1/namespaces/${service.namespace}/endpointslices`, {
    metadata: { name: `${service.name}-test`, namespace: service.namespace, labels: { 'kubernetes.io/service-name': service.name } },
    addressType: 'IPv4', endpoints: [{ addresses: [address], conditions: { ready: true } }], ports: [port],
  });
  return proc;
}

/**
 * Installs the CRDs and system ConfigMaps and starts Knative's controllers against `cp`. Knative's
 * controllers use the admin token: RBAC for them is the release YAML's business, not this test's.
 */
export async function installKnative(cp: ControlPlane, opts: { webhooks?: boolean } = {}): Promise<KnativeSystem> {
  const webhooks = opts.webhooks ?? true;
  const mod = moduleDirs();
  const crds = [
    ...yamlFiles(path.join(mod.serving, 'config/core/300-resources')),
    path.join(mod.caching, 'config/image.yaml'),
    ...['certificate', 'ingress', 'serverlessservice', 'domain-claim'].map((f) => path.join(mod.networking, `config/${f}.yaml`)),
    path.join(mod.eventing, 'config/core/resources/pingsource.yaml'),
    path.join(mod['eventing-rabbitmq'], 'config/source/300-rabbitmqsource.yaml'),
  ].flatMap(documents).filter((d) => d.kind === 'CustomResourceDefinition');
  // Server-side: the largest CRDs are over the size limit of kubectl's last-applied annotation.
  cp.kubectl(['apply', '--server-side', '-f', '-'], [...crds, ...rabbitmqOperatorCrds()].map((d) => stringify(d)).join('---\n'));
  cp.kubectl(['wait', '--for=condition=Established', 'crd', '--all', '--timeout=60s']);

  const system = [
    path.join(mod.serving, 'config/core/100-namespace.yaml'),
    path.join(mod['eventing-rabbitmq'], 'config/source/100-namespace.yaml'),
    ...yamlFiles(path.join(mod.serving, 'config/core/configmaps')),
    path.join(mod.networking, 'config/config-network.yaml'),
    path.join(mod['eventing-rabbitmq'], 'config/source/config-observability.yaml'),
  ].flatMap(documents).filter((d) => d.kind === 'Namespace' || d.kind === 'ConfigMap');
  const text = system.map((d) => stringify(d)).join('---\n').replaceAll('ko://knative.dev/serving/cmd/queue', systemImages.queueProxy);
  cp.kubectl(['apply', '-f', '-'], text);
  cp.kubectl(['-n', 'knative-serving', 'patch', 'configmap', 'config-domain', '--type=merge', '-p', JSON.stringify({ data: { [clusterDomain]: '' } })]);

  // The webhooks first: once their configurations are in, every Knative object goes through them.
  const webhookObjects = [
    ...yamlFiles(path.join(mod.serving, 'config/core/webhooks')),
    ...['500-webhook-config-validation', '500-webhook-defaulting', '500-webhook-resource-validation', '500-webhook-secret']
      .map((f) => path.join(mod['eventing-rabbitmq'], `config/source/${f}.yaml`)),
  ].flatMap(documents);
  if (webhooks) cp.kubectl(['apply', '-f', '-'], webhookObjects.map((d) => stringify(d)).join('---\n'));

  const kube = { KUBECONFIG: cp.innerKubeconfig, CONFIG_LOGGING_NAME: 'config-logging', CONFIG_OBSERVABILITY_NAME: 'config-observability' };
  const processes = webhooks ? [
    await startWebhook(cp, 'serving-webhook', 'knative-serving-webhook', { name: 'webhook', namespace: 'knative-serving' }, {
      ...kube, SYSTEM_NAMESPACE: 'knative-serving', POD_NAME: 'webhook-test',
    }),
    await startWebhook(cp, 'rabbitmq-source-webhook', 'rabbitmq-source-webhook', { name: 'rabbitmq-webhook', namespace: 'knative-sources' }, {
      ...kube, SYSTEM_NAMESPACE: 'knative-sources', POD_NAME: 'rabbitmq-webhook-test', METRICS_DOMAIN: 'knative.dev/sources',
    }),
  ] : [];
  processes.push(
    await cp.runPod('serving-controller', path.join(binDir, 'knative-serving-controller'), [`--kubeconfig=${cp.innerKubeconfig}`], {
      ...kube, SYSTEM_NAMESPACE: 'knative-serving', POD_NAME: 'controller-test',
    }),
    await cp.runPod('rabbitmq-source-controller', path.join(binDir, 'rabbitmq-source-controller'), [`--kubeconfig=${cp.innerKubeconfig}`], {
      ...kube, SYSTEM_NAMESPACE: 'knative-sources', POD_NAME: 'rabbitmq-controller-test', METRICS_DOMAIN: 'knative.dev/sources',
      RABBITMQ_RA_IMAGE: systemImages.receiveAdapter,
    }),
  );
  // Each takes the leader leases of its reconcilers, in its system namespace, once its informers have synced.
  await eventually(async () => {
    const dead = processes.find((c) => c.child.exitCode !== null);
    if (dead) throw new Error(`${dead.name} exited with ${dead.child.exitCode}:\n${dead.logs().slice(-6000)}`);
    const leases = async (ns: string) => (await cp.api.list(`/apis/coordination.k8s.io/v1/namespaces/${ns}/leases`)).map((l) => l.metadata.name);
    return ((await leases('knative-serving')).some((n) => n.includes('.revision.')) && (await leases('knative-sources')).length > 0) || undefined;
  }, 90_000, 'the Knative controllers to take their leases').catch((err: Error) => { throw new Error(`${err.message}\n${cp.logs()}`); });
  // Each webhook fills in its configurations' CA bundle and rules once it serves.
  const configurations = webhooks ? ['webhook.serving.knative.dev', 'webhook.rabbitmq.sources.knative.dev'] : [];
  await eventually(async () => {
    const dead = processes.find((c) => c.child.exitCode !== null);
    if (dead) throw new Error(`${dead.name} exited with ${dead.child.exitCode}:\n${dead.logs().slice(-6000)}`);
    type Configuration = { webhooks?: { clientConfig: { caBundle?: string }; rules?: unknown[] }[] };
    const all = await Promise.all(configurations.map((n) => cp.api.get<Configuration>(`/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/${n}`)));
    return all.every((c) => c?.webhooks?.every((w) => w.clientConfig.caBundle && w.rules?.length)) || undefined;
  }, 90_000, 'the Knative webhooks to configure themselves').catch((err: Error) => { throw new Error(`${err.message}\n${cp.logs()}`); });
  return { processes };
}
