/**
 * The xDS server: Envoy's Aggregated Discovery Service over gRPC, in both variants.
 *
 * State of the world (`StreamAggregatedResources`, what Envoy, Loom proxies and proxyless gRPC speak):
 * - the node comes with the first request and is kept for the stream;
 * - per stream and type: the subscription (wildcard for LDS/CDS when the first request names nothing or `*`, named
 *   otherwise), the last nonce and version sent, and ACK/NACK (a NACK is a request carrying `error_detail`, whatever
 *   its version says);
 * - a request whose nonce is not the last one sent for its type is stale and ignored (its subscription comes again
 *   with the ACK of the newer response);
 * - at most one unacknowledged response per type and stream: changes wait for the ACK or NACK;
 * - a response carries every subscribed resource of its type that exists (all of them under a wildcard): full state
 *   for LDS/CDS, the subscribed names for RDS/EDS. Its version is a hash of exactly what it carries;
 * - after a snapshot change, types are pushed in the order CDS, EDS, SDS, LDS, RDS, make before break (below);
 * - the first request of a type on a new stream is answered, unless its `version_info` is what the response would
 *   carry: a client that reconnects (to this server or another replica, whose versions are the same content hashes)
 *   already holds it, so the type counts as ACKed and nothing is sent.
 *
 * Incremental (`DeltaAggregatedResources`): subscribe/unsubscribe deltas, `initial_resource_versions` on reconnect
 * (what the client holds at those versions counts as ACKed; nothing is sent when nothing differs),
 * per-resource versions (content hashes), `removed_resources` for resources the client has that are gone (and, once,
 * for subscribed names that do not exist), nonce and ACK/NACK as above.
 *
 * Make before break, in both variants (Envoy's "eventual consistency considerations" for ADS), per stream:
 * - a Listener or RouteConfiguration that is new or changed and names a cluster is held back until the client has
 *   ACKed that cluster and, for an EDS cluster, its ClusterLoadAssignment. Only what the client subscribes to is
 *   waited for (a proxyless gRPC client subscribes to a cluster after the route naming it), and never longer than
 *   `holdTimeoutMs`;
 * - a cluster gone from the snapshot stays in CDS responses (and its endpoints in EDS ones) for as long as a listener
 *   or route the client holds, ACKed or on its way, still names it: it goes once routes that no longer name it are
 *   ACKed;
 * - an ACK of CDS/EDS re-runs the pushes waiting for clusters, an ACK of LDS/RDS the CDS/EDS pushes (removals), in
 *   order: that is what moves a change from one step to the next.
 *
 * Snapshots come from a SnapshotCache: `setSnapshot` pushes to the node's streams after `pushDebounceMs` (bursts
 * coalesce). When a node connects without a snapshot, `snapshotFor(node)` is asked for one.
 *
 * The push pipeline, server-wide:
 * - a snapshot change, a request or an ACK marks types due on a stream (`want`); nothing is written there. Due
 *   pushes run from one queue in turns of at most `sliceMs`, with `setImmediate` between turns, so that requests,
 *   ACKs and keepalive pings are handled between them;
 * - streams with an EDS push due come first (endpoint changes are what traffic waits for). A stream runs its due
 *   types in push order (the clusters before the endpoints, make before break as above, which `ready` enforces
 *   whatever the order) and writes one response at a time: the next waits for the write callback (which stamps
 *   the type's `writtenAt`); `write()` returning false stops the stream until 'drain';
 * - coalescing: a type whose response waits for its ACK is not written; the ACK marks it due again and what is
 *   pushed then is computed from the newest snapshot, so intermediate states are never sent;
 * - backpressure: responses written and not yet flushed count against `maxQueuedBytes`; above it nothing is
 *   written until a flush. A stream whose response has not flushed within `stallMs` stops counting (it holds that
 *   one response and gets nothing more until it flushes): a proxy that does not read holds up no one;
 * - admission: the first snapshots of connecting nodes are built in arrival order, as many per event-loop turn as
 *   fit in `sliceMs`; a connection storm makes proxies wait their turn, and no stream is dropped for being slow.
 */
import * as grpc from '@grpc/grpc-js'
import { log as defaultLog, type Level } from '../core/log.js'
import {
  adsService,
  type DeltaDiscoveryRequest,
  type DeltaDiscoveryResponse,
  type DiscoveryRequest,
  type DiscoveryResponse,
  type WireNode,
} from './ads.js'
import { type CachedResource, type CachedType, type CacheEntry, SnapshotCache, shortHash, versionOf } from './cache.js'
import { structToJson } from './proto.js'
import { clusterRefs, edsServiceName, secretRefs } from './refs.js'
import { type Snapshot, TYPE_URL } from './snapshot.js'
import { SharedRequestNames } from './shared-requests.js'
import { SharedResponses } from './shared-responses.js'
import { resolveAlias } from './vhds-aliases.js'

export interface NodeInfo {
  id: string
  cluster: string
  metadata: Record<string, unknown>
  locality?: { region?: string; zone?: string; sub_zone?: string }
  userAgentName?: string
  userAgentVersion?: string
  clientFeatures: string[]
}

export type SyncState = 'SYNCED' | 'STALE' | 'NACKED' | 'NOT_SENT'

export interface TypeStatus {
  typeUrl: string
  sentVersion?: string
  ackedVersion?: string
  state: SyncState
  nackError?: string
  /** when the latest response of this type was fully written to the stream (epoch ms) */
  writtenAt?: number
}

export interface NodeStatus {
  nodeId: string
  /** when the node's newest stream opened (ISO 8601) */
  connectedAt: string
  /** open ADS streams of this node */
  streams: number
  /** 'sotw' or 'delta', of the newest stream */
  protocol: 'sotw' | 'delta'
  /** the proxy's software and version (node.user_agent_name / user_agent_version: `loom/0.1.0`); null when not sent */
  userAgent: string | null
  perType: TypeStatus[]
  /** the proxy's admin endpoint (node metadata ADMIN_ADDRESS), where its metrics are read; null when not sent */
  adminAddress: string | null
}

export type XdsLogger = (level: Level, msg: string, fields?: Record<string, unknown>) => void

export interface XdsServerOptions {
  cache?: SnapshotCache
  /** builds the snapshot of a node that connects while the cache has none for its id */
  snapshotFor?: (node: NodeInfo) => Snapshot | Promise<Snapshot>
  /** delay between a snapshot change and the pushes it causes, so that bursts coalesce (default 100) */
  pushDebounceMs?: number
  /**
   * longest time a listener or route waits for the clusters it names to be ACKed, ms (default 5000); after it, the
   * push goes anyway (a client that never ACKs must not be left without config)
   */
  holdTimeoutMs?: number
  log?: XdsLogger
  /**
   * bytes of responses written to streams and not yet flushed to their connections, across streams, above which no
   * stream is written to until some flush (default 16 MiB). A stream whose response has not flushed within
   * `stallMs` stops counting (it holds that one response and gets no other until it flushes), so that clients that
   * do not read cannot hold up the others.
   */
  maxQueuedBytes?: number
  /** see maxQueuedBytes (default 5000) */
  stallMs?: number
  /** longest run of pushes or snapshot builds in one event-loop turn before yielding to I/O, ms (default 10) */
  sliceMs?: number
  /** extra @grpc/grpc-js server options */
  grpcOptions?: grpc.ServerOptions
  /**
   * a delta stream's VirtualHost subscription changed (names and aliases it now subscribes to): the control plane
   * scopes an on-demand proxy to those hosts. A promise holds the answer to the request (and the stream's next
   * requests) until it settles: the snapshot it brings is what the subscribed aliases resolve against.
   */
  onSubscription?: (node: NodeInfo, typeUrl: string, names: ReadonlySet<string>) => Promise<void> | undefined
}

/** Push order after a change: make before break (clusters before what routes to them). */
const PUSH_ORDER: string[] = [
  TYPE_URL.cluster,
  TYPE_URL.endpoint,
  TYPE_URL.secret,
  TYPE_URL.listener,
  TYPE_URL.route,
  TYPE_URL.virtualHost,
]
const WILDCARD_BY_DEFAULT = new Set<string>([TYPE_URL.listener, TYPE_URL.cluster])
/** types whose resources name clusters: held back until those clusters are warm */
const REFERRING = [TYPE_URL.listener, TYPE_URL.route, TYPE_URL.virtualHost] as const
const KNOWN_TYPES = new Set<string>(Object.values(TYPE_URL))
const CONTROL_PLANE = { identifier: 'loom' }

function orderTypes(types: Iterable<string>): string[] {
  const rank = (t: string) => {
    const i = PUSH_ORDER.indexOf(t)
    return i < 0 ? PUSH_ORDER.length : i
  }
  return [...types].sort((a, b) => rank(a) - rank(b))
}

