/**
 * `loom up`: a whole mesh of local processes, no Kubernetes and no root.
 *
 * Order: the control plane; the Istio config; gateways; then per workload, side by side: register it, start its
 * sidecar, wait until the sidecar has its listeners, and only then start the application (given the sidecar as its
 * HTTP proxy). The application listens on a private loopback port that only its sidecar's inbound listener is
 * given; peers reach it through the sidecar (a local process can still connect to that port directly). With
 * `--transparent` (Linux, root; netns.ts) each workload runs in a network namespace of its own with Istio's
 * iptables capture instead: no HTTP_PROXY, and its port is reachable only through its sidecar. Every process is supervised (restart with backoff) and logs to
 * `<data-dir>/logs/`. Shutdown is the reverse: applications, then sidecars (draining), gateways, control plane.
 *
 * Until the mesh is up, a process that ends is a failure to start: every wait also watches the processes it depends
 * on and fails at once with why (the spawn error, the exit code and the last lines of output), and the stop that
 * follows stops whatever had started. A stop (signal, `loom down`, failure) may come at any moment of start-up:
 * nothing new starts after it. `up.json` lists every process as soon as it exists; Loom's own processes stop by
 * themselves if this process dies (an IPC channel that closes), and `reapLeftovers` stops the applications a killed
 * `loom up` left.
 */
import { type ChildProcess, spawn } from 'node:child_process'
import {
  chmodSync,
  chownSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  writeFileSync,
} from 'node:fs'
import * as net from 'node:net'
import { join, resolve } from 'node:path'
import { loadAll } from 'js-yaml'
import { TLS_MODE_LABEL } from '../control/translate/mtls.js'
import { ErrorCodes, LoomError } from '../core/errors.js'
import { renderTargetGroups, type ScrapeTarget } from '../core/prometheus-sd.js'
import { readUpManifest, type UpManifest, type WorkloadDef } from './manifest.js'
import {
  checkTransparentSupport,
  INBOUND_CAPTURE_PORT,
  inNamespace,
  MeshNetwork,
  OUTBOUND_CAPTURE_PORT,
  parseCapture,
  PROXY_GID,
  PROXY_UID,
  removeNetwork,
  type WorkloadNet,
} from './netns.js'
import { freePort } from './ports.js'
import { describeExit, type ExitInfo, type ProcessSpec, Supervised } from './supervisor.js'

/**
 * How long a process may take to get ready. A process that exits fails the wait at once, so these only bound one
 * that hangs; they are generous because a laptop starting a dozen Node processes at once can be slow. Loom's own
 * processes are ready when the control plane has configured them, which waits for the others to start.
 */
const LOOM_READY_MS = 60_000
const APP_READY_MS = 30_000
/** How many busiest request paths each sidecar and gateway keeps for `loom top` (`loom proxy --path-stats`). */
const PATH_STATS = 100

/** `inbound`/`app` port maps as the sidecar's metadata writes them: `9080:41905,9443:41906`. */
function portMap(m: Record<string, number>): string {
  return Object.entries(m)
    .map(([a, b]) => `${a}:${b}`)
    .join(',')
}

/** The `loom proxy` arguments of a workload's sidecar, in either mode; `metadata` is what the mode adds. */
function sidecarArgs(o: {
  xds: string
  trustBundle: string
  nodeId: string
  ip?: string
  namespace: string
  labels: Record<string, string>
  serviceAccount: string | undefined
  admin: string
  workload: string
  metadata: string[]
  inbound: Record<string, number>
  appPorts: Record<string, number>
  locality: string | undefined
  tokenFile: string | null
}): string[] {
  return [
    'proxy',
    '--xds',
    o.xds,
    '--xds-ca',
    o.trustBundle,
    '--node',
    o.nodeId,
    ...(o.ip !== undefined ? ['--ip', o.ip] : []),
    '--namespace',
    o.namespace,
    '--labels',
    Object.entries(o.labels)
      .map(([k, v]) => `${k}=${v}`)
      .join(','),
    '--service-account',
    o.serviceAccount ?? 'default',
    '--admin',
    o.admin,
    '--drain-time-s',
    '2',
    '--path-stats',
    String(PATH_STATS),
    '--metadata',
    `WORKLOAD_NAME=${o.workload}`,
    ...o.metadata.flatMap((m) => ['--metadata', m]),
    '--metadata',
    `INBOUND_PORTS=${portMap(o.inbound)}`,
    '--metadata',
    `APP_PORTS=${portMap(o.appPorts)}`,
    ...(o.locality !== undefined ? ['--locality', o.locality] : []),
    ...(o.tokenFile !== null ? ['--identity-token-file', o.tokenFile] : []),
  ]
}
/**
 * how long a sidecar's bootstrap token can get a first certificate: a sidecar restarted later in the run needs it
 * again (renewals use the certificate)
 */
const IDENTITY_TOKEN_TTL_S = 7 * 24 * 3600

/** the `loom` executable this process was started as (child processes run the same build) */
const LOOM = process.argv[1]!

/**
 * Gateways run where Istio installs them: in `istio-system`, so a namespace's policies (an AuthorizationPolicy
 * without a selector in `default`, say) apply to its workloads and not to the ingress in front of them.
 */
export const GATEWAY_NAMESPACE = 'istio-system'

/** A gateway's service account, named as Istio's: `ingressgateway` → `istio-ingressgateway-service-account`. */
export function gatewayServiceAccount(name: string): string {
  return `${name.startsWith('istio-') ? name : `istio-${name}`}-service-account`
}

export interface UpOptions {
  file: string
  dataDir: string
  apiPort?: number
  xdsPort?: number
  /** the local port for the first gateway server port (default: the server port itself if free, else any) */
  gatewayPort?: number
  /** the control plane's `--path-normalization` (Istio's meshConfig.pathNormalization; its default is BASE) */
  pathNormalization?: string
  /** the control plane's `--mesh-config` (Istio's MeshConfig file), an absolute path */
  meshConfig?: string
  /** progress lines go here */
  progress?: (line: string) => void
  /**
   * Linux, root: each workload in a network namespace of its own with Istio's iptables capture (netns.ts); the
   * application gets no HTTP_PROXY and calls services by name, and is reachable only through its sidecar
   */
  transparent?: boolean
}

export interface WorkloadState {
  name: string
  namespace: string
  service: string
  labels: Record<string, string>
  nodeId: string
  appPort: number
  outboundPort: number
  adminPort: number
  /** service port → sidecar inbound port (without a sidecar: the application's port) */
  inbound: Record<string, number>
  appPid: number | null
  sidecarPid: number | null
  appLog: string
  sidecarLog: string
  /** false: a workload without a sidecar (no sidecar process, outbound and admin ports 0) */
  sidecar?: boolean
  /** the workload's address (its network namespace's, in transparent mode); 127.0.0.1 when absent */
  address?: string
  /** transparent mode: the workload's network namespace */
  netns?: string
  /** the SPIFFE ID the sidecar's certificate carries, and the file its bootstrap token is in (null: no CA) */
  spiffeId?: string | null
  identityTokenFile?: string | null
}

