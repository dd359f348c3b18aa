// A fleet of simulated proxies for the control-plane benchmark, run as a child process (node's fork, IPC channel).
// Each proxy is one real `AdsClient` (our xDS client) with its own node id and its own gRPC connection: it decodes
// every resource, subscribes to the RDS and EDS names its listeners and clusters reference (as `loom proxy --xds`
// does), ACKs, and records when it sent each ACK. There is no data plane.
//
// Protocol (messages over the IPC channel; every request carries an `id` that its reply repeats):
//   parent → { type: 'start', server, from, to }     create and start clients [from, to)
//   parent → { type: 'mark' }                        remember every client's versions; start a new ACK log
//   parent → { type: 'summary', expect }             how many clients match `expect`, connections, NACKs
//   parent → { type: 'collect', expect }             per client: when it ACKed the config it holds now
//   parent → { type: 'close' }                       close every client
//   child  → { type: 'ready' } once loaded; { type: 'reply', id, ... } per request; { type: 'error', message }
// Times are `performance.timeOrigin + performance.now()` (ms since the epoch, sub-ms resolution), comparable
// across the processes of one machine.
import * as grpc from '@grpc/grpc-js'
import { AdsClient, type ConsumerVerdict } from '../../src/xds/client.js'
import { TYPE_URL } from '../../src/xds/snapshot.js'

export const now = (): number => performance.timeOrigin + performance.now()

/** The four types every simulated proxy ends up subscribed to, in the order summaries list them. */
export const TYPES = [TYPE_URL.listener, TYPE_URL.cluster, TYPE_URL.endpoint, TYPE_URL.route] as const

/** What "has the new config" means for one client. */
export interface Expect {
  /** resource counts the client must hold, by type URL */
  counts: Record<string, number>
  /** types whose version must differ from the version the client held at the last mark */
  changed: string[]
}

export interface Summary {
  clients: number
  connected: number
  /** clients holding what `expect` describes (ACKed) */
  matching: number
  /** streams opened beyond the first, over all clients */
  reconnects: number
  nacks: number
  responses: number
  /** time of the newest response any client handled (0 if none) */
  lastResponseAt: number
  warnings: Record<string, number>
}

export interface Collected {
  /** per client (in index order): when it sent the last ACK that got it to the expected config, or null */
  done: (number | null)[]
  /** per client: when it received (before decoding) the response that ACK answered, or null */
  received: (number | null)[]
}

export type Request =
  | { type: 'start'; id: number; server: string; from: number; to: number }
  | { type: 'mark'; id: number }
  | { type: 'summary'; id: number; expect: Expect }
  | { type: 'collect'; id: number; expect: Expect }
  | { type: 'close'; id: number }

interface TypeRec {
  version: string
  count: number
  /** version → [first time it was received, first time it was ACKed], since the last mark */
  log: Map<string, [number, number]>
  /** count and receive time of the response being handled */
  pendingCount: number
  pendingAt: number
  /** version held at the last mark */
  before: string
}

interface Sim {
  client: AdsClient
  types: Map<string, TypeRec>
  routes: string[]
  endpoints: string[]
  nacks: number
}

/** The node id and metadata of simulated proxy `i`, like a Kubernetes pod's sidecar. */
export function simNode(i: number): { id: string; metadata: Record<string, unknown> } {
  const ip = `10.0.${i >> 8}.${i & 255}`
  const app = `app-${i}`
  return {
    id: `sidecar~${ip}~${app}.default~default.svc.cluster.local`,
    metadata: {
      NAMESPACE: 'default',
      LABELS: { app },
      INSTANCE_IPS: ip,
      GENERATOR: 'envoy',
      OUTBOUND_PORT: '15001',
    },
  }
}

/** RDS names a listener references (HCM `rds.route_config_name`, wherever it sits). */
function routeNames(value: unknown, out: Set<string>): void {
  if (Array.isArray(value)) {
    for (const v of value) routeNames(v, out)
  } else if (value !== null && typeof value === 'object') {
    for (const [k, v] of Object.entries(value)) {
      if (k === 'route_config_name' && typeof v === 'string') out.add(v)
      else routeNames(v, out)
    }
  }
}

/** EDS names of the EDS clusters (`eds_cluster_config.service_name`, else the cluster name). */
function edsNames(clusters: Map<string, Record<string, unknown>>): string[] {
  const out: string[] = []
  for (const [name, c] of clusters) {
    const eds = c.eds_cluster_config as { service_name?: string } | undefined
    if (eds !== undefined || c.type === 'EDS') out.push(eds?.service_name || name)
  }
  return out.sort()
}

const sims: Sim[] = []
const warnings: Record<string, number> = {}
let responses = 0
let lastResponseAt = 0

function newRec(): TypeRec {
  return { version: '', count: 0, log: new Map(), pendingCount: 0, pendingAt: 0, before: '' }
}