/** A node's admin endpoint, as its metadata ADMIN_ADDRESS gives it (host:port), or null. */
function adminAddressOf(metadata: Record<string, unknown> | undefined): string | null {
  const a = metadata?.ADMIN_ADDRESS
  return typeof a === 'string' && a !== '' ? a : null
}

/** `name/version` of the node's user agent, or the one of them it sent, or null. */
function userAgentOf(node: NodeInfo | undefined): string | null {
  const s = [node?.userAgentName, node?.userAgentVersion].filter(Boolean).join('/')
  return s === '' ? null : s
}

export function nodeInfo(n: WireNode): NodeInfo {
  const loc = n.locality
  return {
    id: n.id ?? '',
    cluster: n.cluster ?? '',
    metadata: n.metadata ? structToJson(n.metadata) : {},
    ...(loc ? { locality: { region: loc.region ?? '', zone: loc.zone ?? '', sub_zone: loc.sub_zone ?? '' } } : {}),
    ...(n.user_agent_name ? { userAgentName: n.user_agent_name } : {}),
    ...(n.user_agent_version ? { userAgentVersion: n.user_agent_version } : {}),
    clientFeatures: n.client_features ?? [],
  }
}

interface TypeState {
  typeUrl: string
  wildcard: boolean
  /** LDS/CDS whose first request named nothing: an empty list keeps meaning "everything" */
  legacyWildcard: boolean
  names: Set<string>
  nonce?: string
  pending: boolean
  sentVersion?: string
  ackedVersion?: string
  nacked: boolean
  nackError?: string
  /** what the client ACKed: name → resource as sent */
  acked: ReadonlyMap<string, CachedResource>
  /** `acked` is this stream's own map (else it is shared, e.g. a snapshot's items, and copied before a change) */
  ackedOwned: boolean
  /**
   * the unacknowledged response: what it carries (all the client will hold when `full`) and removes; applied to
   * `acked` on ACK. SotW responses count as full: they carry every subscribed resource that exists.
   */
  inflight?: { full: boolean; items: ReadonlyMap<string, CachedResource>; removed: ReadonlySet<string> }
  /** since when (ms) a push of this type waits for the clusters it names */
  heldSince?: number
  /** when the latest response was fully written (grpc write callback; epoch ms) */
  writtenAt?: number
}

/** `st.acked`, made this stream's own to change it. */
function ownAcked(st: TypeState): Map<string, CachedResource> {
  if (!st.ackedOwned) {
    st.acked = new Map(st.acked)
    st.ackedOwned = true
  }
  return st.acked as Map<string, CachedResource>
}

const goneMemo = new WeakMap<object, WeakMap<object, WeakMap<object, CachedResource[] | null>>>()
const NO_INFLIGHT = {}
const NO_ITEMS = {}

/**
 * The clusters the client holds (once it takes the response in flight) that `now` lacks, or null: memoized by the
 * objects it reads when the stream's state is shared with alike streams.
 */
function goneClusters(cds: TypeState, now: ReadonlyMap<string, CachedResource> | undefined): CachedResource[] | null {
  const compute = () => {
    let gone: CachedResource[] | null = null
    for (const r of eventualAll(cds)) if (!now?.has(r.name)) (gone ??= []).push(r)
    return gone
  }
  if (cds.ackedOwned) return compute()
  let a = goneMemo.get(cds.acked)
  if (a === undefined) goneMemo.set(cds.acked, (a = new WeakMap()))
  const fk = cds.inflight ?? NO_INFLIGHT
  let b = a.get(fk)
  if (b === undefined) a.set(fk, (b = new WeakMap()))
  const nk = now ?? NO_ITEMS
  const have = b.get(nk)
  if (have !== undefined) return have
  const gone = compute()
  b.set(nk, gone)
  return gone
}

/**
 * The last few `firstCold` results of shared pushes, with the objects each read (`coldKey`): the pump takes alike
 * streams one after the other, so the one before is the one that hits. A short list compared by identity, not a
 * weak map per object read: streams in states of their own (on-demand proxies, each with its scope) would make
 * thousands of weak maps per push round for no hit, and weak maps are dear to the collector.
 */
class RecentCold {
  private readonly entries: { key: readonly object[]; cold: string | undefined }[] = []

  get(key: readonly object[], compute: () => string | undefined): string | undefined {
    for (const e of this.entries) if (e.key.every((k, i) => k === key[i])) return e.cold
    const cold = compute()
    this.entries.unshift({ key, cold })
    if (this.entries.length > 4) this.entries.pop()
    return cold
  }
}

const appliedDeltas = new WeakMap<object, WeakMap<object, ReadonlyMap<string, CachedResource>>>()

/** `acked` with a delta response applied, as a new map (never changed): one per (acked, response) pair. */
function appliedDelta(
  acked: ReadonlyMap<string, CachedResource>,
  f: NonNullable<TypeState['inflight']>,
): ReadonlyMap<string, CachedResource> {
  let byResponse = appliedDeltas.get(acked)
  if (byResponse === undefined) appliedDeltas.set(acked, (byResponse = new WeakMap()))
  const have = byResponse.get(f)
  if (have !== undefined) return have
  const m = new Map(acked)
  for (const n of f.removed) m.delete(n)
  for (const [n, r] of f.items) m.set(n, r)
  byResponse.set(f, m)
  return m
}

/** What the client holds of a resource once it has accepted the response in flight (or now, without one). */
function eventually(st: TypeState, name: string): CachedResource | undefined {
  const f = st.inflight
  if (!f) return st.acked.get(name)
  const r = f.items.get(name)
  if (r || f.full) return r
  return f.removed.has(name) ? undefined : st.acked.get(name)
}

/** Everything the client holds of a type once it has accepted the response in flight (without copying). */
function* eventualAll(st: TypeState): Iterable<CachedResource> {
  const f = st.inflight
  if (!f) {
    yield* st.acked.values()
    return
  }
  yield* f.items.values()
  if (f.full) return
  for (const [n, r] of st.acked) if (!f.items.has(n) && !f.removed.has(n)) yield r
}

type Call = grpc.ServerDuplexStream<unknown, unknown>

let streamSeq = 0

function first<T>(set: Set<T>): T | undefined {
  for (const x of set) return x
  return undefined
}

abstract class AdsStream {
  readonly id = ++streamSeq
  readonly connectedAt = new Date()
  node?: NodeInfo
  closed = false
  protected readonly types = new Map<string, TypeState>()
  /** types with a push due: the server's push queue runs them (see XdsServer.enqueue) */
  readonly due = new Set<string>()
  /** size of the response written and not yet flushed (one at a time per stream); 0 when there is none */
  unflushed = 0
  /** when that write began (ms), and whether its bytes count against the server's queued bytes */
  writeStartedAt = 0
  countedBytes = false
  /** the call's buffer is full (write returned false): nothing more until 'drain' */
  full = false
  private nonceSeq = 0
  private queue: Promise<void> = Promise.resolve()

  constructor(
    protected readonly server: XdsServer,
    protected readonly call: Call,
    readonly protocol: 'sotw' | 'delta',
  ) {
    call.on('data', (req: unknown) => {
      this.queue = this.queue.then(() => this.receive(req))
    })
    call.on('end', () => {
      this.detach()
      this.safely(() => call.end())
    })
    call.on('cancelled', () => this.detach())
    call.on('error', (e: Error) => {
      this.log('debug', 'stream error', { error: e.message })
      this.detach()
    })
    call.on('close', () => this.detach())
  }

  /** Handles one request: the first one attaches the stream to its node. Errors end this stream only. */
  private async receive(req: unknown): Promise<void> {
    if (this.closed) return
    try {
      const r = req as { node?: WireNode | null; type_url?: string }
      if (!this.node) {
        if (!r.node?.id) {
          this.fail(grpc.status.INVALID_ARGUMENT, 'the first request of a stream must carry node.id')
          return
        }
        this.node = nodeInfo(r.node)
        await this.server.attach(this)
        if (this.closed) return
      }
      const typeUrl = r.type_url ?? ''
      if (!KNOWN_TYPES.has(typeUrl) && !this.entry()?.types.has(typeUrl)) {
        this.log('warn', 'request for an unknown type ignored', { type: typeUrl })
        return
      }
      await this.handle(typeUrl, req)
    } catch (e) {
      this.log('error', 'xDS request failed', { error: (e as Error).stack ?? String(e) })
      this.fail(grpc.status.INTERNAL, `xDS request failed: ${(e as Error).message}`)
    }
  }

  protected abstract handle(typeUrl: string, req: unknown): void | Promise<void>

  /** Pushes what changed to the client, respecting one unacknowledged response per type. */
  protected abstract push(typeUrl: string): void

  /** The content hash the client should end up with for a type (for status). */
  protected abstract desiredVersion(st: TypeState): string

  /** The node's snapshot changed (or arrived): push the subscribed types, clusters first. */
  onSnapshot(): void {
    if (this.closed) return
    for (const t of this.types.keys()) this.due.add(t)
    this.server.enqueue(this)
  }