export interface GatewayState {
  name: string
  labels: Record<string, string>
  nodeId: string
  adminPort: number
  /** Gateway server port → local port */
  ports: Record<string, number>
  pid: number | null
  log: string
}

export interface ProcessState {
  name: string
  role: 'control' | 'gateway' | 'sidecar' | 'app'
  pid: number | null
}

export interface UpState {
  pid: number
  /** `starting` until every process is ready, then `up` */
  phase: 'starting' | 'up'
  dataDir: string
  api: string
  xds: string
  startedAt: string
  workloads: WorkloadState[]
  gateways: GatewayState[]
  /** every process started so far, as soon as it exists (so a `loom down` can stop what a dead `loom up` left) */
  processes?: ProcessState[]
}

export function statePath(dataDir: string): string {
  return join(dataDir, 'up.json')
}

/** Present while a transparent mesh's network exists (so a `loom down` or the next `loom up` removes what is left). */
export function networkMarkerPath(dataDir: string): string {
  return join(dataDir, 'network')
}

/** Removes the namespaces, veths, bridge and rules a transparent mesh of `dataDir` left, if it left any. */
export function removeLeftoverNetwork(dataDir: string): string[] {
  if (!existsSync(networkMarkerPath(dataDir))) return []
  const removed = removeNetwork(dataDir)
  rmSync(networkMarkerPath(dataDir), { force: true })
  return removed
}

/**
 * Run inside a workload's namespace (`node -e`): exits 0 once every check passes (`tcp:<port>` connects to
 * 127.0.0.1, `http:<port><path>` answers 200), 1 after the deadline (ms, the first argument).
 */
const NS_PROBE = `const net=require('node:net');const [ms,...checks]=process.argv.slice(1);const end=Date.now()+Number(ms);
const one=(c)=>new Promise((r)=>{const m=/^(tcp|http):(\\d+)(.*)$/.exec(c);if(m[1]==='tcp'){const s=net.connect(+m[2],'127.0.0.1');
s.once('connect',()=>{s.destroy();r(true)});s.once('error',()=>r(false));return}
fetch('http://127.0.0.1:'+m[2]+m[3],{signal:AbortSignal.timeout(1000)}).then((x)=>r(x.status===200),()=>r(false))});
(async()=>{while(Date.now()<end){const ok=await Promise.all(checks.map(one));if(ok.every(Boolean))process.exit(0);
await new Promise((r)=>setTimeout(r,50))}process.exit(1)})()`

/**
 * The file Prometheus' file-based discovery reads (`file_sd_configs`): every proxy's admin endpoint, rewritten as
 * proxies start, and `[]` once the mesh stops (`loom prometheus-config` prints a prometheus.yml for it).
 */
export function prometheusTargetsPath(dataDir: string): string {
  return join(dataDir, 'prometheus', 'targets.json')
}

/** Writes `text` to `file` by a rename, so a reader never sees half of it. */
function writeAtomically(file: string, text: string): void {
  writeFileSync(`${file}.tmp`, text)
  renameSync(`${file}.tmp`, file)
}

/** The environment variable every process of a mesh carries, naming its data dir (how leftovers are recognised). */
export const MESH_ENV = 'LOOM_MESH'

export function readState(dataDir: string): UpState | null {
  try {
    return JSON.parse(readFileSync(statePath(dataDir), 'utf8')) as UpState
  } catch {
    return null
  }
}

export function alive(pid: number | null | undefined): boolean {
  if (pid === null || pid === undefined || pid <= 0) return false
  try {
    process.kill(pid, 0)
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM'
  }
  // a zombie (exited, not yet reaped) is gone for every purpose here
  try {
    return !/^\d+ \(.*\) Z/s.test(readFileSync(`/proc/${pid}/stat`, 'utf8'))
  } catch {
    return true
  }
}

/** Whether `pid` is a process of the mesh run from `dataDir` (by its environment, where /proc can tell). */
function ofMesh(pid: number, dataDir: string): boolean {
  if (!existsSync('/proc/self/environ')) return true
  try {
    return readFileSync(`/proc/${pid}/environ`, 'latin1').split('\0').includes(`${MESH_ENV}=${dataDir}`)
  } catch {
    return false
  }
}

/** Every process whose environment names the mesh of `dataDir` (empty without /proc). */
function meshPids(dataDir: string): number[] {
  let entries: string[]
  try {
    entries = readdirSync('/proc').filter((e) => /^\d+$/.test(e))
  } catch {
    return []
  }
  return entries.map(Number).filter((pid) => existsSync(`/proc/${pid}/environ`) && ofMesh(pid, dataDir))
}

/**
 * Stops the processes a `loom up` that is no longer running left behind (it was killed with SIGKILL: its Loom
 * processes stop by themselves, applications do not): SIGTERM, then SIGKILL after `graceMs`. Returns their pids.
 */
export async function reapLeftovers(state: UpState, graceMs = 5000): Promise<number[]> {
  const pids = new Set<number>()
  for (const p of state.processes ?? []) if (p.pid !== null) pids.add(p.pid)
  for (const w of state.workloads) for (const pid of [w.appPid, w.sidecarPid]) if (pid !== null) pids.add(pid)
  for (const g of state.gateways) if (g.pid !== null) pids.add(g.pid)
  // where /proc tells, also whatever the listed processes started (an application's own children)
  for (const pid of meshPids(state.dataDir)) pids.add(pid)
  const left = [...pids].filter((pid) => pid !== process.pid && alive(pid) && ofMesh(pid, state.dataDir))
  for (const pid of left) signal(pid, 'SIGTERM')
  const deadline = Date.now() + graceMs
  while (left.some(alive) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50))
  for (const pid of left) if (alive(pid)) signal(pid, 'SIGKILL')
  // nothing is left to scrape
  if (existsSync(prometheusTargetsPath(state.dataDir)))
    try {
      writeAtomically(prometheusTargetsPath(state.dataDir), renderTargetGroups([]))
    } catch {
      // best effort
    }
  return left
}

function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig)
  } catch {
    // already gone
  }
}

/** `loom up` was stopped (a signal or `loom down`) before the mesh was up. */
export class StoppedError extends Error {
  override name = 'StoppedError'
  constructor() {
    super('stopped before the mesh was up')
  }
}

class WaitTimeout extends LoomError {}

