// The components a real cluster has and the test control plane does not, each played by writing the
// status it would write — and nothing else. This is the one place that names them; everything not
// here is real: the API server, kubectl, kn, deploy.sh, Knative Serving's controller and
// eventing-rabbitmq's source controller.
//
// - RabbitMQ Cluster Operator: makes the broker (here: nothing runs it) and its default-user Secret,
//   and reports the RabbitmqCluster ready.
// - RabbitMQ Messaging Topology Operator: declares Queues, Exchanges and Bindings, reports them Ready.
// - kube-controller-manager and kubelet: run the pods of Deployments and StatefulSets; here every
//   replica is reported ready as soon as the object is seen. Its ServiceAccount controller gives the
//   namespace its `default` ServiceAccount (Knative's webhook dry-runs pods as it).
// - The networking layer (Kourier, Istio…): programs KIngresses, reports them ready with its load
//   balancer's address.
// - Knative's autoscaler (the KPA): scales each Revision; here its PodAutoscaler reports the initial
//   scale reached, without SKS or metrics.
import type { KubeApi, KubeObject } from './kube-api';

/** What the stand-ins report as the RabbitMQ default user; deploy.sh derives the AMQP Secret from it. */
// The operator generates URL-safe base64 values; eventing-rabbitmq puts them in a URL unescaped.
export const rabbitmqDefaultUser = { username: 'default_user_StandIn-0', password: 'StandIn_password-0123456789' };
/** The load balancer the stand-in networking layer reports, as Kourier names its Services. */
export const ingressAddress = { private: 'kourier-internal.kourier-system.svc.cluster.local', public: 'kourier.kourier-system.svc.cluster.local' };

const ready = (type: string, at: string) => ({ type, status: 'True', reason: 'StandIn', message: 'played by test/support/stand-ins.ts', lastTransitionTime: at });
const b64 = (s: string) => Buffer.from(s).toString('base64');

interface StandIn {
  /** The component played. */
  name: string;
  /** Collection paths under the namespace, e.g. `/apis/apps/v1/namespaces/NS/deployments`. */
  collections: (ns: string) => string[];
  /** Whether the object still lacks the status this component would write. */
  pending(o: KubeObject): boolean;
  /** Writes that status (and whatever else the component makes). */
  act(api: KubeApi, path: string, o: KubeObject, at: string): Promise<void>;
}

const stale = (o: KubeObject, condition: string) =>
  o.status?.observedGeneration !== o.metadata.generation
  || !(o.status?.conditions as { type: string; status: string }[] | undefined)?.some((c) => c.type === condition && c.status === 'True');