  /** A push of this type is due: the server's queue runs it when this stream's turn comes. */
  protected want(typeUrl: string): void {
    if (this.closed) return
    this.due.add(typeUrl)
    this.server.enqueue(this)
  }

  /**
   * Runs the due pushes in push order (make before break), up to the first one that writes a response: the next
   * waits until that one is flushed. With `endpointsOnly`, only up to EDS (the clusters before it, if due).
   */
  flush(endpointsOnly: boolean): void {
    if (this.closed || this.unflushed > 0 || this.full) return
    for (const t of orderTypes([...this.due])) {
      if (endpointsOnly && t !== TYPE_URL.cluster && t !== TYPE_URL.endpoint) break
      this.due.delete(t)
      this.push(t)
      if (this.unflushed > 0 || this.closed) return
    }
  }

  /**
   * A response of `typeUrl` was ACKed or NACKed: push that type again if it changed meanwhile, and what the answer
   * may release: listeners and routes waiting for clusters or their secrets (after CDS/EDS/SDS), cluster and endpoint removals waiting
   * for the routes (after LDS/RDS). In push order.
   */
  protected released(typeUrl: string): void {
    const types = new Set<string>([typeUrl])
    if (typeUrl === TYPE_URL.cluster || typeUrl === TYPE_URL.endpoint || typeUrl === TYPE_URL.secret) {
      for (const t of REFERRING) if (this.types.get(t)?.heldSince !== undefined) types.add(t)
    } else if (typeUrl === TYPE_URL.listener || typeUrl === TYPE_URL.route || typeUrl === TYPE_URL.virtualHost) {
      types.add(TYPE_URL.cluster)
      types.add(TYPE_URL.endpoint)
    }
    for (const t of types) this.want(t)
  }

  entry(): CacheEntry | undefined {
    return this.node ? this.server.cache.getEntry(this.node.id) : undefined
  }

  nextNonce(): string {
    return `${this.id}-${++this.nonceSeq}`
  }

  /**
   * Writes a response of about `bytes` bytes. The grpc write callback says it was flushed: `writtenAt`, and the
   * stream can take its next push. `write` returning false (the call's buffer is full) stops pushes until 'drain'.
   */
  write(msg: DiscoveryResponse | DeltaDiscoveryResponse, bytes: number, shareKey?: string): void {
    if (this.closed) return
    const st = this.types.get(msg.type_url)
    const out = shareKey === undefined ? msg : this.server.responses.encode(this.protocol, shareKey, msg)
    this.unflushed = bytes
    this.writeStartedAt = performance.now()
    this.countedBytes = true
    this.server.queuedBytes += bytes
    this.safely(() => {
      const ok = this.call.write(out, () => {
        if (st) st.writtenAt = performance.timeOrigin + performance.now()
        this.flushed()
      })
      if (!ok && !this.closed) {
        this.full = true
        this.call.once('drain', () => {
          this.full = false
          this.server.enqueue(this)
        })
      }
    })
  }

  /** The response written last has left (or the stream closed): its bytes no longer count. */
  private flushed(): void {
    if (this.unflushed === 0) return
    if (this.countedBytes) this.server.queuedBytes -= this.unflushed
    this.countedBytes = false
    this.unflushed = 0
    this.server.enqueue(this)
  }

  ack(st: TypeState, errorDetail: { message?: string; code?: number } | null | undefined, version?: string): void {
    st.pending = false
    const f = st.inflight
    st.inflight = undefined
    if (!errorDetail && f) {
      if (f.full) {
        st.acked = f.items
        st.ackedOwned = false
      } else if (!st.ackedOwned) {
        // shared state and a shared response (alike streams): the result is shared too
        st.acked = appliedDelta(st.acked, f)
      } else {
        const m = st.acked as Map<string, CachedResource>
        for (const n of f.removed) m.delete(n)
        for (const [n, r] of f.items) m.set(n, r)
      }
    }
    if (errorDetail) {
      st.nacked = true
      st.nackError = errorDetail.message || `NACK (code ${errorDetail.code ?? 0})`
      this.log('warn', 'NACK', { type: st.typeUrl, version: st.sentVersion, error: st.nackError })
    } else {
      st.nacked = false
      st.nackError = undefined
      st.ackedVersion = version ?? st.sentVersion
    }
  }

  /** Clusters named by the listeners and routes the client holds or is being sent. */
  private referencedByClient(): Set<string> {
    const out = new Set<string>()
    for (const t of REFERRING) {
      const st = this.types.get(t)
      if (!st) continue
      for (const r of st.acked.values()) for (const c of clusterRefs(t, r.resource)) out.add(c)
      if (st.inflight)
        for (const r of st.inflight.items.values()) for (const c of clusterRefs(t, r.resource)) out.add(c)
    }
    return out
  }

  protected inScope(st: TypeState, name: string): boolean {
    return st.wildcard || st.names.has(name)
  }

  /**
   * Break after make: the clusters (CDS) or assignments (EDS) the client holds that the snapshot no longer has but
   * that a listener or route the client holds still names. They stay in what the client is sent, as it has them.
   */
  protected retained(st: TypeState): Map<string, CachedResource> {
    const out = new Map<string, CachedResource>()
    if (st.typeUrl !== TYPE_URL.cluster && st.typeUrl !== TYPE_URL.endpoint) return out
    const cds = this.types.get(TYPE_URL.cluster)
    if (!cds) return out
    const entry = this.entry()
    const now = entry?.types.get(TYPE_URL.cluster)?.items
    const gone = goneClusters(cds, now)
    if (!gone) return out
    const named = this.referencedByClient()
    const kept = gone.filter((r) => named.has(r.name) && this.inScope(cds, r.name))
    if (st.typeUrl === TYPE_URL.cluster) {
      for (const r of kept) out.set(r.name, r)
      return out
    }
    const assignments = entry?.types.get(TYPE_URL.endpoint)?.items
    for (const c of kept) {
      const e = edsServiceName(c.resource)
      if (e === undefined || assignments?.has(e) || !this.inScope(st, e)) continue
      const r = eventually(st, e)
      if (r) out.set(e, r)
    }
    return out
  }

  /**
   * Whether a cluster can take traffic on the client: it has ACKed the cluster (and is not being told to drop it)
   * and, for an EDS cluster, its assignment. What the client does not subscribe to, or the snapshot does not have,
   * is not waited for.
   */
  private warm(name: string): boolean {
    const cds = this.types.get(TYPE_URL.cluster)
    if (!cds || !this.inScope(cds, name)) return true
    const entry = this.entry()
    const cluster = entry?.types.get(TYPE_URL.cluster)?.items.get(name)
    if (!cluster) return true
    if (!cds.acked.has(name) || !eventually(cds, name)) return false
    if (!this.secretsWarm(cluster.resource)) return false
    const eds = this.types.get(TYPE_URL.endpoint)
    const e = edsServiceName(cluster.resource)
    if (!eds || e === undefined || !entry?.types.get(TYPE_URL.endpoint)?.items.has(e)) return true
    return eds.acked.has(e) && eventually(eds, e) !== undefined
  }

  /**
   * Whether the SDS secrets a cluster or listener names are ACKed, as Envoy warms both until their secrets arrive.
   * Secrets the client does not subscribe to, or the snapshot does not have, are not waited for.
   */
  private secretsWarm(resource: Record<string, unknown>): boolean {
    const names = secretRefs(resource)
    if (names.length === 0) return true
    const sds = this.types.get(TYPE_URL.secret)
    const have = this.entry()?.types.get(TYPE_URL.secret)?.items
    if (!sds || !have) return true
    for (const n of names) {
      if (!have.has(n) || !this.inScope(sds, n)) continue
      if (!sds.acked.has(n) || eventually(sds, n) === undefined) return false
    }
    return true
  }

  /**
   * Make before break: whether listeners or routes about to be sent (new or changed ones) name only warm clusters.
   * When not, the push waits (an ACK runs the pushes again), at most `holdTimeoutMs`.
   */
  protected ready(st: TypeState, sending: Iterable<CachedResource>, shared = false): boolean {
    if (!(REFERRING as readonly string[]).includes(st.typeUrl)) return true
    const key = shared ? this.coldKey(st, sending) : null
    const cold =
      key === null ? this.firstCold(st, sending) : this.server.recentCold.get(key, () => this.firstCold(st, sending))
    if (cold === undefined) {
      st.heldSince = undefined
      return true
    }
    const now = Date.now()
    if (st.heldSince === undefined) {
      st.heldSince = now
      this.log('debug', 'push held until its clusters are warm', { type: st.typeUrl, cluster: cold })
      this.armHoldTimer()
      return false
    }
    if (now - st.heldSince < this.server.holdTimeoutMs) {
      this.armHoldTimer()
      return false
    }
    this.log('warn', 'clusters not ACKed in time; pushing anyway', { type: st.typeUrl, cluster: cold })
    st.heldSince = undefined
    return true
  }