/**
 * Whether the proxy whose admin endpoint is on `adminPort` has bound every one of `ports` itself (its admin
 * `/listeners`). A connection that succeeds proves only that someone listens there: another mesh on the machine may
 * hold a port this one found free a moment earlier, and this proxy's own bind then failed.
 */
export async function proxyListensOn(adminPort: number, ports: readonly number[]): Promise<boolean> {
  const r = await fetch(`http://127.0.0.1:${adminPort}/listeners?format=json`, { signal: AbortSignal.timeout(1000) })
  if (r.status !== 200) return false
  const body = (await r.json()) as {
    listener_statuses?: { local_address?: { socket_address?: { port_value?: number } } }[]
  }
  const bound = new Set((body.listener_statuses ?? []).map((l) => l.local_address?.socket_address?.port_value))
  return ports.every((p) => bound.has(p))
}

/** Whether the proxy whose admin endpoint is on `adminPort` says it is LIVE (`/ready`: config and secrets in place). */
export async function proxyLive(adminPort: number): Promise<boolean> {
  const r = await fetch(`http://127.0.0.1:${adminPort}/ready`, { signal: AbortSignal.timeout(1000) })
  await r.body?.cancel()
  return r.status === 200
}

function tcpOpen(port: number): Promise<boolean> {
  return new Promise((res) => {
    const s = net.connect(port, '127.0.0.1')
    s.once('connect', () => {
      s.destroy()
      res(true)
    })
    s.once('error', () => res(false))
  })
}

/**
 * A workload's display, process and log name: its name, with its namespace unless that is `default`
 * (`httpbin.foo`); the CLI takes it wherever it takes a workload's name.
 */
export function workloadName(w: { name: string; namespace: string }): string {
  return w.namespace === 'default' ? w.name : `${w.name}.${w.namespace}`
}

function procName(def: WorkloadDef): string {
  return workloadName(def)
}

interface RunningWorkload {
  def: WorkloadDef
  state: WorkloadState
  /** null: a workload without a sidecar */
  sidecar: Supervised | null
  /** null until the sidecar is ready */
  app: Supervised | null
  /** the application answered once: from then on it is healthy while both processes run */
  ready: boolean
  registration: Record<string, unknown>
}

type Role = ProcessState['role']

export class LocalMesh {
  readonly options: UpOptions
  readonly dataDir: string
  private manifest: UpManifest | null = null
  private control: Supervised | null = null
  api = ''
  xds = ''
  /** the control plane's trust bundle (what its proxies verify its xDS certificate with) */
  private trustBundle = ''
  private readonly workloads: RunningWorkload[] = []
  private readonly gateways: { state: GatewayState; proc: Supervised }[] = []
  /** every process started, by role, as soon as it exists (so a shutdown during startup leaves nothing behind) */
  private readonly procs: { role: Role; proc: Supervised }[] = []
  private heartbeat: NodeJS.Timeout | null = null
  private readonly say: (line: string) => void
  private readonly abort = new AbortController()
  private phase: UpState['phase'] = 'starting'
  private readonly startedAt = new Date().toISOString()
  private stopping: Promise<void> | null = null
  /** what the Prometheus targets file holds now (rewritten only when it changes) */
  private targetsText: string | null = null
  /** transparent mode: the bridge and the workloads' namespaces */
  private net: MeshNetwork | null = null
  /** probes running in workloads' namespaces (stopped with the mesh) */
  private readonly probes = new Set<ChildProcess>()

  constructor(options: UpOptions) {
    this.options = options
    this.dataDir = resolve(options.dataDir)
    this.say = options.progress ?? (() => {})
  }

  /** true once a stop has begun */
  get stopped(): boolean {
    return this.stopping !== null
  }

  private logFile(name: string): string {
    return join(this.dataDir, 'logs', `${name}.log`)
  }

  private supervise(role: Role, spec: Omit<ProcessSpec, 'logFile'>): Supervised {
    const p = new Supervised({
      ...spec,
      logFile: this.logFile(spec.name),
      env: { ...spec.env, [MESH_ENV]: this.dataDir },
    })
    // until the mesh is up, an exit is a failure to start (reported by whoever waits), not something to retry
    p.restartOnExit = this.phase === 'up'
    this.procs.push({ role, proc: p })
    p.onStart = () => this.saveState()
    return p
  }

  /**
   * A Loom process (control plane, gateway, sidecar): it stops by itself if this process dies. With `ns`: in that
   * network namespace, as the sidecar's user (transparent mode).
   */
  private loom(role: Role, name: string, args: string[], ns?: string): Supervised {
    return this.supervise(role, {
      name,
      command: ns === undefined ? process.execPath : 'ip',
      args: ns === undefined ? [LOOM, ...args] : inNamespace(ns, [process.execPath, LOOM, ...args], 'proxy'),
      env: { ...process.env, LOOM_LOG: process.env.LOOM_LOG ?? 'info', LOOM_EXIT_WITH_PARENT: '1' },
      cwd: process.cwd(),
      ipc: true,
    })
  }

  /** Starts a process, unless a stop has begun (then nothing new may start). */
  private launch(p: Supervised): void {
    if (this.stopped) throw new StoppedError()
    p.start()
  }

  private async apiCall(
    method: string,
    path: string,
    body?: unknown,
    timeoutMs = 5000,
  ): Promise<{ status: number; json: unknown }> {
    const res = await fetch(`http://${this.api}${path}`, {
      method,
      signal: AbortSignal.timeout(timeoutMs),
      ...(body === undefined ? {} : { body: typeof body === 'string' ? body : JSON.stringify(body) }),
    })
    const text = await res.text()
    let json: unknown = null
    try {
      json = JSON.parse(text)
    } catch {
      json = text
    }
    return { status: res.status, json }
  }

  /**
   * A bootstrap token for a workload's sidecar, from the control plane, in `<data-dir>/tokens/<ns>.<name>.token`
   * (0600, the directory 0700): the sidecar gets its certificate with it. null when the control plane has no CA.
   */
  private async identityToken(
    name: string,
    namespace: string,
    serviceAccount: string,
  ): Promise<{ file: string; spiffeId: string } | null> {
    const r = await this.apiCall('POST', '/api/v1/tokens', {
      namespace,
      serviceAccount,
      ttlSeconds: IDENTITY_TOKEN_TTL_S,
    })
    if (r.status === 409) return null
    const body = r.json as { token?: string; spiffeId?: string; error?: { message?: string } }
    if (r.status !== 200 || body.token === undefined)
      throw new LoomError(
        ErrorCodes.CONFIG_INVALID,
        `a bootstrap token for ${name} (service account ${serviceAccount}): ${body.error?.message ?? `HTTP ${r.status}`}`,
      )
    const dir = join(this.dataDir, 'tokens')
    mkdirSync(dir, { recursive: true, mode: 0o700 })
    chmodSync(dir, 0o700)
    const file = join(dir, `${namespace}.${name}.token`)
    rmSync(file, { force: true })
    writeFileSync(file, `${body.token}\n`, { mode: 0o600 })
    return { file, spiffeId: body.spiffeId ?? '' }
  }