function startClient(server: string, i: number): Sim {
  const node = simNode(i)
  // One connection per proxy, as real sidecars have: grpc-js shares a connection between channels to the same
  // target with equal options and credentials, so each client gets credentials equal only to themselves.
  const credentials = grpc.credentials.createInsecure()
  Object.assign(credentials, { _equals: (other: unknown) => other === credentials })
  const types = new Map<string, TypeRec>(TYPES.map((t) => [t, newRec()]))
  const sim: Sim = { client: undefined as unknown as AdsClient, types, routes: [], endpoints: [], nacks: 0 }
  const client = new AdsClient({
    server,
    node: { id: node.id, cluster: String((node.metadata.LABELS as { app: string }).app), metadata: node.metadata },
    credentials,
    log: (level, msg) => {
      if (level === 'warn' || level === 'error') warnings[msg] = (warnings[msg] ?? 0) + 1
    },
    onResources: (typeUrl, _version, resources): ConsumerVerdict => {
      const rec = types.get(typeUrl)
      if (rec === undefined) return { ok: false, error: `unexpected type ${typeUrl}` }
      rec.pendingCount = resources.size
      if (typeUrl === TYPE_URL.listener) {
        const names = new Set<string>()
        for (const l of resources.values()) routeNames(l, names)
        sim.routes = [...names].sort()
      } else if (typeUrl === TYPE_URL.cluster) {
        sim.endpoints = edsNames(resources)
      }
      if (typeUrl === TYPE_URL.listener || typeUrl === TYPE_URL.cluster) {
        client.subscribe(TYPE_URL.route, sim.routes)
        client.subscribe(TYPE_URL.endpoint, sim.endpoints)
      }
      return { ok: true }
    },
  })
  sim.client = client
  // The consumer runs after the whole response was decoded; the receive time is taken as the response arrives.
  client.on('response', (typeUrl: string, version: string, ok: boolean) => {
    const t = now()
    const rec = types.get(typeUrl)
    responses++
    lastResponseAt = t
    if (rec === undefined) return
    if (!ok) {
      sim.nacks++
      return
    }
    rec.version = version
    rec.count = rec.pendingCount
    if (!rec.log.has(version)) rec.log.set(version, [rec.pendingAt || t, t])
  })
  // grpc-js hands each message to the client's 'data' handler as it arrives; note the time before decoding starts.
  const stamp = (typeUrl: string): void => {
    const rec = types.get(typeUrl)
    if (rec !== undefined) rec.pendingAt = now()
  }
  client.on('connecting', () => {
    const call = (client as unknown as { call?: NodeJS.EventEmitter }).call
    call?.prependListener('data', (resp: { type_url?: string }) => stamp(resp.type_url ?? ''))
  })
  client.start()
  return sim
}

function matches(sim: Sim, expect: Expect): boolean {
  for (const t of TYPES) {
    const rec = sim.types.get(t)!
    if (rec.version === '') return false
    const want = expect.counts[t]
    if (want !== undefined && rec.count !== want) return false
  }
  for (const t of expect.changed) {
    const rec = sim.types.get(t)!
    if (rec.version === rec.before) return false
  }
  return true
}

/** When the client ACKed (and received) the versions it holds now: the latest over the types, since the mark. */
function doneAt(sim: Sim): [number, number] | null {
  let ack = 0
  let recv = 0
  for (const rec of sim.types.values()) {
    const e = rec.log.get(rec.version)
    if (e === undefined) continue
    if (e[1] > ack) {
      ack = e[1]
      recv = e[0]
    }
  }
  return ack === 0 ? null : [recv, ack]
}

function reply(id: number, body: Record<string, unknown>): void {
  process.send?.({ type: 'reply', id, ...body })
}

function handle(req: Request): void {
  switch (req.type) {
    case 'start': {
      for (let i = req.from; i < req.to; i++) sims.push(startClient(req.server, i))
      reply(req.id, { clients: sims.length })
      return
    }
    case 'mark': {
      for (const s of sims) {
        for (const rec of s.types.values()) {
          rec.before = rec.version
          rec.log.clear()
        }
      }
      reply(req.id, { at: now() })
      return
    }
    case 'summary': {
      const sum: Summary = {
        clients: sims.length,
        connected: 0,
        matching: 0,
        reconnects: 0,
        nacks: 0,
        responses,
        lastResponseAt,
        warnings,
      }
      for (const s of sims) {
        if (s.client.connected) sum.connected++
        if (matches(s, req.expect)) sum.matching++
        sum.reconnects += Math.max(0, s.client.connections - 1)
        sum.nacks += s.nacks
      }
      reply(req.id, { summary: sum })
      return
    }
    case 'collect': {
      const out: Collected = { done: [], received: [] }
      for (const s of sims) {
        const d = matches(s, req.expect) ? doneAt(s) : null
        out.done.push(d?.[1] ?? null)
        out.received.push(d?.[0] ?? null)
      }
      reply(req.id, { collected: out })
      return
    }
    case 'close': {
      for (const s of sims) s.client.close()
      reply(req.id, { closed: sims.length })
      return
    }
  }
}

if (process.send !== undefined) {
  process.on('message', (m: Request) => {
    try {
      handle(m)
    } catch (e) {
      process.send?.({ type: 'error', id: m.id, message: e instanceof Error ? (e.stack ?? e.message) : String(e) })
    }
  })
  process.on('disconnect', () => process.exit(0))
  process.send({ type: 'ready' })
}