  /** The first cluster (or listener, for its secrets) of `sending` that is not warm on the client; none: ready. */
  private firstCold(st: TypeState, sending: Iterable<CachedResource>): string | undefined {
    for (const r of sending) {
      if (st.acked.get(r.name)?.hash === r.hash) continue
      const cold = clusterRefs(st.typeUrl, r.resource).find((c) => !this.warm(c))
      if (cold !== undefined) return cold
      // a listener's own TLS contexts: its secrets first (the name logged is the listener's)
      if (st.typeUrl === TYPE_URL.listener && !this.secretsWarm(r.resource)) return r.name
    }
    return undefined
  }

  /**
   * What `firstCold` reads, as objects that are never changed in place, when all of it is shared with alike streams
   * (a shared push, the client's state of the type and of its clusters and assignments, the snapshot's clusters and
   * assignments): alike streams then check a push once between them. null: some of it is this stream's own (its
   * cluster subscription by name, a state it changed, secrets), and the stream checks for itself.
   */
  private coldKey(st: TypeState, sending: Iterable<CachedResource>): object[] | null {
    if (st.ackedOwned || this.types.has(TYPE_URL.secret)) return null
    const cds = this.types.get(TYPE_URL.cluster)
    if (cds === undefined || !cds.wildcard || cds.ackedOwned) return null
    const eds = this.types.get(TYPE_URL.endpoint)
    if (eds?.ackedOwned) return null
    const types = this.entry()?.types
    return [
      sending,
      st.acked,
      cds.acked,
      cds.inflight ?? NO_INFLIGHT,
      eds?.acked ?? NO_ITEMS,
      eds?.inflight ?? NO_INFLIGHT,
      types?.get(TYPE_URL.cluster)?.items ?? NO_ITEMS,
      types?.get(TYPE_URL.endpoint)?.items ?? NO_ITEMS,
    ]
  }

  private holdTimer?: NodeJS.Timeout

  private armHoldTimer(): void {
    if (this.holdTimer) return
    this.holdTimer = setTimeout(() => {
      this.holdTimer = undefined
      for (const t of REFERRING) if (this.types.get(t)?.heldSince !== undefined) this.due.add(t)
      this.server.enqueue(this)
    }, this.server.holdTimeoutMs + 5)
    this.holdTimer.unref()
  }

  typeStatus(): TypeStatus[] {
    return orderTypes(this.types.keys()).map((t) => {
      const st = this.types.get(t)!
      const state: SyncState =
        st.sentVersion === undefined
          ? 'NOT_SENT'
          : st.nacked
            ? 'NACKED'
            : st.pending || st.ackedVersion !== this.desiredVersion(st)
              ? 'STALE'
              : 'SYNCED'
      return {
        typeUrl: t,
        ...(st.sentVersion !== undefined ? { sentVersion: st.sentVersion } : {}),
        ...(st.ackedVersion !== undefined ? { ackedVersion: st.ackedVersion } : {}),
        state,
        ...(st.nackError ? { nackError: st.nackError } : {}),
        ...(st.writtenAt !== undefined ? { writtenAt: st.writtenAt } : {}),
      }
    })
  }

  fail(code: grpc.status, details: string): void {
    if (this.closed) return
    this.log('warn', 'closing xDS stream', { code, details })
    this.safely(() => this.call.emit('error', { code, details, metadata: new grpc.Metadata() }))
    this.detach()
  }

  end(): void {
    if (this.closed) return
    this.detach()
    this.safely(() => this.call.end())
  }

  /** Closes the stream with UNAVAILABLE: the server is going away, the client should connect elsewhere. */
  drain(): void {
    if (this.closed) return
    const details = 'the control plane is shutting down; connect to another replica'
    this.safely(() =>
      this.call.emit('error', { code: grpc.status.UNAVAILABLE, details, metadata: new grpc.Metadata() }),
    )
    this.detach()
  }

  detach(): void {
    if (this.closed) return
    this.closed = true
    clearTimeout(this.holdTimer)
    this.due.clear()
    // a closed call never calls back its writes
    this.flushed()
    this.server.detach(this)
  }

  log(level: Level, msg: string, fields?: Record<string, unknown>): void {
    this.server.logger(level, msg, { node: this.node?.id, stream: this.id, protocol: this.protocol, ...fields })
  }

  private safely(f: () => void): void {
    try {
      f()
    } catch (e) {
      this.log('debug', 'write on a closing stream failed', { error: (e as Error).message })
    }
  }
}

/** What a SotW response carries; `whole` when that is every resource of the type (the snapshot's map). */
interface Content {
  list: CachedResource[]
  version: string
  whole?: ReadonlyMap<string, CachedResource>
}

const NOTHING: ReadonlySet<string> = new Set()
/** shared empty starting states of a delta subscription (replaced, never changed) */
const NO_NAMES: Set<string> = new Set()
const NO_RESOURCES: ReadonlyMap<string, CachedResource> = new Map()
const NO_VERSIONS: Map<string, string> = new Map()

/** `st.known`, made this stream's own to change it. */
function ownKnown(st: DeltaTypeState): Map<string, string> {
  if (!st.knownOwned) {
    st.known = new Map(st.known)
    st.knownOwned = true
  }
  return st.known
}
/** a response's bytes besides its resources (type URL, version, nonce, framing), roughly */
const RESPONSE_OVERHEAD = 128

class SotwStream extends AdsStream {
  constructor(server: XdsServer, call: Call) {
    super(server, call, 'sotw')
  }

  protected handle(typeUrl: string, raw: unknown): void {
    const req = raw as DiscoveryRequest
    if (typeUrl === TYPE_URL.virtualHost) {
      this.log('warn', 'VirtualHost (VHDS) is served over delta xDS only; request ignored', { type: typeUrl })
      return
    }
    const nonce = req.response_nonce ?? ''
    let st = this.types.get(typeUrl)
    if (st && nonce !== '' && nonce !== st.nonce) {
      this.log('debug', 'stale nonce ignored', { type: typeUrl, nonce, latest: st.nonce })
      return
    }
    const names = req.resource_names ?? []
    // a client that comes with a version held config before (from this or another replica): it may have it already
    const resumed = !st && nonce === '' && (req.version_info ?? '') !== '' && !req.error_detail
    if (!st) {
      const legacy = WILDCARD_BY_DEFAULT.has(typeUrl) && names.length === 0
      st = {
        typeUrl,
        wildcard: false,
        legacyWildcard: legacy,
        names: new Set(),
        pending: false,
        nacked: false,
        acked: new Map(),
        ackedOwned: true,
      }
      this.types.set(typeUrl, st)
    }
    const answered = nonce !== '' && st.pending
    if (answered) this.ack(st, req.error_detail)
    if (names.length > 0 && !names.includes('*')) st.legacyWildcard = false
    st.wildcard = names.includes('*') || (names.length === 0 && st.legacyWildcard)
    st.names = this.server.nameSet(st.names, names)
    // a client drops what it no longer subscribes to
    if (!st.wildcard) for (const n of st.acked.keys()) if (!st.names.has(n)) ownAcked(st).delete(n)
    if (resumed && this.resume(st, req.version_info!)) return
    if (answered) this.released(typeUrl)
    else this.want(typeUrl)
  }

  /**
   * The first request of a type on a new stream says the client holds `version`: when that is what it would be
   * sent now, it is taken as ACKed and nothing is sent (versions are content hashes, the same on every replica, so a
   * proxy that moves to another control plane is not pushed what it has). Otherwise it is answered as usual.
   */
  private resume(st: TypeState, version: string): boolean {
    if (!this.entry()) return false
    const { list, version: now, whole } = this.view(st)
    if (now !== version) return false
    st.sentVersion = version
    st.ackedVersion = version
    st.acked = whole ?? new Map(list.map((r) => [r.name, r]))
    st.ackedOwned = whole === undefined
    this.log('debug', 'resumed at the version the client holds', { type: st.typeUrl, version })
    return true
  }

  /** What a response carries now: the target, plus what must stay until nothing the client holds names it. */
  private view(st: TypeState): Content {
    const target = this.content(st)
    const keep = this.retained(st)
    if (keep.size === 0) return target
    const list = [...target.list, ...keep.values()]
    return { list, version: versionOf(list) }
  }

  /** What a response for this type carries once the change is complete, and its version (the type's version under a wildcard). */
  private content(st: TypeState): Content {
    const t = this.entry()?.types.get(st.typeUrl)
    if (!t) return { list: [], version: versionOf([]) }
    if (st.wildcard) return { list: [...t.items.values()], version: t.version, whole: t.items }
    // a subscription that names every resource of the type (a Loom or Envoy sidecar's EDS/RDS) gets the type's
    // version, computed once per snapshot, instead of hashing the same list again for every stream
    if (st.names.size >= t.items.size) {
      let all = true
      for (const n of t.items.keys()) {
        if (!st.names.has(n)) {
          all = false
          break
        }
      }
      if (all) return { list: [...t.items.values()], version: t.version, whole: t.items }
    }
    const list: CachedResource[] = []
    for (const n of st.names) {
      const r = t.items.get(n)
      if (r) list.push(r)
    }
    return { list, version: versionOf(list) }
  }