  /** What a process is, in a sentence: `the control plane`, `the sidecar of web`, `gateway x`, `web`. */
  private describe(p: Supervised): string {
    const role = this.procs.find((x) => x.proc === p)?.role
    if (role === 'control') return 'the control plane'
    if (role === 'gateway') return `gateway ${p.spec.name}`
    if (role === 'sidecar') return `the sidecar of ${p.spec.name.replace(/\.sidecar$/, '')}`
    return `workload ${p.spec.name}`
  }

  private tailOf(p: Supervised): string {
    const lines = p.lastLines(10).filter((l) => l.trim() !== '' && !l.startsWith('[loom] '))
    const where = `its log: ${p.spec.logFile}`
    return lines.length === 0 ? `; ${where}` : `; the last lines of ${where}\n    ${lines.join('\n    ')}`
  }

  /**
   * Whether the proxy `p` has bound all of `ports` (proxyListensOn) and is LIVE (its first config and certificate in
   * place: it can serve); a LoomError when its log says a port is taken (another process took it after it was found
   * free), which waiting longer does not mend.
   */
  private async proxyListensOn(
    p: Supervised,
    adminPort: number,
    ports: readonly number[],
    hint = 'start again',
  ): Promise<boolean> {
    if (await proxyListensOn(adminPort, ports)) return proxyLive(adminPort)
    const taken = p.lastLines(50).find((l) => l.includes('EADDRINUSE'))
    if (taken !== undefined) {
      throw new LoomError(
        ErrorCodes.LISTEN,
        `${this.describe(p)} cannot listen: a port it was given is taken by another process (${hint})${this.tailOf(p)}`,
      )
    }
    return false
  }

  private exitError(p: Supervised, e: ExitInfo, waitingFor: string): LoomError {
    if (e.error !== undefined) {
      const argv = [p.spec.command, ...p.spec.args].join(' ')
      return new LoomError(
        ErrorCodes.LISTEN,
        `${this.describe(p)} could not be started: ${e.error.message} (command: ${argv}, in ${p.spec.cwd})`,
      )
    }
    return new LoomError(
      ErrorCodes.LISTEN,
      `${this.describe(p)} ${describeExit(e)} during start-up (waiting for ${waitingFor})${this.tailOf(p)}`,
    )
  }

  /**
   * Resolves when `probe` says yes; rejects at once when one of `watch` exits (saying how, with the last lines of
   * its log), when `probe` throws a LoomError, when a stop begins, or after `ms`.
   */
  private waitFor(
    what: string,
    ms: number,
    probe: () => Promise<boolean>,
    watch: Supervised[],
    subject?: Supervised,
  ): Promise<void> {
    return new Promise((resolvePromise, reject) => {
      let settled = false
      const offs: (() => void)[] = []
      const done = (err?: Error) => {
        if (settled) return
        settled = true
        clearTimeout(timer)
        for (const off of offs) off()
        if (err === undefined) resolvePromise()
        else reject(err)
      }
      const onAbort = () => done(new StoppedError())
      this.abort.signal.addEventListener('abort', onAbort)
      offs.push(() => this.abort.signal.removeEventListener('abort', onAbort))
      const timer = setTimeout(() => {
        const still = subject === undefined ? '' : this.tailOf(subject)
        done(new WaitTimeout(ErrorCodes.LISTEN, `timed out after ${ms / 1000}s waiting for ${what}${still}`))
      }, ms)
      for (const p of watch) {
        offs.push(p.onExit((e) => done(this.exitError(p, e, what))))
        if (p.proc === null && p.lastExit !== null) return done(this.exitError(p, p.lastExit, what))
      }
      if (this.stopped) return done(new StoppedError())
      void (async () => {
        while (!settled) {
          // a probe that throws a LoomError knows the wait is over (said why); any other failure means "not yet"
          const ok = await probe().catch((err: unknown) => {
            if (err instanceof LoomError) done(err)
            return false
          })
          if (ok) return done()
          if (!settled) await new Promise((r) => setTimeout(r, 50))
        }
      })()
    })
  }

