// A real Kubernetes control plane for the tests: etcd (Debian's etcd-server) and kube-apiserver built
// from k8s.io/kubernetes (scripts/kube.sh), with Knative's controllers added by knative-system.ts. No
// kubelet and no kube-controller-manager: nothing runs a pod (test/support/stand-ins.ts plays what
// those would write).
//
// Every process runs in a network namespace the test creates (`ip netns add`, so it needs root): etcd
// and the API server in one, each controller or webhook in one of its own, like a pod. So each has its
// own ports (Knative's processes all hard-code :8080 for health probes, which other tests use too),
// and a webhook gets the non-loopback address the API server must dial it at — an address that exists
// only inside the API server's namespace. Between namespaces, and to the test, kubectl and kn outside
// them (on a free port of 127.0.0.1), connections go through Unix sockets in the test's directory,
// relayed by small forwarders.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createKubeApi, type KubeApi } from './kube-api';
import { freePort } from './net';
import { eventually } from './stack';

const root = path.resolve(__dirname, '../..');
export const binDir = path.join(root, '.bin');
const etcd = '/usr/bin/etcd';
/** The binaries scripts/kube.sh and scripts/knative.sh build, and what builds each. */
const built: Record<string, string> = {
  'kube-apiserver': 'scripts/kube.sh', kubectl: 'scripts/kube.sh', kn: 'scripts/knative.sh',
  'knative-serving-controller': 'scripts/knative.sh', 'knative-serving-webhook': 'scripts/knative.sh',
  'rabbitmq-source-controller': 'scripts/knative.sh', 'rabbitmq-source-webhook': 'scripts/knative.sh',
};
/** In the API server's namespace only: its advertised address; webhooks get the next ones (expose). */
export const podAddress = '10.244.0.1';
const apiPort = 6443;

/**
 * Whether the control plane can run here: the built binaries, etcd, and root for `ip netns`. Under
 * CI=true anything missing is an error: those tests must not be left out.
 */
export function controlPlaneAvailable(): boolean {
  const missing = Object.entries(built).filter(([name]) => !fs.existsSync(path.join(binDir, name))).map(([name, script]) => `.bin/${name} (bash ${script})`);
  if (!fs.existsSync(etcd)) missing.push(`${etcd} (apt-get install etcd-server)`);
  if (process.getuid?.() !== 0 || spawnSync('ip', ['netns', 'list']).status !== 0) missing.push('root and `ip netns` (iproute2)');
  if (missing.length === 0) return true;
  const message = `the Kubernetes control plane cannot start: missing ${missing.join(', ')}`;
  if (process.env.CI === 'true') throw new Error(`${message} (CI=true: the control-plane tests must not be skipped)`);
  console.warn(`[tests] ${message}; the control-plane tests are left out (they run under CI)`);
  return false;
}

export interface Process {
  readonly name: string;
  readonly child: ChildProcess;
  logs(): string;
  stop(): Promise<void>;
}

export interface ControlPlane {
  dir: string;
  api: KubeApi;
  /** kubeconfig for processes outside the namespace (kubectl, kn, deploy.sh). */
  kubeconfig: string;
  /** kubeconfig for processes inside it (the controllers). */
  innerKubeconfig: string;
  /** PATH with .bin first: the built kubectl and kn. */
  path: string;
  /**
   * Starts `command` in a network namespace of its own (a "pod") where the API server answers on
   * 127.0.0.1:6443 (innerKubeconfig); its output is kept for failure messages.
   */
  runPod(name: string, command: string, args: string[], env?: Record<string, string>): Promise<Process>;
  /** Makes pod `name`'s `port` reachable from the API server at the returned address (same port). */
  expose(name: string, port: number): Promise<string>;
  /** Runs the built kubectl against the control plane; throws with its output when it fails. */
  kubectl(args: string[], input?: string): string;
  /** The recent output of every process, for a failure message. */
  logs(): string;
  stop(): Promise<void>;
}