  protected desiredVersion(st: TypeState): string {
    return this.content(st).version
  }

  protected push(typeUrl: string): void {
    const st = this.types.get(typeUrl)
    if (!st || st.pending || this.closed || !this.entry()) return
    const { list, version, whole } = this.view(st)
    // the first request of a type is always answered (possibly with nothing); later, only changes are pushed
    if (st.sentVersion !== undefined && version === st.sentVersion) {
      // unchanged: hold the new snapshot's map (same content), so that the old snapshot is not kept alive
      if (whole && !st.pending && st.ackedVersion === version && st.acked !== whole) {
        st.acked = whole
        st.ackedOwned = false
      }
      return
    }
    if (!this.ready(st, list)) return
    const nonce = this.nextNonce()
    st.nonce = nonce
    st.sentVersion = version
    st.pending = true
    // the snapshot's own map when the response is the whole type: streams share it instead of copying
    st.inflight = { full: true, items: whole ?? new Map(list.map((r) => [r.name, r])), removed: NOTHING }
    this.log('debug', 'push', { type: typeUrl, version, resources: list.length, nonce })
    let bytes = RESPONSE_OVERHEAD
    for (const r of list) bytes += r.any.value.length + r.any.type_url.length + 8
    this.write(
      {
        version_info: version,
        resources: list.map((r) => r.any),
        type_url: typeUrl,
        nonce,
        control_plane: CONTROL_PLANE,
      },
      bytes,
      // the version is a hash of exactly the resources carried: streams sending it send the same bytes
      `${typeUrl}\n${version}`,
    )
  }
}

interface DeltaTypeState extends TypeState {
  /**
   * what the client holds: name → version. Shared between alike streams (never changed) unless `knownOwned`: a
   * shared push (see DeltaStream.push) hands every stream in the same state the same map.
   */
  known: Map<string, string>
  knownOwned: boolean
  /** subscribed names the client was told do not exist */
  toldAbsent: Set<string>
  answered: boolean
  /** the stream began with `initial_resource_versions`: the client holds config already */
  resumed: boolean
  /** VHDS: subscribed aliases → the VirtualHost each resolves to now (vhds-aliases.ts) */
  targets?: Map<string, string>
  /** VHDS: the values of `targets` */
  targetNames?: Set<string>
  /** VHDS: aliases the client was sent a resource for, with that resource's name */
  aliasSent?: Map<string, string>
}

class DeltaStream extends AdsStream {
  constructor(server: XdsServer, call: Call) {
    super(server, call, 'delta')
  }

  private st(typeUrl: string): DeltaTypeState | undefined {
    return this.types.get(typeUrl) as DeltaTypeState | undefined
  }

  protected handle(typeUrl: string, raw: unknown): void | Promise<void> {
    const req = raw as DeltaDiscoveryRequest
    const nonce = req.response_nonce ?? ''
    const subscribe = req.resource_names_subscribe ?? []
    const unsubscribe = req.resource_names_unsubscribe ?? []
    let st = this.st(typeUrl)
    if (!st) {
      st = {
        typeUrl,
        wildcard: false,
        legacyWildcard: WILDCARD_BY_DEFAULT.has(typeUrl) && subscribe.length === 0,
        names: NO_NAMES,
        pending: false,
        nacked: false,
        acked: NO_RESOURCES,
        ackedOwned: false,
        known: NO_VERSIONS,
        knownOwned: false,
        toldAbsent: new Set(),
        answered: false,
        resumed: false,
      }
      const initial = Object.entries(req.initial_resource_versions ?? {})
      if (initial.length > 0) {
        st.known = new Map(initial)
        st.knownOwned = true
      }
      st.resumed = st.known.size > 0
      if (st.resumed) {
        // what the client holds at the versions it names counts as ACKed (the clusters listeners wait for)
        const t = this.entry()?.types.get(typeUrl)
        const held = new Map<string, CachedResource>()
        for (const [n, v] of st.known) {
          const r = t?.items.get(n)
          if (r !== undefined && r.hash === v) held.set(n, r)
        }
        st.acked = held
        st.ackedOwned = true
      }
      st.wildcard = st.legacyWildcard
      this.types.set(typeUrl, st)
    }
    // ACK/NACK only for the latest response; subscription deltas always count (they are not repeated)
    const answered = nonce !== '' && nonce === st.nonce && st.pending
    if (answered) this.ack(st, req.error_detail)
    else if (nonce !== '' && nonce !== st.nonce) this.log('debug', 'stale nonce', { type: typeUrl, nonce })
    // the names change on a copy, then are interned: alike streams hold one set (what shared pushes are keyed by)
    const renamed = subscribe.length > 0 || unsubscribe.length > 0
    // names the decoder shared (alike streams send alike ones) added to a set alike streams share: the set made
    // for them once
    const shared = unsubscribe.length === 0 && subscribe.length > 0 && Object.isFrozen(subscribe)
    if (shared) {
      const { names, wildcard } = this.server.subscribedSet(st.names, subscribe)
      st.names = names
      if (wildcard) st.wildcard = true
    } else if (renamed) {
      st.names = new Set(st.names)
      for (const n of subscribe) {
        if (n === '*') st.wildcard = true
        else st.names.add(n)
      }
    }
    for (const n of unsubscribe) {
      if (n === '*') {
        st.wildcard = false
        st.legacyWildcard = false
        continue
      }
      st.names.delete(n)
      st.toldAbsent.delete(n)
      const via = st.aliasSent?.get(n)
      if (via !== undefined) {
        // an alias: the client drops the virtual host it resolved to, unless another subscription still names it
        st.aliasSent!.delete(n)
        st.targets?.delete(n)
        if (st.targets !== undefined) st.targetNames = new Set(st.targets.values())
        const still = st.names.has(via) || [...st.aliasSent!.values()].includes(via)
        if (!still && !st.wildcard) {
          ownKnown(st).delete(via)
          if (st.acked.has(via)) ownAcked(st).delete(via)
        }
      }
      if (!st.wildcard && st.acked.has(n)) ownAcked(st).delete(n)
      // forget what the client had, so that subscribing again sends it again (unless a wildcard still covers it)
      if (!st.wildcard && st.known.has(n)) ownKnown(st).delete(n)
    }
    if (renamed && !shared) st.names = this.server.internNames(st.names)
    // a VirtualHost subscription change may change the proxy's config (scoping): its answer waits for that
    const changed = typeUrl === TYPE_URL.virtualHost && (subscribe.length > 0 || unsubscribe.length > 0)
    const wait = changed && this.node ? this.server.onSubscription?.(this.node, typeUrl, st.names) : undefined
    const go = () => {
      if (this.closed) return
      if (answered) this.released(typeUrl)
      else this.want(typeUrl)
    }
    if (wait !== undefined) return wait.then(go, go)
    go()
  }

  /** Whether the client came back holding config: some type's first request named the versions it has. */
  private resuming(): boolean {
    for (const st of this.types.values()) if ((st as DeltaTypeState).resumed) return true
    return false
  }

  /** VirtualHost: a resource is in scope when subscribed by name or through an alias that resolves to it. */
  protected override inScope(st: TypeState, name: string): boolean {
    if (st.wildcard || st.names.has(name)) return true
    return (st as DeltaTypeState).targetNames?.has(name) ?? false
  }

  /** VHDS: resolves the subscribed names that are not resources against the snapshot's virtual hosts. */
  private resolveTargets(st: DeltaTypeState, items: ReadonlyMap<string, CachedResource> | undefined): void {
    const targets = new Map<string, string>()
    if (items !== undefined)
      for (const n of st.names) {
        if (items.has(n)) continue
        const r = resolveAlias(items, n)
        if (r !== undefined) targets.set(n, r)
      }
    st.targets = targets
    st.targetNames = new Set(targets.values())
    st.aliasSent ??= new Map()
  }