  async up(): Promise<UpState> {
    mkdirSync(join(this.dataDir, 'logs'), { recursive: true })
    const previous = readState(this.dataDir)
    if (previous !== null && previous.pid !== process.pid && alive(previous.pid))
      throw new LoomError(
        ErrorCodes.USAGE,
        `a mesh is already running from ${this.dataDir} (loom up pid ${previous.pid}); stop it with 'loom down --data-dir ${this.dataDir}'`,
      )
    if (previous !== null) {
      const left = await reapLeftovers(previous)
      if (left.length > 0)
        this.say(`stopped ${left.length} process(es) left by a loom up that did not stop (pids ${left.join(', ')})`)
    }
    if (this.options.transparent === true) checkTransparentSupport()
    const leftNet = removeLeftoverNetwork(this.dataDir)
    if (leftNet.length > 0) this.say(`removed the network a loom up that did not stop left (${leftNet.join(', ')})`)
    this.manifest = readUpManifest(this.options.file)
    const m = this.manifest
    if (this.options.transparent === true) {
      const plain = m.workloads.find((w) => !w.sidecar)
      if (plain !== undefined)
        throw new LoomError(
          ErrorCodes.CONFIG_INVALID,
          `${plain.source}: workload ${plain.name} has no sidecar (sidecar.istio.io/inject: "false"), which --transparent does not run`,
        )
      for (const w of m.workloads) parseCapture(w.annotations, `${w.source}: Workload ${w.name}`)
      this.net = new MeshNetwork(this.dataDir)
      writeFileSync(networkMarkerPath(this.dataDir), `${this.net.bridge}\n`)
      this.net.create()
      this.say(`network: bridge ${this.net.bridge} at ${this.net.gateway}/24, a namespace per workload`)
    }
    // (also replaces the targets a loom up that was killed left)
    this.saveState()

    // 1. control plane
    const apiPort = await freePort(this.options.apiPort)
    const xdsPort = await freePort(this.options.xdsPort)
    this.api = `127.0.0.1:${apiPort}`
    // transparent: the sidecars reach the control plane from their namespaces at the bridge's address
    this.xds = `${this.net?.gateway ?? '127.0.0.1'}:${xdsPort}`
    // the control plane serves xDS over TLS; its proxies verify it with the trust bundle it writes
    // (control.ts trustBundleFile: <control data dir>/ca/trust-bundle.pem)
    this.trustBundle = join(this.dataDir, 'control', 'ca', 'trust-bundle.pem')
    const control = this.loom('control', 'control', [
      'control',
      '--data-dir',
      join(this.dataDir, 'control'),
      '--api',
      this.api,
      '--xds',
      this.xds,
      ...(this.options.pathNormalization === undefined ? [] : ['--path-normalization', this.options.pathNormalization]),
      ...(this.options.meshConfig === undefined ? [] : ['--mesh-config', this.options.meshConfig]),
    ])
    this.control = control
    this.launch(control)
    await this.waitFor(
      'the control plane to answer',
      LOOM_READY_MS,
      async () => (await this.apiCall('GET', '/healthz', undefined, 1000)).status === 200,
      [control],
      control,
    )
    this.say(`control plane ready (pid ${control.pid}): api ${this.api}, xds ${this.xds}`)

    // 2. config
    for (const doc of m.istio) {
      const r = await this.apiCall('POST', '/api/v1/apply', doc.text)
      if (r.status !== 200) {
        const errors =
          (r.json as { errors?: { index: number; kind?: string; name?: string; path: string; message: string }[] })
            .errors ?? []
        const lines = errors.map(
          (e) => `${doc.source}: document ${e.index} (${e.kind ?? '?'} ${e.name ?? ''}): ${e.path}: ${e.message}`,
        )
        throw new LoomError(
          ErrorCodes.CONFIG_INVALID,
          `config rejected by the control plane:\n  ${lines.join('\n  ') || JSON.stringify(r.json)}`,
        )
      }
      const n = (r.json as { results: unknown[] }).results.length
      if (n > 0) this.say(`applied ${n} resource${n === 1 ? '' : 's'} from ${doc.source}`)
    }

    // 3. gateways
    await this.startGateways()

    // 4. workloads: register, sidecar, then the application. They start side by side; the first failure is
    // reported at once (the stop that follows ends the others).
    this.heartbeat = setInterval(() => void this.beat(), 5000)
    this.heartbeat.unref()
    await Promise.all(m.workloads.map((w) => this.startWorkload(w)))
    if (this.stopped) throw new StoppedError()
    // the last registrations reach gateways and sidecars asynchronously: say "up" once every proxy has them
    await this.waitFor(
      'every proxy to have the config',
      15_000,
      async () => {
        const r = await this.apiCall('GET', '/api/v1/proxy-status', undefined, 1000)
        const nodes = r.json as { perType: { state: string }[] }[]
        return nodes.length > 0 && nodes.every((n) => n.perType.every((t) => t.state === 'SYNCED'))
      },
      this.procs.map((p) => p.proc),
    ).catch((err: unknown) => {
      if (!(err instanceof WaitTimeout)) throw err
      this.say('warning: some proxies are not in sync yet (see loom proxy-status)')
    })
    this.phase = 'up'
    for (const p of this.procs) p.proc.restartOnExit = true
    this.saveState()
    return this.state()
  }

  private async startGateways(): Promise<void> {
    const selectors = new Map<string, { labels: Record<string, string>; ports: Set<number>; name: string }>()
    for (const doc of this.manifest!.istio) {
      for (const d of loadAll(doc.text) as {
        kind?: string
        metadata?: { name?: string }
        spec?: { selector?: Record<string, string>; servers?: { port?: { number?: number } }[] }
      }[]) {
        if (d?.kind !== 'Gateway') continue
        const labels = d.spec?.selector ?? {}
        const key = JSON.stringify(Object.entries(labels).sort())
        let g = selectors.get(key)
        if (g === undefined) {
          const name = Object.values(labels)[0] ?? d.metadata?.name ?? 'gateway'
          selectors.set(key, (g = { labels, ports: new Set(), name }))
        }
        for (const s of d.spec?.servers ?? []) if (typeof s.port?.number === 'number') g.ports.add(s.port.number)
      }
    }
    let first = true
    for (const g of selectors.values()) {
      const ports: Record<string, number> = {}
      for (const p of [...g.ports].sort((a, b) => a - b)) {
        const preferred =
          first && this.options.gatewayPort !== undefined ? this.options.gatewayPort : p >= 1024 ? p : undefined
        ports[p] = await freePort(preferred)
        first = false
      }
      const adminPort = await freePort()
      const nodeId = `router~127.0.0.1~${g.name}.${GATEWAY_NAMESPACE}~${GATEWAY_NAMESPACE}.svc.cluster.local`
      const labels = Object.entries(g.labels)
        .map(([k, v]) => `${k}=${v}`)
        .join(',')
      // the gateway's own identity: its clusters to sidecars speak mTLS (automatic mTLS)
      const serviceAccount = gatewayServiceAccount(g.name)
      const identity = await this.identityToken(g.name, GATEWAY_NAMESPACE, serviceAccount)
      const proc = this.loom('gateway', g.name, [
        'proxy',
        '--xds',
        this.xds,
        '--xds-ca',
        this.trustBundle,
        '--kind',
        'gateway',
        '--node',
        nodeId,
        '--namespace',
        GATEWAY_NAMESPACE,
        '--service-account',
        serviceAccount,
        '--labels',
        labels,
        '--admin',
        `127.0.0.1:${adminPort}`,
        '--drain-time-s',
        '2',
        '--path-stats',
        String(PATH_STATS),
        '--metadata',
        `WORKLOAD_NAME=${g.name}`,
        '--metadata',
        'GATEWAY_ADDRESS=127.0.0.1',
        '--metadata',
        `GATEWAY_PORTS=${Object.entries(ports)
          .map(([a, b]) => `${a}:${b}`)
          .join(',')}`,
        ...(identity !== null ? ['--identity-token-file', identity.file] : []),
      ])
      const state: GatewayState = {
        name: g.name,
        labels: g.labels,
        nodeId,
        adminPort,
        ports,
        pid: null,
        log: this.logFile(g.name),
      }
      this.gateways.push({ state, proc })
      this.launch(proc)
      await this.waitFor(
        `gateway ${g.name} to listen`,
        LOOM_READY_MS,
        () =>
          this.proxyListensOn(
            proc,
            adminPort,
            Object.values(ports),
            'free it, or have loom up choose a free one: --gateway-port 0',
          ),
        [proc, this.control!],
        proc,
      )
      this.say(
        `gateway ${g.name} ready (pid ${proc.pid}): ${Object.entries(ports)
          .map(([p, l]) => `port ${p} on 127.0.0.1:${l}`)
          .join(', ')}`,
      )
    }
  }

