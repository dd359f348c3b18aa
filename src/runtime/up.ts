/**
 * `loom up`: a whole mesh of local processes, no Kubernetes and no root.
 *
 * Order: the control plane; the Istio config; gateways; then per workload: register it, start its sidecar, wait
 * until the sidecar has its listeners and its config is SYNCED, and only then start the application (given the
 * sidecar as its HTTP proxy). The application listens on a private port that only its sidecar's inbound listener
 * forwards to; peers reach it through the sidecar. Every process is supervised (restart with backoff) and logs to
 * `<data-dir>/logs/`. Shutdown is the reverse: applications, then sidecars (draining), gateways, control plane.
 */
import { mkdirSync, rmSync, writeFileSync } from 'node:fs'
import * as net from 'node:net'
import { join, resolve } from 'node:path'
import { loadAll } from 'js-yaml'
import { ErrorCodes, LoomError } from '../core/errors.js'
import { readUpManifest, type UpManifest, type WorkloadDef } from './manifest.js'
import { freePort } from './ports.js'
import { Supervised } from './supervisor.js'

/** the `loom` executable this process was started as (child processes run the same build) */
const LOOM = process.argv[1]!

export interface UpOptions {
  file: string
  dataDir: string
  apiPort?: number
  xdsPort?: number
  /** the local port for the first gateway server port (default: the server port itself if free, else any) */
  gatewayPort?: number
  /** progress lines go here */
  progress?: (line: string) => void
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
  /** service port → sidecar inbound port */
  inbound: Record<string, number>
  appPid: number | null
  sidecarPid: number | null
  appLog: string
  sidecarLog: string
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

export interface UpState {
  pid: number
  dataDir: string
  api: string
  xds: string
  startedAt: string
  workloads: WorkloadState[]
  gateways: GatewayState[]
}

export function statePath(dataDir: string): string {
  return join(dataDir, 'up.json')
}

async function until(what: string, ms: number, fn: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + ms
  for (;;) {
    if (await fn().catch(() => false)) return
    if (Date.now() > deadline)
      throw new LoomError(ErrorCodes.LISTEN, `timed out after ${ms / 1000}s waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 50))
  }
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

interface RunningWorkload {
  def: WorkloadDef
  state: WorkloadState
  sidecar: Supervised
  app: Supervised
  registration: Record<string, unknown>
}

export class LocalMesh {
  readonly options: UpOptions
  readonly dataDir: string
  private manifest: UpManifest | null = null
  private control: Supervised | null = null
  api = ''
  xds = ''
  private readonly workloads: RunningWorkload[] = []
  private readonly gateways: { state: GatewayState; proc: Supervised }[] = []
  /** every process started, by role, as soon as it exists (so a shutdown during startup leaves nothing behind) */
  private readonly procs: { role: 'app' | 'proxy'; proc: Supervised }[] = []
  private heartbeat: NodeJS.Timeout | null = null
  private readonly say: (line: string) => void
  private stopped = false

  constructor(options: UpOptions) {
    this.options = options
    this.dataDir = resolve(options.dataDir)
    this.say = options.progress ?? (() => {})
  }

  private logFile(name: string): string {
    return join(this.dataDir, 'logs', `${name}.log`)
  }

  private loom(name: string, args: string[], onLine?: (l: string) => void): Supervised {
    const p = new Supervised({
      name,
      command: process.execPath,
      args: [LOOM, ...args],
      env: { ...process.env, LOOM_LOG: process.env.LOOM_LOG ?? 'info' },
      cwd: process.cwd(),
      logFile: this.logFile(name),
      ...(onLine === undefined ? {} : { onStderrLine: onLine }),
    })
    if (name !== 'control') this.procs.push({ role: 'proxy', proc: p })
    return p
  }

  private async apiCall(method: string, path: string, body?: unknown): Promise<{ status: number; json: unknown }> {
    const res = await fetch(`http://${this.api}${path}`, {
      method,
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

  async up(): Promise<UpState> {
    mkdirSync(join(this.dataDir, 'logs'), { recursive: true })
    this.manifest = readUpManifest(this.options.file)
    const m = this.manifest

    // 1. control plane
    const apiPort = await freePort(this.options.apiPort)
    const xdsPort = await freePort(this.options.xdsPort)
    this.api = `127.0.0.1:${apiPort}`
    this.xds = `127.0.0.1:${xdsPort}`
    this.control = this.loom('control', [
      'control',
      '--data-dir',
      join(this.dataDir, 'control'),
      '--api',
      this.api,
      '--xds',
      this.xds,
    ])
    this.control.start()
    await until('the control plane', 20_000, async () => (await this.apiCall('GET', '/healthz')).status === 200)
    this.say(`control plane ready: api ${this.api}, xds ${this.xds}`)

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

    // 4. workloads: register, sidecar, then the application
    this.heartbeat = setInterval(() => void this.beat(), 5000)
    this.heartbeat.unref()
    await Promise.all(m.workloads.map((w) => this.startWorkload(w)))
    // the last registrations reach gateways and sidecars asynchronously: say "up" once every proxy has them
    await until('every proxy to have the config', 15_000, async () => {
      const r = await this.apiCall('GET', '/api/v1/proxy-status')
      const nodes = r.json as { perType: { state: string }[] }[]
      return nodes.length > 0 && nodes.every((n) => n.perType.every((t) => t.state === 'SYNCED'))
    }).catch(() => this.say('warning: some proxies are not in sync yet (see loom proxy-status)'))
    const state = this.state()
    writeFileSync(statePath(this.dataDir), `${JSON.stringify(state, null, 2)}\n`)
    return state
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
      const nodeId = `router~127.0.0.1~${g.name}.default~default.svc.cluster.local`
      const labels = Object.entries(g.labels)
        .map(([k, v]) => `${k}=${v}`)
        .join(',')
      const proc = this.loom(g.name, [
        'proxy',
        '--xds',
        this.xds,
        '--kind',
        'gateway',
        '--node',
        nodeId,
        '--labels',
        labels,
        '--admin',
        `127.0.0.1:${adminPort}`,
        '--drain-time-s',
        '2',
        '--metadata',
        'GATEWAY_ADDRESS=127.0.0.1',
        '--metadata',
        `GATEWAY_PORTS=${Object.entries(ports)
          .map(([a, b]) => `${a}:${b}`)
          .join(',')}`,
      ])
      proc.start()
      const state: GatewayState = {
        name: g.name,
        labels: g.labels,
        nodeId,
        adminPort,
        ports,
        pid: proc.pid,
        log: this.logFile(g.name),
      }
      this.gateways.push({ state, proc })
      await until(`gateway ${g.name}`, 20_000, async () => {
        for (const local of Object.values(ports)) if (!(await tcpOpen(local))) return false
        return true
      })
      this.say(
        `gateway ${g.name} ready: ${Object.entries(ports)
          .map(([p, l]) => `port ${p} on 127.0.0.1:${l}`)
          .join(', ')}`,
      )
    }
  }

  private async startWorkload(def: WorkloadDef): Promise<void> {
    const spec = def.spec
    const service = spec.labels.app!
    const appPort = await freePort()
    const outboundPort = await freePort()
    const adminPort = await freePort()
    const inbound: Record<string, number> = {}
    for (const p of spec.ports) inbound[p.port] = await freePort()
    const nodeId = `sidecar~127.0.0.1~${def.name}.${def.namespace}~${def.namespace}.svc.cluster.local`
    const registration = {
      name: def.name,
      namespace: def.namespace,
      address: '127.0.0.1',
      ports: spec.ports.map((p) => ({ name: p.name, number: inbound[p.port]!, servicePort: p.port })),
      labels: spec.labels,
      serviceAccount: spec.serviceAccount ?? 'default',
      ttlSeconds: 15,
    }
    const reg = await this.apiCall('POST', '/api/v1/workloads', registration)
    if (reg.status !== 200)
      throw new LoomError(ErrorCodes.CONFIG_INVALID, `registering ${def.name}: ${JSON.stringify(reg.json)}`)
    // not healthy (no traffic to it) until the application answers
    await this.apiCall('POST', `/api/v1/workloads/${def.namespace}/${def.name}/heartbeat`, { healthy: false })
    const portMap = (m: Record<string, number>) =>
      Object.entries(m)
        .map(([a, b]) => `${a}:${b}`)
        .join(',')
    const appPorts: Record<string, number> = {}
    for (const p of spec.ports) appPorts[p.port] = appPort
    const sidecar = this.loom(`${def.name}.sidecar`, [
      'proxy',
      '--xds',
      this.xds,
      '--node',
      nodeId,
      '--namespace',
      def.namespace,
      '--labels',
      Object.entries(spec.labels)
        .map(([k, v]) => `${k}=${v}`)
        .join(','),
      '--service-account',
      spec.serviceAccount ?? 'default',
      '--admin',
      `127.0.0.1:${adminPort}`,
      '--drain-time-s',
      '2',
      '--metadata',
      `OUTBOUND_PORT=${outboundPort}`,
      '--metadata',
      'INBOUND_ADDRESS=127.0.0.1',
      '--metadata',
      `INBOUND_PORTS=${portMap(inbound)}`,
      '--metadata',
      `APP_PORTS=${portMap(appPorts)}`,
    ])
    sidecar.start()
    await until(`the sidecar of ${def.name}`, 20_000, async () => {
      for (const port of [outboundPort, ...Object.values(inbound)]) if (!(await tcpOpen(port))) return false
      return true
    })
    const [command, ...args] = spec.command
    const podName = `${def.name}-${Math.random().toString(36).slice(2, 7)}`
    const app = new Supervised({
      name: def.name,
      command: command === 'node' ? process.execPath : command!,
      args,
      cwd: def.cwd,
      logFile: this.logFile(def.name),
      env: {
        ...process.env,
        ...spec.env,
        PORT: String(appPort),
        HTTP_PROXY: `http://127.0.0.1:${outboundPort}`,
        http_proxy: `http://127.0.0.1:${outboundPort}`,
        NO_PROXY: '',
        no_proxy: '',
        HOSTNAME: podName,
        POD_NAME: podName,
        SERVICE_ACCOUNT: spec.serviceAccount ?? 'default',
      },
    })
    this.procs.push({ role: 'app', proc: app })
    app.start()
    await until(`${def.name} to listen on its port`, 20_000, async () => {
      if (spec.healthPath === undefined) return tcpOpen(appPort)
      const r = await fetch(`http://127.0.0.1:${appPort}${spec.healthPath}`)
      return r.status === 200
    })
    await this.apiCall('POST', `/api/v1/workloads/${def.namespace}/${def.name}/heartbeat`, { healthy: true })
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
      appPid: app.pid,
      sidecarPid: sidecar.pid,
      appLog: this.logFile(def.name),
      sidecarLog: this.logFile(`${def.name}.sidecar`),
    }
    const rw: RunningWorkload = { def, state, sidecar, app, registration }
    app.onStart = () => {
      rw.state.appPid = app.pid
      this.saveState()
    }
    sidecar.onStart = () => {
      rw.state.sidecarPid = sidecar.pid
      this.saveState()
    }
    this.workloads.push(rw)
    this.say(`${def.name} ready (${rw.state.service}, sidecar ${nodeId.split('~')[2]})`)
  }

  /** Heartbeats; re-registers workloads a restarted control plane forgot. Health = both processes running. */
  private async beat(): Promise<void> {
    for (const w of this.workloads) {
      const healthy = w.app.running && w.sidecar.running
      try {
        const r = await this.apiCall('POST', `/api/v1/workloads/${w.def.namespace}/${w.def.name}/heartbeat`, {
          healthy,
        })
        if (r.status === 404) {
          await this.apiCall('POST', '/api/v1/workloads', w.registration)
          await this.apiCall('POST', `/api/v1/workloads/${w.def.namespace}/${w.def.name}/heartbeat`, { healthy })
        }
      } catch {
        // the control plane is restarting; try again on the next beat
      }
    }
  }

  state(): UpState {
    return {
      pid: process.pid,
      dataDir: this.dataDir,
      api: this.api,
      xds: this.xds,
      startedAt: new Date().toISOString(),
      workloads: this.workloads.map((w) => w.state),
      gateways: this.gateways.map((g) => ({ ...g.state, pid: g.proc.pid })),
    }
  }

  private saveState(): void {
    if (this.stopped) return
    try {
      writeFileSync(statePath(this.dataDir), `${JSON.stringify(this.state(), null, 2)}\n`)
    } catch {
      // best effort
    }
  }

  /** Applications first, then sidecars (they drain), gateways, and the control plane last. */
  async down(): Promise<void> {
    if (this.stopped) return
    this.stopped = true
    if (this.heartbeat !== null) clearInterval(this.heartbeat)
    // a Ctrl-C reaches every process of the terminal's group at once: nothing may be restarted from here on
    this.control?.hold()
    for (const p of this.procs) p.proc.hold()
    this.say('stopping applications')
    await Promise.all(this.procs.filter((p) => p.role === 'app').map((p) => p.proc.stop(5000)))
    for (const w of this.workloads) {
      await this.apiCall('DELETE', `/api/v1/workloads/${w.def.namespace}/${w.def.name}`).catch(() => {})
    }
    this.say('stopping sidecars and gateways')
    await Promise.all(this.procs.filter((p) => p.role === 'proxy').map((p) => p.proc.stop(5000)))
    this.say('stopping the control plane')
    await this.control?.stop(5000)
    rmSync(statePath(this.dataDir), { force: true })
  }
}