  /** The push of the common case (see SharedDelta): what alike streams send is computed once. */
  private pushShared(st: DeltaTypeState, t: CachedType | undefined): void {
    const typeUrl = st.typeUrl
    if (typeUrl === TYPE_URL.virtualHost && (st.targets === undefined || st.targets.size > 0)) {
      // no alias subscribed: none resolves
      st.targets = new Map()
      st.targetNames = new Set()
      st.aliasSent ??= new Map()
    }
    const d = sharedDelta({ typeUrl, t, known: st.known, names: st.names, wildcard: st.wildcard })
    if (d.resources.length === 0 && d.removed.length === 0 && st.answered) return
    if (!this.ready(st, d.resources, true)) return
    st.inflight = d.inflight
    st.known = d.known
    st.knownOwned = false
    for (const n of d.removedSubscribed) st.toldAbsent.add(n)
    // the shared nonce, unless this stream sent this very delta last (a NACK brought its state back): its own then
    const nonce = st.nonce === d.nonce ? this.nextNonce() : d.nonce
    st.nonce = nonce
    st.pending = true
    st.answered = true
    st.sentVersion = d.version
    this.log('debug', 'delta push', { type: typeUrl, resources: d.resources.length, removed: d.removed.length, nonce })
    this.write(
      {
        system_version_info: d.systemVersion,
        resources: d.wire as DeltaDiscoveryResponse['resources'],
        type_url: typeUrl,
        removed_resources: d.removed as string[],
        nonce,
        control_plane: CONTROL_PLANE,
      },
      d.bytes,
      d.key,
    )
  }

  protected desiredVersion(st: TypeState): string {
    const t = this.entry()?.types.get(st.typeUrl)
    if (!t) return versionOf([])
    // every resource of the type in scope (a wildcard, or names covering them all): the type's own version
    let all = true
    const items: CachedResource[] = []
    for (const r of t.items.values()) {
      if (this.inScope(st, r.name)) items.push(r)
      else all = false
    }
    return all ? t.version : versionOf(items)
  }

  protected push(typeUrl: string): void {
    const st = this.st(typeUrl)
    if (!st || st.pending || this.closed) return
    const entry = this.entry()
    if (!entry) return
    const t = entry.types.get(typeUrl)
    const keep = this.retained(st)
    const vhds = typeUrl === TYPE_URL.virtualHost
    const resuming = this.resuming()
    // the common case, computed once for every stream in the same state (below)
    if (
      keep.size === 0 &&
      st.toldAbsent.size === 0 &&
      (st.answered || !resuming) &&
      (!vhds || (st.names.size === 0 && (st.aliasSent === undefined || st.aliasSent.size === 0)))
    )
      return this.pushShared(st, t)
    const resources: CachedResource[] = []
    const removed: string[] = []
    const candidates = new Set<string>(st.names)
    if (st.wildcard && t) for (const n of t.items.keys()) candidates.add(n)
    for (const n of st.known.keys()) candidates.add(n)
    // VHDS: aliases answer with the virtual host they resolve to (sent again when an alias is new to the client)
    const aliasesOf = new Map<string, string[]>()
    if (vhds) {
      this.resolveTargets(st, t?.items)
      for (const [alias, name] of st.targets!) {
        candidates.add(name)
        const list = aliasesOf.get(name)
        if (list === undefined) aliasesOf.set(name, [alias])
        else list.push(alias)
      }
    }
    for (const name of candidates) {
      if (vhds && st.targets!.has(name)) continue
      const r = t?.items.get(name) ?? keep.get(name)
      if (r && this.inScope(st, name)) {
        const fresh = aliasesOf.get(name)?.some((a) => st.aliasSent!.get(a) !== name) ?? false
        if (st.known.get(name) !== r.hash || fresh) resources.push(r)
      } else if (vhds && st.known.has(name) && !this.inScope(st, name)) {
        // a virtual host no subscription resolves to any more (gone, or its domains changed): the client drops it
        removed.push(name)
      } else if (!r && st.known.has(name) && this.inScope(st, name)) {
        removed.push(name)
      } else if (!r && st.names.has(name) && !st.toldAbsent.has(name)) {
        // a resuming client was told on its earlier stream (VHDS aliases excepted: a request may be waiting)
        if (resuming && !vhds && !st.answered) st.toldAbsent.add(name)
        else removed.push(name)
      }
    }
    if (resources.length === 0 && removed.length === 0) {
      if (st.answered) return
      // resuming with exactly what it would be sent (after moving from another replica; a type it holds nothing of
      // names no versions, so the stream's other types tell): nothing to say
      if (st.resumed || resuming) {
        // a client resuming with exactly what it would be sent (after moving from another replica): nothing to say
        st.answered = true
        st.sentVersion = st.ackedVersion = this.desiredVersion(st)
        return
      }
    }
    if (!this.ready(st, resources)) return
    st.inflight = { full: false, items: new Map(resources.map((r) => [r.name, r])), removed: new Set(removed) }
    const known = ownKnown(st)
    for (const r of resources) {
      known.set(r.name, r.hash)
      st.toldAbsent.delete(r.name)
      for (const a of aliasesOf.get(r.name) ?? []) {
        st.aliasSent!.set(a, r.name)
        st.toldAbsent.delete(a)
      }
    }
    for (const n of removed) {
      known.delete(n)
      st.aliasSent?.delete(n)
      if (st.names.has(n)) st.toldAbsent.add(n)
    }
    const nonce = this.nextNonce()
    st.nonce = nonce
    st.pending = true
    st.answered = true
    st.sentVersion = this.desiredVersion(st)
    this.log('debug', 'delta push', { type: typeUrl, resources: resources.length, removed: removed.length, nonce })
    let bytes = RESPONSE_OVERHEAD
    // alike streams send alike deltas (the same resources at the same content hashes): their bytes are shared
    let key = `${typeUrl}\n${t?.version ?? ''}\n${removed.join(',')}`
    for (const r of resources) {
      bytes += r.any.value.length + r.any.type_url.length + r.name.length + 32
      key += `\n${r.name}\u0000${r.hash}`
      const aliases = aliasesOf.get(r.name)
      if (aliases) key += `\u0000${aliases.join(',')}`
    }
    for (const n of removed) bytes += n.length + 4
    this.write(
      {
        system_version_info: t?.version ?? versionOf([]),
        resources: resources.map((r) => {
          const aliases = aliasesOf.get(r.name)
          return { name: r.name, version: r.hash, resource: r.any, ...(aliases ? { aliases } : {}) }
        }),
        type_url: typeUrl,
        removed_resources: removed,
        nonce,
        control_plane: CONTROL_PLANE,
      },
      bytes,
      key,
    )
  }
}

/**
 * A delta push as a pure function of what it depends on in the common case (no retained clusters, no names told
 * absent, no VHDS aliases): the type's content, what the client holds, what it subscribes to. Alike streams hold
 * the same (shared) `known` and `names` objects, so 1000 alike proxies cost one computation, not 1000 walks over
 * a thousand resources each; the result carries the `known` map every such stream moves to, shared in turn.
 */
interface SharedDelta {
  readonly resources: readonly CachedResource[]
  readonly removed: readonly string[]
  /** removed names the client subscribes to (it is told they do not exist) */
  readonly removedSubscribed: readonly string[]
  readonly known: Map<string, string>
  readonly inflight: NonNullable<TypeState['inflight']>
  /** the version the client holds once it takes this (the type's, or that of the part in scope) */
  readonly version: string
  readonly systemVersion: string
  readonly wire: readonly { name: string; version: string; resource: CachedResource['any'] }[]
  readonly key: string
  readonly bytes: number
  /**
   * The nonce of this push for every stream that sends it: each such stream sends this delta once (what it holds
   * then is the delta's `known`, another input), and one nonce for all makes the whole message the same bytes for
   * all (written without a copy of its own per stream). Unique in every stream: no other push has it.
   */
  readonly nonce: string
}

let sharedNonces = 0

const sharedDeltas = new WeakMap<Map<string, string>, WeakMap<Set<string>, WeakMap<object, Map<string, SharedDelta>>>>()
const NO_TYPE = {}

/** What a shared delta push depends on. */
interface DeltaInput {
  typeUrl: string
  t: CachedType | undefined
  known: Map<string, string>
  names: Set<string>
  wildcard: boolean
}

function sharedDelta(input: DeltaInput): SharedDelta {
  const { typeUrl, t, known, names, wildcard } = input
  let byNames = sharedDeltas.get(known)
  if (byNames === undefined) sharedDeltas.set(known, (byNames = new WeakMap()))
  let byType = byNames.get(names)
  if (byType === undefined) byNames.set(names, (byType = new WeakMap()))
  const tk = t ?? NO_TYPE
  let byUrl = byType.get(tk)
  if (byUrl === undefined) byType.set(tk, (byUrl = new Map()))
  const k = wildcard ? `*${typeUrl}` : typeUrl
  const have = byUrl.get(k)
  if (have !== undefined) return have
  const d = computeDelta(input)
  byUrl.set(k, d)
  return d
}

