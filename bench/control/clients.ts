// A fleet of simulated proxies for the control-plane benchmark, run as a child process (node's fork, IPC channel).
// Each proxy has its own node id and its own gRPC connection, speaks delta xDS (or SotW), subscribes to the RDS and
// EDS names its listeners and clusters reference (as `loom proxy --xds` does), ACKs, and records when it sent each
// ACK. Most are lean clients (lean.ts: they read names, not whole resources, so that 1000 of them fit on one core);
// the first few of the fleet are real `AdsClient`s (our xDS client) that decode every resource, a check that what
// the control plane sends decodes. In scoped mode each proxy is an on-demand one (node metadata LOOM_ON_DEMAND) that
// asks for the VirtualHosts of the 10 services it calls. There is no data plane.
//
// Protocol (messages over the IPC channel; every request carries an `id` that its reply repeats):
//   parent → { type: 'start', server, from, to, opts }  create and start clients [from, to)
//   parent → { type: 'mark' }                        remember every client's versions; start a new ACK log
//   parent → { type: 'summary', expect }             how many clients match `expect`, connections, NACKs
//   parent → { type: 'collect', expect }             per client: when it ACKed the config it holds now
//   parent → { type: 'close' }                       close every client
//   child  → { type: 'ready' } once loaded; { type: 'reply', id, ... } per request; { type: 'error', message }
// Times are `performance.timeOrigin + performance.now()` (ms since the epoch, sub-ms resolution), comparable
// across the processes of one machine.
import * as grpc from '@grpc/grpc-js'
import { OUTBOUND_ROUTE } from '../../src/control/translate/listeners.js'
import { AdsClient, type ConsumerVerdict } from '../../src/xds/client.js'
import { lookupType } from '../../src/xds/proto.js'
import { edsServiceName } from '../../src/xds/refs.js'
import { TYPE_URL } from '../../src/xds/snapshot.js'
import { LeanClient, received, routeNames, VHOST_TYPE, vhostClusters } from './lean.js'
import { SERVICE_PORT, serviceHost } from './manifests.js'

export const now = (): number => performance.timeOrigin + performance.now()

/** The four types every simulated proxy ends up subscribed to, in the order summaries list them. */
export const TYPES = [TYPE_URL.listener, TYPE_URL.cluster, TYPE_URL.endpoint, TYPE_URL.route] as const

/** What "has the new config" means for one client. */
export interface Expect {
  /** resource counts the client must hold, by type URL */
  counts: Record<string, number>
  /** types whose version must differ from the version the client held at the last mark */
  changed: string[]
  /** scoped: this many VirtualHosts held, with the clusters they name and those clusters' endpoints */
  scoped?: number
}

export interface Summary {
  clients: number
  /** of them lean (the rest decode everything) */
  lean: number
  connected: number
  /** clients holding what `expect` describes (ACKed) */
  matching: number
  /** streams opened beyond the first, over all clients */
  reconnects: number
  nacks: number
  responses: number
  /** time of the newest response any client handled (0 if none) */
  lastResponseAt: number
  /** VirtualHost responses handled since the last mark */
  vhostResponses: number
  /** VirtualHost aliases answered as not found (held now) */
  absent: number
  /** bytes of responses the lean clients received since the last mark */
  bytes: number
  warnings: Record<string, number>
}

export interface Collected {
  /** per client (in index order): when it sent the last ACK that got it to the expected config, or null */
  done: (number | null)[]
  /** per client: when it received (before decoding) the response that ACK answered, or null */
  received: (number | null)[]
}

export interface StartOptions {
  protocol: 'sotw' | 'delta'
  /** on-demand proxies: node metadata LOOM_ON_DEMAND, VirtualHost aliases of the services each one calls */
  scoped: boolean
  /** every virtual host over VHDS (node metadata LOOM_VHDS, VirtualHost subscribed as a wildcard), as Loom's sidecars
   * on delta xDS take them */
  vhds: boolean
  /** services in the configuration (which ones a scoped proxy calls) */
  services: number
  /** how many of this process's first clients are full-decoding AdsClients (the rest are lean) */
  full: number
}

export type Request =
  | { type: 'start'; id: number; server: string; from: number; to: number; opts: StartOptions }
  | { type: 'mark'; id: number }
  | { type: 'summary'; id: number; expect: Expect }
  | { type: 'collect'; id: number; expect: Expect }
  | { type: 'close'; id: number }

interface TypeRec {
  version: string
  count: number
  /** version → [first time it was received, first time it was ACKed], since the last mark */
  log: Map<string, [number, number]>
  /** receive time of the response being handled */
  pendingAt: number
  /** version held at the last mark */
  before: string
}

/** One simulated proxy: a lean client or a full-decoding AdsClient, seen the same way. */
interface Sim {
  full: boolean
  types: Map<string, TypeRec>
  nacks: number
  connected(): boolean
  connections(): number
  /** resources held of a type */
  count(typeUrl: string): number
  /** scoped: every VirtualHost held, its clusters held, and their endpoints: the proxy can serve its calls */
  scopedReady(want: number): boolean
  /** VirtualHost names answered as not found */
  absent(): number
  close(): void
}