function openssl(dir: string, args: string[]) {
  const r = spawnSync('openssl', args, { cwd: dir, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`openssl ${args.join(' ')}: ${r.stderr}`);
}

/** A CA, the API server's serving certificate (loopback and podAddress), and the service-account key pair. */
function makeCertificates(dir: string) {
  openssl(dir, ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'ca.key', '-out', 'ca.crt', '-days', '2', '-subj', '/CN=video2mp3-test-ca']);
  openssl(dir, ['req', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'apiserver.key', '-out', 'apiserver.csr', '-subj', '/CN=kube-apiserver']);
  fs.writeFileSync(path.join(dir, 'san.ext'), `subjectAltName=IP:127.0.0.1,IP:${podAddress},IP:10.96.0.1,DNS:localhost,DNS:kubernetes.default.svc\n`);
  openssl(dir, ['x509', '-req', '-in', 'apiserver.csr', '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'apiserver.crt', '-days', '2', '-extfile', 'san.ext']);
  openssl(dir, ['genrsa', '-out', 'sa.key', '2048']);
  openssl(dir, ['rsa', '-in', 'sa.key', '-pubout', '-out', 'sa.pub']);
}

function kubeconfig(file: string, server: string, ca: string, token: string) {
  fs.writeFileSync(file, JSON.stringify({
    apiVersion: 'v1', kind: 'Config', 'current-context': 'video2mp3-test',
    clusters: [{ name: 'video2mp3-test', cluster: { server, 'certificate-authority': ca } }],
    users: [{ name: 'admin', user: { token } }],
    contexts: [{ name: 'video2mp3-test', context: { cluster: 'video2mp3-test', user: 'admin' } }],
  }));
}

// Relays every connection accepted on `from` to `to`; each is a Unix socket path or host:port.
const forwarder = `const net = require('node:net');
const at = (s) => (s.includes('/') ? { path: s } : { host: s.slice(0, s.lastIndexOf(':')), port: Number(s.slice(s.lastIndexOf(':') + 1)) });
const [from, to] = process.argv.slice(1);
net.createServer((c) => { const u = net.connect(at(to)); c.pipe(u).pipe(c); c.on('error', () => u.destroy()); u.on('error', () => c.destroy()); })
  .listen(at(from), () => console.log('listening'));`;

/** Starts etcd and kube-apiserver in a new network namespace and waits until the API server is ready. */
export async function startControlPlane(): Promise<ControlPlane> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'control-plane-'));
  const base = `v2m-${randomBytes(3).toString('hex')}`;
  const namespaces: string[] = [];
  const processes: Process[] = [];
  const apiSocket = path.join(dir, 'api.sock');
  let stopOuter = () => {};
  let exposed = 1;
  const ip = (args: string[]) => {
    const r = spawnSync('ip', args, { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`ip ${args.join(' ')}: ${r.stderr}`);
  };
  const newNetns = (name: string) => {
    const netns = `${base}-${name}`.slice(0, 40);
    ip(['netns', 'add', netns]);
    namespaces.push(netns);
    ip(['-n', netns, 'link', 'set', 'lo', 'up']);
    return netns;
  };

  const start = (netns: string, name: string, command: string, args: string[], env: Record<string, string> = {}): Process => {
    // `ip netns exec` execs the command: the child's pid is the command's.
    const child = spawn('ip', ['netns', 'exec', netns, command, ...args], {
      cwd: dir, env: { PATH: process.env.PATH!, HOME: dir, ...env }, stdio: ['ignore', 'pipe', 'pipe'],
    });
    let tail = '';
    const keep = (c: Buffer) => { tail = (tail + c.toString()).slice(-30_000); };
    child.stdout!.on('data', keep);
    child.stderr!.on('data', keep);
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    const proc: Process = {
      name, child,
      logs: () => tail,
      async stop() {
        if (child.exitCode !== null || child.signalCode !== null) return;
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
        await exited;
        clearTimeout(timer);
      },
    };
    processes.push(proc);
    return proc;
  };
  const forward = async (netns: string, name: string, from: string, to: string) => {
    const proc = start(netns, `forwarder ${name}`, process.execPath, ['-e', forwarder, from, to]);
    await eventually(async () => {
      if (proc.child.exitCode !== null) throw new Error(`forwarder ${name} exited: ${proc.logs()}`);
      return proc.logs().includes('listening') || undefined;
    }, 10_000, `forwarder ${name}`);
  };

  const stop = async () => {
    stopOuter();
    for (const p of [...processes].reverse()) await p.stop();
    for (const netns of namespaces) spawnSync('ip', ['netns', 'delete', netns]);
    fs.rmSync(dir, { recursive: true, force: true });
  };
  const logs = () => processes.filter((p) => !p.name.startsWith('forwarder')).map((p) => `---- ${p.name} ----\n${p.logs().slice(-4000)}`).join('\n');

  try {
    const apiNetns = newNetns('api');
    ip(['-n', apiNetns, 'addr', 'add', `${podAddress}/32`, 'dev', 'lo']);
    makeCertificates(dir);
    const token = randomBytes(24).toString('hex');
    fs.writeFileSync(path.join(dir, 'tokens.csv'), `${token},admin,admin-uid,system:masters\n`);

    start(apiNetns, 'etcd', etcd, [
      '--name=control-plane', `--data-dir=${path.join(dir, 'etcd')}`,
      '--listen-client-urls=http://127.0.0.1:2379', '--advertise-client-urls=http://127.0.0.1:2379',
      '--listen-peer-urls=http://127.0.0.1:2380', '--initial-advertise-peer-urls=http://127.0.0.1:2380',
      '--initial-cluster=control-plane=http://127.0.0.1:2380', '--log-level=warn',
    ]);
    start(apiNetns, 'kube-apiserver', path.join(binDir, 'kube-apiserver'), [
      '--etcd-servers=http://127.0.0.1:2379', `--secure-port=${apiPort}`, `--advertise-address=${podAddress}`,
      `--cert-dir=${dir}`, '--tls-cert-file=apiserver.crt', '--tls-private-key-file=apiserver.key', '--client-ca-file=ca.crt',
      '--token-auth-file=tokens.csv', '--authorization-mode=RBAC',
      '--service-account-issuer=https://kubernetes.default.svc.cluster.local',
      '--service-account-key-file=sa.pub', '--service-account-signing-key-file=sa.key',
      '--service-cluster-ip-range=10.96.0.0/16',
      // No kube-proxy: webhooks are dialled at their Endpoints (expose), not at a Service IP.
      '--enable-aggregator-routing=true',
      '--profiling=false', '--enable-priority-and-fairness=false',
    ]);
    await forward(apiNetns, 'api', apiSocket, `127.0.0.1:${apiPort}`);

    // A process of its own, not this one's event loop: the tests run kubectl synchronously.
    const port = await freePort();
    const outer = spawn(process.execPath, ['-e', forwarder, `127.0.0.1:${port}`, apiSocket], { stdio: ['ignore', 'pipe', 'inherit'] });
    stopOuter = () => outer.kill();
    await new Promise<void>((resolve, reject) => {
      outer.stdout!.once('data', () => resolve());
      outer.once('exit', (code) => reject(new Error(`the forwarder to 127.0.0.1:${port} exited with ${code}`)));
    });
    const ca = fs.readFileSync(path.join(dir, 'ca.crt'), 'utf8');
    const api = createKubeApi({ host: '127.0.0.1', port, ca, token });
    const outerConfig = path.join(dir, 'kubeconfig');
    const innerConfig = path.join(dir, 'kubeconfig-inside');
    kubeconfig(outerConfig, `https://127.0.0.1:${port}`, path.join(dir, 'ca.crt'), token);
    kubeconfig(innerConfig, `https://127.0.0.1:${apiPort}`, path.join(dir, 'ca.crt'), token);

    await eventually(async () => {
      const dead = processes.find((p) => p.child.exitCode !== null);
      if (dead) throw new Error(`${dead.name} exited with ${dead.child.exitCode}:\n${dead.logs().slice(-4000)}`);
      return (await api.healthy('/readyz')) || undefined;
    }, 60_000, 'the API server to be ready');
    // The namespaces exist once the API server's bootstrap controllers have run.
    await eventually(async () => ((await api.get('/api/v1/namespaces/default')) ? true : undefined), 30_000, 'namespace default');

    const pods = new Map<string, string>();
    const pathEnv = `${binDir}:${process.env.PATH}`;
    return {
      dir, api, kubeconfig: outerConfig, innerKubeconfig: innerConfig, path: pathEnv, logs, stop,
      async runPod(name, command, args, env) {
        const netns = newNetns(name);
        pods.set(name, netns);
        await forward(netns, `${name} → api`, `127.0.0.1:${apiPort}`, apiSocket);
        return start(netns, name, command, args, env);
      },
      async expose(name, podPort) {
        const address = `10.244.0.${++exposed}`;
        const socket = path.join(dir, `${name}-${podPort}.sock`);
        ip(['-n', apiNetns, 'addr', 'add', `${address}/32`, 'dev', 'lo']);
        await forward(pods.get(name)!, `${name}:${podPort}`, socket, `127.0.0.1:${podPort}`);
        await forward(apiNetns, `api → ${name}:${podPort}`, `${address}:${podPort}`, socket);
        return address;
      },
      kubectl(args, input) {
        const r = spawnSync(path.join(binDir, 'kubectl'), args, { input, encoding: 'utf8', env: { PATH: pathEnv, HOME: dir, KUBECONFIG: outerConfig }, timeout: 120_000 });
        if (r.status !== 0) throw new Error(`kubectl ${args.join(' ')} failed (${r.status}):\n${r.stdout}\n${r.stderr}`);
        return r.stdout;
      },
    };
  } catch (err) {
    const detail = logs();
    await stop();
    throw new Error(`${(err as Error).message}\n${detail}`, { cause: err });
  }
}