  /**
   * Registers a workload's endpoint: each service port at its local port in `at`, not healthy (no traffic to it)
   * until the application answers. Returns the registration, which heartbeats carry.
   */
  private async register(
    def: WorkloadDef,
    at: Record<string, number>,
    labels: Record<string, string>,
    address = '127.0.0.1',
  ): Promise<Record<string, unknown>> {
    const spec = def.spec
    const registration = {
      name: def.name,
      namespace: def.namespace,
      address,
      ports: spec.ports.map((p) => ({
        name: p.name,
        number: at[p.port]!,
        servicePort: p.port,
        targetPort: p.targetPort ?? p.port,
      })),
      labels,
      serviceAccount: spec.serviceAccount ?? 'default',
      ttlSeconds: 15,
      ...(spec.locality !== undefined ? { locality: spec.locality } : {}),
    }
    if (this.stopped) throw new StoppedError()
    const reg = await this.apiCall('POST', '/api/v1/workloads', registration)
    if (reg.status !== 200)
      throw new LoomError(ErrorCodes.CONFIG_INVALID, `registering ${def.name}: ${JSON.stringify(reg.json)}`)
    await this.apiCall('POST', `/api/v1/workloads/${def.namespace}/${def.name}/heartbeat`, { healthy: false })
    return registration
  }

  private async startWorkload(def: WorkloadDef): Promise<void> {
    if (!def.sidecar) return this.startPlainWorkload(def)
    if (this.net !== null) return this.startCapturedWorkload(def, this.net)
    const spec = def.spec
    const service = spec.labels.app!
    const appPort = await freePort()
    const outboundPort = await freePort()
    const adminPort = await freePort()
    const inbound: Record<string, number> = {}
    for (const p of spec.ports) inbound[p.port] = await freePort()
    const nodeId = `sidecar~127.0.0.1~${def.name}.${def.namespace}~${def.namespace}.svc.cluster.local`
    if (this.stopped) throw new StoppedError()
    const identity = await this.identityToken(def.name, def.namespace, spec.serviceAccount ?? 'default')
    // a sidecar with a certificate speaks mTLS: peers' clusters to it get Istio's mTLS (automatic mTLS)
    const registration = await this.register(
      def,
      inbound,
      identity !== null ? { ...spec.labels, [TLS_MODE_LABEL]: 'istio' } : spec.labels,
    )
    const appPorts: Record<string, number> = {}
    for (const p of spec.ports) appPorts[p.port] = appPort
    const sidecar = this.loom(
      'sidecar',
      `${procName(def)}.sidecar`,
      sidecarArgs({
        xds: this.xds,
        trustBundle: this.trustBundle,
        nodeId,
        namespace: def.namespace,
        labels: spec.labels,
        serviceAccount: spec.serviceAccount,
        admin: `127.0.0.1:${adminPort}`,
        workload: def.name,
        metadata: [`OUTBOUND_PORT=${outboundPort}`, 'INBOUND_ADDRESS=127.0.0.1'],
        inbound,
        appPorts,
        locality: spec.locality,
        tokenFile: identity !== null ? identity.file : null,
      }),
    )
    const state: WorkloadState = {
      name: def.name,
      namespace: def.namespace,
      service: `${service}.${def.namespace}.svc.cluster.local`,
      labels: spec.labels,
      nodeId,
      appPort,
      outboundPort,
      adminPort,
      inbound,
      appPid: null,
      sidecarPid: null,
      appLog: this.logFile(procName(def)),
      sidecarLog: this.logFile(`${procName(def)}.sidecar`),
      sidecar: true,
      spiffeId: identity?.spiffeId ?? null,
      identityTokenFile: identity?.file ?? null,
    }
    const rw: RunningWorkload = { def, state, sidecar, app: null, ready: false, registration }
    // heart-beaten (as not ready) from now on, so a slow start does not outlive its registration
    this.workloads.push(rw)
    this.launch(sidecar)
    await this.waitFor(
      `the sidecar of ${def.name} to listen`,
      LOOM_READY_MS,
      () => this.proxyListensOn(sidecar, adminPort, [outboundPort, ...Object.values(inbound)]),
      [sidecar, this.control!],
      sidecar,
    )
    await this.runApp(rw, appPort, {
      HTTP_PROXY: `http://127.0.0.1:${outboundPort}`,
      http_proxy: `http://127.0.0.1:${outboundPort}`,
      NO_PROXY: '',
      no_proxy: '',
    })
  }

  /**
   * Transparent mode: the workload in a network namespace of its own (netns.ts). It is registered at its
   * namespace's address and its service ports themselves (where iptables captures them for the sidecar's 15006);
   * the sidecar runs as its own user (the capture rules let its connections out), binds 15001 and 15006 and its
   * admin port (on the namespace's address, left out of the capture so the control plane can read it); the
   * application listens on a port of its namespace's loopback, which nothing outside the namespace reaches, and
   * calls services by name (the namespace's /etc/hosts) with no proxy setting.
   */
  private async startCapturedWorkload(def: WorkloadDef, netw: MeshNetwork): Promise<void> {
    const spec = def.spec
    const service = spec.labels.app!
    const appPort = await freePort()
    const adminPort = await freePort()
    const capture = parseCapture(def.annotations, `${def.source}: Workload ${def.name}`)
    capture.excludeInboundPorts = [adminPort, ...capture.excludeInboundPorts]
    if (this.stopped) throw new StoppedError()
    const w = netw.addWorkload(capture)
    const podName = `${def.name}-${Math.random().toString(36).slice(2, 7)}`
    netw.writeHosts(w, podName, this.hostEntries(def.namespace, netw))
    const inbound: Record<string, number> = {}
    const appPorts: Record<string, number> = {}
    for (const p of spec.ports) {
      inbound[p.port] = p.port
      appPorts[p.port] = appPort
    }
    const nodeId = `sidecar~${w.ip}~${def.name}.${def.namespace}~${def.namespace}.svc.cluster.local`
    const identity = await this.identityToken(def.name, def.namespace, spec.serviceAccount ?? 'default')
    const registration = await this.register(
      def,
      inbound,
      identity !== null ? { ...spec.labels, [TLS_MODE_LABEL]: 'istio' } : spec.labels,
      w.ip,
    )
    // the sidecar's user reads its token and the trust bundle from a directory of its own
    const own = netw.proxyDir(procName(def))
    const trustBundle = join(own, 'trust-bundle.pem')
    copyFileSync(this.trustBundle, trustBundle)
    chownSync(trustBundle, PROXY_UID, PROXY_GID)
    let tokenFile: string | null = null
    if (identity !== null) {
      tokenFile = join(own, 'token')
      copyFileSync(identity.file, tokenFile)
      chmodSync(tokenFile, 0o600)
      chownSync(tokenFile, PROXY_UID, PROXY_GID)
    }
    const sidecar = this.loom(
      'sidecar',
      `${procName(def)}.sidecar`,
      sidecarArgs({
        xds: this.xds,
        trustBundle,
        nodeId,
        ip: w.ip,
        namespace: def.namespace,
        labels: spec.labels,
        serviceAccount: spec.serviceAccount,
        admin: `${w.ip}:${adminPort}`,
        workload: def.name,
        metadata: [
          'INTERCEPTION_MODE=REDIRECT',
          `OUTBOUND_PORT=${OUTBOUND_CAPTURE_PORT}`,
          `INBOUND_CAPTURE_PORT=${INBOUND_CAPTURE_PORT}`,
          `INBOUND_ADDRESS=${w.ip}`,
        ],
        inbound,
        appPorts,
        locality: spec.locality,
        tokenFile,
      }),
      w.ns,
    )
    const state: WorkloadState = {
      name: def.name,
      namespace: def.namespace,
      service: `${service}.${def.namespace}.svc.cluster.local`,
      labels: spec.labels,
      nodeId,
      appPort,
      outboundPort: OUTBOUND_CAPTURE_PORT,
      adminPort,
      inbound,
      appPid: null,
      sidecarPid: null,
      appLog: this.logFile(procName(def)),
      sidecarLog: this.logFile(`${procName(def)}.sidecar`),
      sidecar: true,
      address: w.ip,
      netns: w.ns,
      spiffeId: identity?.spiffeId ?? null,
      identityTokenFile: tokenFile,
    }
    const rw: RunningWorkload = { def, state, sidecar, app: null, ready: false, registration }
    this.workloads.push(rw)
    this.launch(sidecar)
    await this.inNamespaceWait(
      w,
      `the sidecar of ${def.name} to listen`,
      LOOM_READY_MS,
      [`tcp:${OUTBOUND_CAPTURE_PORT}`, `tcp:${INBOUND_CAPTURE_PORT}`],
      [sidecar, this.control!],
      sidecar,
    )
    await this.runApp(rw, appPort, { HTTP_PROXY: '', http_proxy: '', HOSTNAME: podName, POD_NAME: podName }, w)
  }