/** The node id and metadata of simulated proxy `i`, like a Kubernetes pod's sidecar. */
export function simNode(i: number, scoped = false, vhds = false): { id: string; metadata: Record<string, unknown> } {
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
      ...(scoped ? { LOOM_ON_DEMAND: 'true' } : vhds ? { LOOM_VHDS: 'true' } : {}),
    },
  }
}

/** How many services a scoped proxy calls. */
export const CALLS = 10

/** The services proxy `i` calls (scoped mode): 10 distinct ones spread over all of them. */
export function calledServices(i: number, services: number): number[] {
  const out = new Set<number>()
  for (let j = 0; out.size < Math.min(CALLS, services); j++) out.add((i * 7 + j * 101) % services)
  return [...out]
}

/** The VirtualHost alias a proxy asks for to call service `k`: `<route config name>/<host>:<port>`. */
export const vhostAlias = (k: number): string => `${OUTBOUND_ROUTE}/${serviceHost(k)}:${SERVICE_PORT}`

const sims: Sim[] = []
const warnings: Record<string, number> = {}
let responses = 0
let lastResponseAt = 0
let vhostResponses = 0
let bytesAtMark = 0

function newRec(): TypeRec {
  return { version: '', count: 0, log: new Map(), pendingAt: 0, before: '' }
}

/** One connection per proxy, as real sidecars have: grpc-js shares a connection between channels to the same
 * target with equal options and credentials, so each client gets credentials equal only to themselves. */
function ownCredentials(): grpc.ChannelCredentials {
  const credentials = grpc.credentials.createInsecure()
  Object.assign(credentials, { _equals: (other: unknown) => other === credentials })
  return credentials
}

function recordResponse(sim: Sim, typeUrl: string, version: string, ok: boolean, count: number): void {
  const t = now()
  responses++
  lastResponseAt = t
  if (typeUrl === VHOST_TYPE) vhostResponses++
  const rec = sim.types.get(typeUrl)
  if (rec === undefined) return
  if (!ok) {
    sim.nacks++
    return
  }
  rec.version = version
  rec.count = count
  if (!rec.log.has(version)) rec.log.set(version, [rec.pendingAt || t, t])
}

function typeRecs(scoped: boolean): Map<string, TypeRec> {
  return new Map<string, TypeRec>([...TYPES, ...(scoped ? [VHOST_TYPE] : [])].map((t) => [t, newRec()]))
}

/** Scoped readiness from what a proxy holds: `want` virtual hosts, the clusters they name, those clusters' EDS. */
function ready(
  want: number,
  vhosts: number,
  refs: Iterable<string[]>,
  hasCluster: (c: string) => boolean,
  edsOf: (c: string) => string | undefined,
  hasEds: (e: string) => boolean,
): boolean {
  if (vhosts < want) return false
  for (const cs of refs) {
    for (const c of cs) {
      if (!hasCluster(c)) return false
      const e = edsOf(c)
      if (e !== undefined && !hasEds(e)) return false
    }
  }
  return true
}

function startLean(server: string, i: number, opts: StartOptions): Sim {
  const node = simNode(i, opts.scoped, opts.vhds)
  const types = typeRecs(opts.scoped || opts.vhds)
  const called = opts.scoped ? calledServices(i, opts.services) : []
  const sim: Sim = {
    full: false,
    types,
    nacks: 0,
    connected: () => client.connected,
    connections: () => client.connections,
    count: (t) => client.count(t),
    scopedReady: (want) =>
      ready(
        want,
        client.count(VHOST_TYPE),
        client.vhostRefs.values(),
        (c) => client.held.get(TYPE_URL.cluster)?.has(c) ?? false,
        (c) => client.edsOf.get(c),
        (e) => client.held.get(TYPE_URL.endpoint)?.has(e) ?? false,
      ),
    absent: () => client.absent.size,
    close: () => client.close(),
  }
  const client = new LeanClient({
    server,
    node: { id: node.id, cluster: `app-${i}`, metadata: node.metadata },
    protocol: opts.protocol,
    vhostAliases: called.map(vhostAlias),
    vhdsWildcard: opts.vhds,
    onReceive: (t) => {
      const rec = types.get(t)
      if (rec !== undefined) rec.pendingAt = now()
    },
    onResponse: (t, version, ok, error) => {
      if (!ok) warnings[`NACK: ${error}`] = (warnings[`NACK: ${error}`] ?? 0) + 1
      recordResponse(sim, t, version, ok, client.count(t))
    },
  })
  client.start()
  return sim
}