function computeDelta({ typeUrl, t, known, names, wildcard }: DeltaInput): SharedDelta {
  const vhds = typeUrl === TYPE_URL.virtualHost
  const items = t?.items
  const resources: CachedResource[] = []
  const removed: string[] = []
  const removedSubscribed: string[] = []
  const look = (name: string) => {
    const r = items?.get(name)
    const inScope = wildcard || names.has(name)
    if (r && inScope) {
      if (known.get(name) !== r.hash) resources.push(r)
    } else if (known.has(name) ? inScope || vhds : !r && names.has(name)) {
      removed.push(name)
      if (names.has(name)) removedSubscribed.push(name)
    }
  }
  // every candidate once: the subscribed names, the type's resources (wildcard), what the client holds
  for (const n of names) look(n)
  if (wildcard && items) for (const n of items.keys()) if (!names.has(n)) look(n)
  for (const n of known.keys()) if (!names.has(n) && !(wildcard && items?.has(n))) look(n)
  const next = new Map(known)
  for (const r of resources) next.set(r.name, r.hash)
  for (const n of removed) next.delete(n)
  let version: string
  if (!t) version = versionOf([])
  else if (wildcard) version = t.version
  else {
    let all = true
    const scoped: CachedResource[] = []
    for (const r of t.items.values()) {
      if (names.has(r.name)) scoped.push(r)
      else all = false
    }
    version = all ? t.version : versionOf(scoped)
  }
  let bytes = RESPONSE_OVERHEAD
  let key = `${typeUrl}\n${t?.version ?? ''}\n${removed.join(',')}`
  for (const r of resources) {
    bytes += r.any.value.length + r.any.type_url.length + r.name.length + 32
    key += `\n${r.name}\u0000${r.hash}`
  }
  for (const n of removed) bytes += n.length + 4
  return {
    resources,
    removed,
    removedSubscribed,
    known: next,
    inflight: { full: false, items: new Map(resources.map((r) => [r.name, r])), removed: new Set(removed) },
    version,
    systemVersion: t?.version ?? versionOf([]),
    wire: resources.map((r) => ({ name: r.name, version: r.hash, resource: r.any })),
    key,
    bytes,
    nonce: `s${++sharedNonces}`,
  }
}

export class XdsServer {
  /** @internal responses encoded once and shared by the streams that send the same one */
  readonly responses = new SharedResponses()
  /** @internal requests whose name lists are decoded once for the streams that send the same ones */
  readonly requests = new SharedRequestNames()
  readonly cache: SnapshotCache
  readonly logger: XdsLogger
  private readonly grpcServer: grpc.Server
  private readonly snapshotFor?: XdsServerOptions['snapshotFor']
  readonly onSubscription?: XdsServerOptions['onSubscription']
  private readonly debounceMs: number
  /** @internal see XdsServerOptions.holdTimeoutMs */
  readonly holdTimeoutMs: number
  private readonly streams = new Map<string, Set<AdsStream>>()
  private readonly building = new Map<string, Promise<void>>()
  private readonly timers = new Map<string, NodeJS.Timeout>()
  private readonly unwatch: () => void
  private closing = false
  /** @internal make before break checks of shared pushes (AdsStream.ready) */
  readonly recentCold = new RecentCold()
  /** @internal bytes written to streams and not yet flushed, of streams not stalled (see maxQueuedBytes) */
  queuedBytes = 0
  private readonly maxQueuedBytes: number
  private readonly stallMs: number
  private readonly sliceMs: number
  /** streams with an EDS push due (served first), and streams with other pushes due; in arrival order */
  private readonly urgent = new Set<AdsStream>()
  private readonly normal = new Set<AdsStream>()
  private pumpScheduled?: NodeJS.Immediate
  private stallTimer?: NodeJS.Timeout
  /** first snapshots of connecting nodes, built a few per event-loop turn */
  private readonly admissions: (() => void)[] = []
  private admitScheduled?: NodeJS.Immediate

  constructor(opts: XdsServerOptions = {}) {
    this.cache = opts.cache ?? new SnapshotCache()
    this.snapshotFor = opts.snapshotFor
    this.onSubscription = opts.onSubscription
    this.debounceMs = opts.pushDebounceMs ?? 100
    this.holdTimeoutMs = opts.holdTimeoutMs ?? 5000
    this.maxQueuedBytes = opts.maxQueuedBytes ?? 16 * 1024 * 1024
    this.stallMs = opts.stallMs ?? 5000
    this.sliceMs = opts.sliceMs ?? 10
    this.logger = opts.log ?? ((level, msg, fields) => defaultLog(level, 'xds', msg, fields))
    this.grpcServer = new grpc.Server({
      'grpc.keepalive_time_ms': 30_000,
      'grpc.keepalive_timeout_ms': 10_000,
      'grpc.http2.min_ping_interval_without_data_ms': 10_000,
      ...opts.grpcOptions,
    })
    this.grpcServer.addService(this.requests.service(this.responses.service(adsService().service)), {
      StreamAggregatedResources: (call: Call) => this.open(() => new SotwStream(this, call), call),
      DeltaAggregatedResources: (call: Call) => this.open(() => new DeltaStream(this, call), call),
    })
    this.unwatch = this.cache.watch('*', (nodeId) => this.schedulePush(nodeId))
  }

  /** Serves another gRPC service on the xDS port (the rate limit share service); call before `listen`. */
  addService(service: grpc.ServiceDefinition, impl: grpc.UntypedServiceImplementation): void {
    this.grpcServer.addService(service, impl)
  }

  /** Stores a node's snapshot; connected streams of that node get the changes after the debounce delay. */
  setSnapshot(nodeId: string, snapshot: Snapshot): string[] {
    return this.cache.setSnapshot(nodeId, snapshot)
  }

  /**
   * Binds and resolves with the bound port (`port` 0 picks a free one); plain text unless `credentials` (TLS) are
   * given.
   */
  listen(host: string, port: number, credentials = grpc.ServerCredentials.createInsecure()): Promise<number> {
    const h = host.includes(':') && !host.startsWith('[') ? `[${host}]` : host
    return new Promise((resolve, reject) => {
      this.grpcServer.bindAsync(`${h}:${port}`, credentials, (err, bound) => (err ? reject(err) : resolve(bound)))
    })
  }

  /**
   * Drains and stops the server: new streams are refused and every open one is closed with UNAVAILABLE, which tells
   * a client with several replicas to move to another (it keeps serving its config meanwhile); calls still running
   * (a certificate being signed) get `graceMs` to finish before the server stops forcefully.
   */
  async close(graceMs = 2000): Promise<void> {
    this.closing = true
    this.unwatch()
    for (const t of this.timers.values()) clearTimeout(t)
    this.timers.clear()
    if (this.pumpScheduled) clearImmediate(this.pumpScheduled)
    if (this.admitScheduled) clearImmediate(this.admitScheduled)
    clearTimeout(this.stallTimer)
    this.urgent.clear()
    this.normal.clear()
    let n = 0
    for (const set of this.streams.values())
      for (const s of [...set]) {
        s.drain()
        n++
      }
    if (n > 0) this.logger('info', 'xDS streams closed: the server drains', { streams: n })
    await new Promise<void>((resolve) => {
      const force = setTimeout(() => {
        this.grpcServer.forceShutdown()
        resolve()
      }, graceMs)
      force.unref()
      this.grpcServer.tryShutdown(() => {
        clearTimeout(force)
        resolve()
      })
    })
  }

  /** One entry per connected node (for `loom proxy-status`). */
  status(): NodeStatus[] {
    const out: NodeStatus[] = []
    for (const [nodeId, set] of this.streams) {
      if (set.size === 0) continue
      const newest = [...set].reduce((a, b) => (b.connectedAt >= a.connectedAt ? b : a))
      out.push({
        nodeId,
        connectedAt: newest.connectedAt.toISOString(),
        streams: set.size,
        protocol: newest.protocol,
        userAgent: userAgentOf(newest.node),
        perType: newest.typeStatus(),
        adminAddress: adminAddressOf(newest.node?.metadata),
      })
    }
    return out.sort((a, b) => a.nodeId.localeCompare(b.nodeId))
  }

  /** The connected nodes that sent an admin address (what the gatherer scrapes): no per-type work, unlike status(). */
  adminAddresses(): { nodeId: string; adminAddress: string }[] {
    const out: { nodeId: string; adminAddress: string }[] = []
    for (const [nodeId, set] of this.streams) {
      let newest: AdsStream | undefined
      for (const s of set) if (newest === undefined || s.connectedAt >= newest.connectedAt) newest = s
      const adminAddress = newest === undefined ? null : adminAddressOf(newest.node?.metadata)
      if (adminAddress !== null) out.push({ nodeId, adminAddress })
    }
    return out.sort((a, b) => (a.nodeId < b.nodeId ? -1 : a.nodeId > b.nodeId ? 1 : 0))
  }

  /** Ids of the nodes with an open stream. */
  connectedNodes(): string[] {
    return [...this.streams.keys()]
  }

  private open(make: () => AdsStream, call: Call): void {
    if (this.closing) {
      call.emit('error', { code: grpc.status.UNAVAILABLE, details: 'xDS server is shutting down' })
      return
    }
    make()
  }