  /**
   * Waits for `checks` to pass inside the namespace (one probe process there, see NS_PROBE), failing at once as
   * `waitFor` does when a watched process exits.
   */
  private async inNamespaceWait(
    w: WorkloadNet,
    what: string,
    ms: number,
    checks: string[],
    watch: Supervised[],
    subject: Supervised,
  ): Promise<void> {
    let ok = false
    const probe = spawn('ip', inNamespace(w.ns, [process.execPath, '-e', NS_PROBE, String(ms), ...checks], 'loom'), {
      stdio: 'ignore',
    })
    this.probes.add(probe)
    probe.once('exit', (code) => {
      ok = code === 0
      this.probes.delete(probe)
    })
    probe.once('error', () => this.probes.delete(probe))
    try {
      await this.waitFor(what, ms, async () => ok, watch, subject)
    } finally {
      probe.kill('SIGKILL')
    }
  }

  /**
   * A namespace's /etc/hosts entries: every service of the mesh's workloads at its VIP, by its full name, `<name>.<ns>`
   * and `<name>.<ns>.svc`, and by its short name in its own namespace.
   */
  private hostEntries(namespace: string, netw: MeshNetwork): { vip: string; names: string[] }[] {
    const seen = new Set<string>()
    const out: { vip: string; names: string[] }[] = []
    for (const w of this.manifest!.workloads) {
      const app = w.spec.labels.app!
      const host = `${app}.${w.namespace}.svc.cluster.local`
      if (seen.has(host)) continue
      seen.add(host)
      const names = [host, `${app}.${w.namespace}.svc`, `${app}.${w.namespace}`]
      if (w.namespace === namespace) names.push(app)
      out.push({ vip: netw.vip(host), names })
    }
    return out
  }

  /**
   * A workload without a sidecar (`sidecar.istio.io/inject: "false"`): registered at the application's own port
   * for every service port, without the sidecar mark (so meshed clients send it plain text), no identity; the
   * application calls out directly.
   */
  private async startPlainWorkload(def: WorkloadDef): Promise<void> {
    const spec = def.spec
    const appPort = await freePort()
    const inbound: Record<string, number> = {}
    for (const p of spec.ports) inbound[p.port] = appPort
    const registration = await this.register(def, inbound, spec.labels)
    const state: WorkloadState = {
      name: def.name,
      namespace: def.namespace,
      service: `${spec.labels.app!}.${def.namespace}.svc.cluster.local`,
      labels: spec.labels,
      nodeId: '',
      appPort,
      outboundPort: 0,
      adminPort: 0,
      inbound,
      appPid: null,
      sidecarPid: null,
      appLog: this.logFile(procName(def)),
      sidecarLog: '',
      sidecar: false,
      spiffeId: null,
      identityTokenFile: null,
    }
    const rw: RunningWorkload = { def, state, sidecar: null, app: null, ready: false, registration }
    this.workloads.push(rw)
    await this.runApp(rw, appPort, {})
  }

  /** Starts a workload's application on `appPort`, waits until it answers, and marks the workload healthy. */
  private async runApp(
    rw: RunningWorkload,
    appPort: number,
    proxyEnv: Record<string, string>,
    netw?: WorkloadNet,
  ): Promise<void> {
    const { def, sidecar } = rw
    const spec = def.spec
    const [command, ...args] = spec.command
    // spawn would say `spawn <command> ENOENT` for a missing working directory too: say which is missing
    if (!existsSync(def.cwd))
      throw new LoomError(
        ErrorCodes.CONFIG_INVALID,
        `workload ${def.name} could not be started: its working directory ${def.cwd} does not exist (${def.source})`,
      )
    const podName = `${def.name}-${Math.random().toString(36).slice(2, 7)}`
    const program = command === 'node' ? process.execPath : command!
    const app = this.supervise('app', {
      name: procName(def),
      group: true,
      command: netw === undefined ? program : 'ip',
      args: netw === undefined ? args : inNamespace(netw.ns, [program, ...args], 'app'),
      cwd: def.cwd,
      env: {
        ...process.env,
        ...spec.env,
        PORT: String(appPort),
        HOSTNAME: podName,
        POD_NAME: podName,
        ...proxyEnv,
        SERVICE_ACCOUNT: spec.serviceAccount ?? 'default',
      },
    })
    rw.app = app
    this.launch(app)
    const check = spec.healthPath === undefined ? `tcp:${appPort}` : `http:${appPort}${spec.healthPath}`
    if (netw !== undefined)
      await this.inNamespaceWait(
        netw,
        `${def.name} to listen on its port ${appPort}`,
        APP_READY_MS,
        [check],
        [app, ...(sidecar === null ? [] : [sidecar]), this.control!],
        app,
      )
    else
      await this.waitFor(
        `${def.name} to listen on its port ${appPort}`,
        APP_READY_MS,
        async () => {
          if (spec.healthPath === undefined) return tcpOpen(appPort)
          const r = await fetch(`http://127.0.0.1:${appPort}${spec.healthPath}`, { signal: AbortSignal.timeout(1000) })
          return r.status === 200
        },
        [app, ...(sidecar === null ? [] : [sidecar]), this.control!],
        app,
      )
    rw.ready = true
    await this.apiCall('POST', `/api/v1/workloads/${def.namespace}/${def.name}/heartbeat`, { healthy: true })
    this.saveState()
    const proc = sidecar === null ? 'no sidecar' : `sidecar pid ${sidecar.pid}`
    this.say(`${def.name} ready (${rw.state.service}; app pid ${app.pid}, ${proc})`)
  }