const standIns: StandIn[] = [
  {
    name: 'RabbitMQ Cluster Operator',
    collections: (ns) => [`/apis/rabbitmq.com/v1beta1/namespaces/${ns}/rabbitmqclusters`],
    pending: (o) => stale(o, 'AllReplicasReady'),
    async act(api, path, o, at) {
      const { name, namespace } = o.metadata;
      await api.create(`/api/v1/namespaces/${namespace}/secrets`, {
        metadata: { name: `${name}-default-user`, namespace },
        data: { username: b64(rabbitmqDefaultUser.username), password: b64(rabbitmqDefaultUser.password), host: b64(`${name}.${namespace}.svc`), port: b64('5672') },
      });
      await api.patchStatus(path, {
        observedGeneration: o.metadata.generation,
        conditions: ['AllReplicasReady', 'ClusterAvailable', 'ReconcileSuccess'].map((t) => ready(t, at)),
        defaultUser: {
          secretReference: { name: `${name}-default-user`, namespace, keys: { username: 'username', password: 'password' } },
          serviceReference: { name, namespace },
        },
      });
    },
  },
  {
    name: 'RabbitMQ Messaging Topology Operator',
    collections: (ns) => ['queues', 'exchanges', 'bindings'].map((k) => `/apis/rabbitmq.com/v1beta1/namespaces/${ns}/${k}`),
    pending: (o) => stale(o, 'Ready'),
    act: (api, path, o, at) => api.patchStatus(path, { observedGeneration: o.metadata.generation, conditions: [ready('Ready', at)] }),
  },
  {
    name: 'kube-controller-manager and kubelet (Deployments)',
    collections: (ns) => [`/apis/apps/v1/namespaces/${ns}/deployments`],
    pending: (o) => stale(o, 'Available') || o.status?.readyReplicas !== ((o.spec?.replicas as number | undefined) ?? 1),
    act(api, path, o, at) {
      const n = (o.spec?.replicas as number | undefined) ?? 1;
      return api.patchStatus(path, {
        observedGeneration: o.metadata.generation, replicas: n, updatedReplicas: n, readyReplicas: n, availableReplicas: n,
        conditions: [ready('Available', at), { ...ready('Progressing', at), reason: 'NewReplicaSetAvailable' }],
      });
    },
  },
  {
    name: 'kube-controller-manager and kubelet (StatefulSets)',
    collections: (ns) => [`/apis/apps/v1/namespaces/${ns}/statefulsets`],
    pending: (o) => o.status?.observedGeneration !== o.metadata.generation,
    act(api, path, o) {
      const n = (o.spec?.replicas as number | undefined) ?? 1;
      const revision = `${o.metadata.name}-stand-in-${o.metadata.generation}`;
      return api.patchStatus(path, {
        observedGeneration: o.metadata.generation, replicas: n, readyReplicas: n, currentReplicas: n, updatedReplicas: n, availableReplicas: n,
        currentRevision: revision, updateRevision: revision,
      });
    },
  },
  {
    name: 'networking layer (KIngress)',
    collections: (ns) => [`/apis/networking.internal.knative.dev/v1alpha1/namespaces/${ns}/ingresses`],
    pending: (o) => stale(o, 'Ready'),
    act: (api, path, o, at) => api.patchStatus(path, {
      observedGeneration: o.metadata.generation,
      conditions: ['LoadBalancerReady', 'NetworkConfigured', 'Ready'].map((t) => ready(t, at)),
      privateLoadBalancer: { ingress: [{ domainInternal: ingressAddress.private }] },
      publicLoadBalancer: { ingress: [{ domainInternal: ingressAddress.public }] },
    }),
  },
  {
    name: 'Knative autoscaler (PodAutoscaler)',
    collections: (ns) => [`/apis/autoscaling.internal.knative.dev/v1alpha1/namespaces/${ns}/podautoscalers`],
    pending: (o) => stale(o, 'Ready'),
    act(api, path, o, at) {
      const initial = Number(o.metadata.annotations?.['autoscaling.knative.dev/initial-scale'] ?? 1);
      return api.patchStatus(path, {
        observedGeneration: o.metadata.generation,
        conditions: ['Active', 'Ready', 'SKSReady', 'ScaleTargetInitialized'].map((t) => ready(t, at)),
        serviceName: o.metadata.name, metricsServiceName: `${o.metadata.name}-private`,
        desiredScale: initial, actualScale: initial,
      });
    },
  },
];

/** kube-controller-manager's ServiceAccount controller, for the one namespace. */
async function defaultServiceAccount(api: KubeApi, ns: string, log: string[]) {
  if (await api.get(`/api/v1/namespaces/${ns}/serviceaccounts/default`)) return;
  if (!(await api.get(`/api/v1/namespaces/${ns}`))) return;
  await api.create(`/api/v1/namespaces/${ns}/serviceaccounts`, { metadata: { name: 'default', namespace: ns } });
  log.push(`kube-controller-manager (ServiceAccounts): ${ns}/default`);
}

export interface StandIns {
  /** What each stand-in did, for the test's record and failure messages. */
  log: string[];
  stop(): Promise<void>;
}

/** Plays the components above for namespace `ns` until stopped, polling a few times a second. */
export function startStandIns(api: KubeApi, ns: string): StandIns {
  const log: string[] = [];
  let running = true;
  const at = new Date().toISOString().replace(/\.\d+Z$/, 'Z');
  const loop = (async () => {
    while (running) {
      await defaultServiceAccount(api, ns, log).catch((err: Error) => log.push(`ServiceAccounts: ${err.message}`));
      for (const s of standIns) {
        for (const collection of s.collections(ns)) {
          // Before deploy.sh applies a kind's CRD or namespace the list fails: nothing to play yet.
          const items = await api.list(collection).catch(() => []);
          for (const o of items.filter(s.pending)) {
            const objectPath = `${collection}/${o.metadata.name}`;
            try {
              await s.act(api, objectPath, o, at);
              log.push(`${s.name}: ${objectPath} generation ${o.metadata.generation}`);
            } catch (err) {
              log.push(`${s.name}: ${objectPath}: ${(err as Error).message}`);
            }
          }
        }
      }
      await new Promise((r) => setTimeout(r, 250));
    }
  })();
  return {
    log,
    async stop() { running = false; await loop; },
  };
}