  /** @internal a stream learned its node: register it and make sure the node has a snapshot */
  async attach(stream: AdsStream): Promise<void> {
    const id = stream.node!.id
    let set = this.streams.get(id)
    if (!set) this.streams.set(id, (set = new Set()))
    set.add(stream)
    stream.log('info', 'xDS stream opened', {
      cluster: stream.node!.cluster,
      userAgent: userAgentOf(stream.node) ?? undefined,
    })
    if (this.cache.getEntry(id) || !this.snapshotFor) return
    let p = this.building.get(id)
    if (!p) {
      const node = stream.node!
      p = (async () => {
        try {
          // a connection storm: builds wait their turn, a few per event-loop turn, so that I/O (keepalives,
          // requests, the writes of the snapshots already built) goes on between them
          await this.admit()
          if (this.cache.getEntry(id) || this.closing) return
          const snap = await this.snapshotFor!(node)
          if (!this.cache.getEntry(id)) this.cache.setSnapshot(id, snap)
        } finally {
          this.building.delete(id)
        }
      })()
      this.building.set(id, p)
    }
    try {
      await p
    } catch (e) {
      stream.log('error', 'building the snapshot failed', { error: (e as Error).message })
      stream.fail(grpc.status.UNAVAILABLE, `no configuration for node ${id}: ${(e as Error).message}`)
    }
  }

  /** @internal */
  detach(stream: AdsStream): void {
    const id = stream.node?.id
    if (id === undefined) return
    const set = this.streams.get(id)
    if (!set?.delete(stream)) return
    stream.log('info', 'xDS stream closed')
    if (set.size === 0) this.streams.delete(id)
  }

  private readonly nameSets = new Map<string, WeakRef<ReadonlySet<string>>>()
  private readonly nameSetGone = new FinalizationRegistry<string>((key) => {
    if (this.nameSets.get(key)?.deref() === undefined) this.nameSets.delete(key)
  })

  /**
   * @internal A SotW subscription as a set (without `*`): `current` when it names the same, else the set another
   * stream holds with these names (sidecars alike subscribe to the same thousand EDS names), else a new one. The
   * sets are shared: never changed.
   */
  nameSet(current: Set<string>, names: readonly string[]): Set<string> {
    // names the decoder shared (frozen, never changed): the set they made before, found by identity
    const frozen = Object.isFrozen(names)
    if (frozen) {
      const have = this.setOfNames.get(names)
      if (have !== undefined) return have.names
    }
    const set = this.nameSetOf(current, names)
    if (frozen) this.setOfNames.set(names, { names: set, wildcard: names.includes('*') })
    return set
  }

  /** SotW: sets made for name arrays the request decoder shared, with whether the names held `*` */
  private readonly setOfNames = new WeakMap<readonly string[], { names: Set<string>; wildcard: boolean }>()
  /** delta: per subscription set held, per name array the decoder shared, the set with those names added */
  private readonly setWithNames = new WeakMap<
    ReadonlySet<string>,
    WeakMap<readonly string[], { names: Set<string>; wildcard: boolean }>
  >()

  /**
   * @internal A delta subscription set (interned: never changed) with names the decoder shared (frozen) subscribed:
   * the interned set without `*`, and whether the names held `*`. Made once for all the streams that hold that set
   * and sent those names.
   */
  subscribedSet(current: Set<string>, names: readonly string[]): { names: Set<string>; wildcard: boolean } {
    let byNames = this.setWithNames.get(current)
    if (byNames === undefined) this.setWithNames.set(current, (byNames = new WeakMap()))
    let have = byNames.get(names)
    if (have === undefined) {
      const set = new Set(current)
      for (const n of names) if (n !== '*') set.add(n)
      have = { names: this.internNames(set), wildcard: names.includes('*') }
      byNames.set(names, have)
    }
    return have
  }

  private nameSetOf(current: Set<string>, names: readonly string[]): Set<string> {
    const wanted = names.includes('*') ? names.filter((n) => n !== '*') : names
    if (wanted.length === current.size && wanted.every((n) => current.has(n))) return current
    if (wanted.length < 8) return new Set(wanted)
    const key = shortHash(wanted.join('\n'))
    const have = this.nameSets.get(key)?.deref() as Set<string> | undefined
    if (have !== undefined && have.size === wanted.length && wanted.every((n) => have.has(n))) return have
    const set = new Set(wanted)
    this.nameSets.set(key, new WeakRef(set))
    this.nameSetGone.register(set, key)
    return set
  }

  private readonly deltaNames = new Map<string, WeakRef<Set<string>>>()
  private readonly deltaNamesGone = new FinalizationRegistry<string>((key) => {
    if (this.deltaNames.get(key)?.deref() === undefined) this.deltaNames.delete(key)
  })

  /**
   * @internal A delta subscription's names, interned: the set another stream holds with the same names in the same
   * order (alike proxies subscribe alike), else `names` itself, from now on shared and never changed.
   */
  internNames(names: Set<string>): Set<string> {
    if (names.size === 0) return NO_NAMES
    const list = [...names]
    const key = list.length < 8 ? list.join('\n') : `${list.length}\n${shortHash(list.join('\n'))}`
    const have = this.deltaNames.get(key)?.deref()
    if (have !== undefined && have.size === list.length) {
      let same = true
      let i = 0
      for (const n of have) if (n !== list[i++]) same = false
      if (same) return have
    }
    this.deltaNames.set(key, new WeakRef(names))
    this.deltaNamesGone.register(names, key)
    return names
  }

  /** Resolves when a snapshot build may run: in arrival order, as many per event-loop turn as fit in `sliceMs`. */
  private admit(): Promise<void> {
    return new Promise((resolve) => {
      this.admissions.push(resolve)
      this.admitScheduled ??= setImmediate(() => this.runAdmissions())
    })
  }

  private async runAdmissions(): Promise<void> {
    const end = performance.now() + this.sliceMs
    // each resolved build runs in the microtasks after its resolve: await it before timing the next
    while (this.admissions.length > 0 && !this.closing) {
      this.admissions.shift()!()
      await Promise.resolve()
      await Promise.resolve()
      if (performance.now() >= end) break
    }
    this.admitScheduled = undefined
    if (this.admissions.length > 0 && !this.closing) this.admitScheduled = setImmediate(() => this.runAdmissions())
  }

  /**
   * @internal a stream has pushes due (or can take the next one): queue it. The queue runs in turns of at most
   * `sliceMs`, streams with an EDS push first (endpoint changes are the ones traffic waits for), each stream
   * writing one response per turn in push order, none while its previous response is unflushed.
   */
  enqueue(stream: AdsStream): void {
    if (stream.closed || this.closing || stream.due.size === 0) return
    if (stream.due.has(TYPE_URL.endpoint)) this.urgent.add(stream)
    if (stream.due.size > (stream.due.has(TYPE_URL.endpoint) ? 1 : 0)) this.normal.add(stream)
    this.pumpScheduled ??= setImmediate(() => this.pump())
  }

  private pump(): void {
    this.pumpScheduled = undefined
    const end = performance.now() + this.sliceMs
    for (;;) {
      if (this.queuedBytes > this.maxQueuedBytes) {
        // resumed by a flush (its callback enqueues the stream) or by the stall check
        this.armStallCheck()
        return
      }
      const queue = this.urgent.size > 0 ? this.urgent : this.normal
      const stream = first(queue)
      if (stream === undefined) return
      queue.delete(stream)
      // a stream still flushing comes back through its write callback (or 'drain')
      stream.flush(queue === this.urgent)
      if (performance.now() >= end) break
    }
    if (this.urgent.size > 0 || this.normal.size > 0) this.pumpScheduled ??= setImmediate(() => this.pump())
  }

  /** Streams whose response has not flushed for `stallMs` stop counting against `maxQueuedBytes`. */
  private armStallCheck(): void {
    if (this.stallTimer) return
    this.stallTimer = setTimeout(() => {
      this.stallTimer = undefined
      const now = performance.now()
      for (const set of this.streams.values()) {
        for (const s of set) {
          if (s.countedBytes && s.unflushed > 0 && now - s.writeStartedAt >= this.stallMs) {
            s.countedBytes = false
            this.queuedBytes -= s.unflushed
            s.log('debug', 'response not flushed in time: the stream stops counting against the queued bytes', {
              bytes: s.unflushed,
            })
          }
        }
      }
      if (this.queuedBytes > this.maxQueuedBytes) this.armStallCheck()
      else this.pumpScheduled ??= setImmediate(() => this.pump())
    }, this.stallMs)
    this.stallTimer.unref()
  }

  private schedulePush(nodeId: string): void {
    if (this.closing || !this.streams.has(nodeId) || this.timers.has(nodeId)) return
    const fire = () => {
      this.timers.delete(nodeId)
      for (const s of [...(this.streams.get(nodeId) ?? [])]) s.onSnapshot()
    }
    this.timers.set(nodeId, setTimeout(fire, this.debounceMs))
  }
}