  /**
   * Heartbeats, each carrying the registration: a control plane that lost it (a restart without its data dir)
   * registers the workload again from the heartbeat itself. Health = ready, and both processes running.
   */
  private async beat(): Promise<void> {
    await Promise.all(
      this.workloads.map(async (w) => {
        const healthy = w.ready && w.app?.running === true && (w.sidecar?.running ?? true)
        await this.apiCall(
          'POST',
          `/api/v1/workloads/${w.def.namespace}/${w.def.name}/heartbeat`,
          { healthy, registration: w.registration },
          2000,
        ).catch(() => {
          // the control plane is restarting; the next beat tells it again
        })
      }),
    )
  }

  state(): UpState {
    return {
      pid: process.pid,
      phase: this.phase,
      dataDir: this.dataDir,
      api: this.api,
      xds: this.xds,
      startedAt: this.startedAt,
      workloads: this.workloads
        .filter((w) => w.ready)
        .map((w) => ({ ...w.state, appPid: w.app?.pid ?? null, sidecarPid: w.sidecar?.pid ?? null })),
      gateways: this.gateways.map((g) => ({ ...g.state, pid: g.proc.pid })),
      processes: this.procs.map((p) => ({ name: p.proc.spec.name, role: p.role, pid: p.proc.pid })),
    }
  }

  private saveState(): void {
    if (this.stopped) return
    try {
      writeAtomically(statePath(this.dataDir), `${JSON.stringify(this.state(), null, 2)}\n`)
    } catch {
      // best effort
    }
    this.writeTargets(this.scrapeTargets())
  }

  /**
   * Every proxy started so far, for Prometheus: gateways and sidecars from when their process is started until the
   * mesh stops. A proxy being restarted stays a target (its scrapes fail meanwhile: `up` is 0), as a restarting
   * container stays in its pod.
   */
  private scrapeTargets(): ScrapeTarget[] {
    const targets: ScrapeTarget[] = []
    for (const g of this.gateways)
      targets.push({
        adminAddress: `127.0.0.1:${g.state.adminPort}`,
        kind: 'gateway',
        namespace: GATEWAY_NAMESPACE,
        workload: g.state.name,
        labels: g.state.labels,
      })
    for (const w of this.workloads)
      if (w.sidecar !== null)
        targets.push({
          adminAddress: `${w.state.address ?? '127.0.0.1'}:${w.state.adminPort}`,
          kind: 'sidecar',
          namespace: w.state.namespace,
          workload: w.state.name,
          labels: w.state.labels,
        })
    return targets
  }

  /** Rewrites the Prometheus targets file when its content changes (best effort: scraping is not the mesh's job). */
  private writeTargets(targets: ScrapeTarget[]): void {
    const text = renderTargetGroups(targets)
    if (text === this.targetsText) return
    try {
      const file = prometheusTargetsPath(this.dataDir)
      mkdirSync(join(file, '..'), { recursive: true })
      writeAtomically(file, text)
      this.targetsText = text
    } catch {
      // the next change tries again
    }
  }

  /**
   * Stops everything started so far, also in the middle of `up()` (which then rejects with StoppedError): the
   * applications first, then sidecars (they drain), gateways, and the control plane last. Calling it again returns
   * the same stop.
   */
  down(): Promise<void> {
    this.stopping ??= this.stopAll()
    return this.stopping
  }

  private async stopAll(): Promise<void> {
    this.abort.abort()
    if (this.heartbeat !== null) clearInterval(this.heartbeat)
    // Prometheus stops scraping now (and marks the proxies' series stale) rather than failing on each one that stops;
    // only if the file is this mesh's (not that of another loom up this one refused to run beside)
    if (this.targetsText !== null) this.writeTargets([])
    // a Ctrl-C reaches every process of the terminal's group at once: nothing may be restarted from here on
    for (const p of this.procs) p.proc.hold()
    const of = (role: Role) => this.procs.filter((p) => p.role === role).map((p) => p.proc)
    const running = this.procs.filter((p) => p.proc.running).map((p) => `${p.proc.spec.name} (pid ${p.proc.pid})`)
    if (running.length > 0) this.say(`stopping ${running.join(', ')}`)
    if (of('app').some((p) => p.running)) this.say('stopping applications')
    await Promise.all(of('app').map((p) => p.stop(5000)))
    if (this.control?.running === true)
      await Promise.all(
        this.workloads.map((w) =>
          this.apiCall('DELETE', `/api/v1/workloads/${w.def.namespace}/${w.def.name}`, undefined, 1000).catch(() => {}),
        ),
      )
    const proxies = [...of('sidecar'), ...of('gateway')]
    if (proxies.some((p) => p.running)) this.say('stopping sidecars and gateways')
    await Promise.all(proxies.map((p) => p.stop(5000)))
    if (this.control?.running === true) this.say('stopping the control plane')
    await this.control?.stop(5000)
    for (const p of this.probes) p.kill('SIGKILL')
    this.removeNet()
    this.removeState()
  }

  /** Removes up.json if it is this process's (not that of another `loom up` this one refused to run beside). */
  private removeState(): void {
    if (readState(this.dataDir)?.pid === process.pid) rmSync(statePath(this.dataDir), { force: true })
  }

  /** SIGKILL to every process now (a second Ctrl-C: stop without waiting). */
  kill(): void {
    this.abort.abort()
    this.stopping ??= Promise.resolve()
    if (this.targetsText !== null) this.writeTargets([])
    for (const p of this.procs) p.proc.kill()
    for (const p of this.probes) p.kill('SIGKILL')
    this.removeNet()
    this.removeState()
  }

  /** Transparent mode: the namespaces (their veths go with them), the bridge, the rules, the hosts files. */
  private removeNet(): void {
    if (this.net === null) return
    const removed = this.net.remove()
    rmSync(networkMarkerPath(this.dataDir), { force: true })
    this.net = null
    if (removed.length > 0) this.say(`removed ${removed.join(', ')}`)
  }
}