function startFull(server: string, i: number, opts: StartOptions): Sim {
  const node = simNode(i, opts.scoped, opts.vhds)
  const types = typeRecs(opts.scoped || opts.vhds)
  const called = opts.scoped ? calledServices(i, opts.services).map(vhostAlias) : []
  const edsOf = new Map<string, string>()
  const vhostRefs = new Map<string, string[]>()
  const absent = new Set<string>()
  let routes: string[] = []
  let endpoints: string[] = []
  let asked = false
  const held = (t: string): ReadonlyMap<string, string> | undefined => client.typeState(t)?.accepted
  const sim: Sim = {
    full: true,
    types,
    nacks: 0,
    connected: () => client.connected,
    connections: () => client.connections,
    count: (t) => held(t)?.size ?? 0,
    scopedReady: (want) =>
      ready(
        want,
        held(VHOST_TYPE)?.size ?? 0,
        vhostRefs.values(),
        (c) => held(TYPE_URL.cluster)?.has(c) ?? false,
        (c) => edsOf.get(c),
        (e) => held(TYPE_URL.endpoint)?.has(e) ?? false,
      ),
    absent: () => absent.size,
    close: () => client.close(),
  }
  const client = new AdsClient({
    server,
    protocol: opts.protocol,
    node: { id: node.id, cluster: `app-${i}`, metadata: node.metadata },
    ...(opts.vhds ? { wildcardTypes: [TYPE_URL.listener, TYPE_URL.cluster, VHOST_TYPE] } : {}),
    credentials: ownCredentials(),
    log: (level, msg) => {
      if (level === 'warn' || level === 'error') warnings[msg] = (warnings[msg] ?? 0) + 1
    },
    onResources: (typeUrl, _version, resources, removed): ConsumerVerdict => {
      if (!types.has(typeUrl)) return { ok: false, error: `unexpected type ${typeUrl}` }
      if (typeUrl === TYPE_URL.listener) {
        const names = new Set<string>()
        for (const l of resources.values()) routeNames(l, names)
        routes = [...names].sort()
      } else if (typeUrl === TYPE_URL.cluster) {
        edsOf.clear()
        for (const [name, c] of resources) {
          const e = edsServiceName(c)
          if (e !== undefined) edsOf.set(name, e)
        }
        endpoints = [...new Set(edsOf.values())].sort()
      } else if (typeUrl === VHOST_TYPE) {
        for (const n of removed) {
          if (!vhostRefs.delete(n)) absent.add(n)
        }
        for (const [name, v] of resources) {
          const out = new Set<string>()
          vhostClusters(v, out)
          vhostRefs.set(name, [...out])
        }
      }
      if (typeUrl === TYPE_URL.listener || typeUrl === TYPE_URL.cluster) {
        client.subscribe(TYPE_URL.route, routes)
        client.subscribe(TYPE_URL.endpoint, endpoints)
      }
      if (typeUrl === TYPE_URL.route && !asked && called.length > 0) {
        asked = true
        queueMicrotask(() => client.subscribe(VHOST_TYPE, called))
      }
      return { ok: true }
    },
  })
  client.on('response', (typeUrl: string, version: string, ok: boolean) =>
    recordResponse(sim, typeUrl, version, ok, held(typeUrl)?.size ?? 0),
  )
  // grpc-js hands each message to the client's 'data' handler as it arrives; note the time before decoding starts.
  client.on('connecting', () => {
    const call = (client as unknown as { call?: NodeJS.EventEmitter }).call
    call?.prependListener('data', (resp: { type_url?: string }) => {
      const rec = types.get(resp.type_url ?? '')
      if (rec !== undefined) rec.pendingAt = now()
    })
  })
  client.start()
  return sim
}

function matches(sim: Sim, expect: Expect): boolean {
  for (const t of TYPES) {
    const rec = sim.types.get(t)!
    if (rec.version === '') return false
    const want = expect.counts[t]
    if (want !== undefined && sim.count(t) !== want) return false
  }
  if (expect.scoped !== undefined && !sim.scopedReady(expect.scoped)) return false
  for (const t of expect.changed) {
    const rec = sim.types.get(t)
    if (rec === undefined || rec.version === rec.before) return false
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
      for (let i = req.from; i < req.to; i++) {
        const full = i - req.from < req.opts.full
        sims.push(full ? startFull(req.server, i, req.opts) : startLean(req.server, i, req.opts))
      }
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
      bytesAtMark = received.bytes
      vhostResponses = 0
      reply(req.id, { at: now() })
      return
    }
    case 'summary': {
      const sum: Summary = {
        clients: sims.length,
        lean: 0,
        connected: 0,
        matching: 0,
        reconnects: 0,
        nacks: 0,
        responses,
        lastResponseAt,
        vhostResponses,
        absent: 0,
        bytes: received.bytes - bytesAtMark,
        warnings,
      }
      for (const s of sims) {
        if (!s.full) sum.lean++
        if (s.connected()) sum.connected++
        if (matches(s, req.expect)) sum.matching++
        sum.reconnects += Math.max(0, s.connections() - 1)
        sum.nacks += s.nacks
        sum.absent += s.absent()
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
      for (const s of sims) s.close()
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
  // loaded as a proxy loads them when it starts, before it connects: the protobuf definitions and the decoders of
  // the messages read
  for (const t of [TYPE_URL.listener, VHOST_TYPE]) lookupType(t)?.setup()
  process.send({ type: 'ready' })
}
