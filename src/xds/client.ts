/**
 * The ADS client the Loom proxy uses: one stream to the control plane, State of the World
 * (`StreamAggregatedResources`, the default) or incremental (`DeltaAggregatedResources`).
 *
 * It sends the node on the first request of each stream, subscribes to LDS and CDS as wildcards and to the RDS/EDS
 * names the consumer asks for, decodes every resource to Loom's proto-JSON form, hands each response to the consumer
 * and ACKs or NACKs it with the consumer's verdict (a NACK carries `error_detail` and keeps the last accepted
 * version). When the stream breaks it reconnects with exponential backoff, keeping its state: the new stream
 * resubscribes with what it has (SotW: the versions; delta: `initial_resource_versions`).
 *
 * Given several servers (control-plane replicas on one store), it talks to one at a time and moves to the next when
 * the stream ends (the replica died, drained or refused it); the backoff grows only once every server has failed in
 * a row. Replicas serve the same versions for the same config, so a move re-sends nothing the proxy already holds.
 *
 * The consumer sees the same thing in both modes: for LDS/CDS the full set of resources and the names removed since
 * the last accepted response; for RDS/EDS the resources that came (and, in delta mode, the names removed).
 */
import { EventEmitter } from 'node:events'
import * as grpc from '@grpc/grpc-js'
import { log as defaultLog } from '../core/log.js'
import {
  type AdsClientStub,
  adsService,
  type DeltaDiscoveryRequest,
  type DeltaDiscoveryResponse,
  type DiscoveryRequest,
  type DiscoveryResponse,
  type WireNode,
} from './ads.js'
import { resourceName } from './cache.js'
import { decodeResource, type EncodedAny, jsonToStruct } from './proto.js'
import type { XdsLogger } from './server.js'
import { TYPE_URL } from './snapshot.js'

export type ConsumerVerdict = { ok: true } | { ok: false; error: string }

/**
 * Receives one response: resources by name (decoded, without `@type`) and the names removed. For LDS/CDS (full
 * state) `resources` is the whole set and `removed` the accepted names it no longer holds.
 */
export type ResourceConsumer = (
  typeUrl: string,
  version: string,
  resources: Map<string, Record<string, unknown>>,
  removed: string[],
  /** delta: the aliases the response answers (a resource's `aliases`, or a removed name), VHDS on demand */
  aliases?: ReadonlySet<string>,
) => ConsumerVerdict | Promise<ConsumerVerdict>

export interface AdsClientNode {
  id: string
  cluster?: string
  metadata?: Record<string, unknown>
  locality?: { region?: string; zone?: string; sub_zone?: string }
}

export interface AdsClientOptions {
  /** `host:port` of the ADS server, or of several replicas of it (tried in turn) */
  server: string | readonly string[]
  node: AdsClientNode
  onResources: ResourceConsumer
  /** 'sotw' (default) or 'delta' */
  protocol?: 'sotw' | 'delta'
  /** types subscribed as wildcards on start (default LDS and CDS) */
  wildcardTypes?: string[]
  credentials?: grpc.ChannelCredentials
  initialBackoffMs?: number
  maxBackoffMs?: number
  log?: XdsLogger
  userAgentVersion?: string
}

export interface ClientTypeState {
  typeUrl: string
  wildcard: boolean
  names: Set<string>
  /** version of the last accepted response ('' before any) */
  version: string
  /** nonce of the last response received on the current stream */
  nonce: string
  /** accepted resources: name → per-resource version (delta) or '' (SotW) */
  accepted: Map<string, string>
  /** error of the last NACK, cleared by the next ACK */
  lastError?: string
  responses: number
  /** a request for this type went out on the current stream */
  requested: boolean
  /** delta: the subscription as the server knows it on the current stream */
  streamWildcard: boolean
  streamNames: Set<string>
  /** delta, LDS/CDS: the accepted resources, to hand the consumer the full set */
  full?: Map<string, Record<string, unknown>>
}

/** Full-state types: a resource missing from a response was removed. */
const FULL_STATE = new Set<string>([TYPE_URL.listener, TYPE_URL.cluster])
const REQUEST_ORDER: string[] = [
  TYPE_URL.cluster,
  TYPE_URL.listener,
  TYPE_URL.endpoint,
  TYPE_URL.secret,
  TYPE_URL.route,
]

type SotwCall = grpc.ClientDuplexStream<DiscoveryRequest, DiscoveryResponse>
type DeltaCall = grpc.ClientDuplexStream<DeltaDiscoveryRequest, DeltaDiscoveryResponse>

/**
 * The HTTP/2 flow-control window an xDS client advertises (stream and connection), as Envoy's large defaults do: a
 * response of a thousand clusters (about a megabyte) then arrives in one go instead of 64 KiB per round trip.
 */
export const XDS_FLOW_CONTROL_WINDOW = 16 * 1024 * 1024

export class AdsClient extends EventEmitter {
  readonly protocol: 'sotw' | 'delta'
  private readonly opts: AdsClientOptions
  private readonly log: XdsLogger
  private readonly types = new Map<string, ClientTypeState>()
  private readonly servers: readonly string[]
  /** one channel per server, made when first used */
  private readonly stubs = new Map<number, AdsClientStub>()
  /** the server the current (or next) stream goes to */
  private current = 0
  private started = false
  private call?: SotwCall | DeltaCall
  private nodeSent = false
  private attempt = 0
  private retryTimer?: NodeJS.Timeout
  private queue: Promise<void> = Promise.resolve()
  private closed = false
  private streamsOpened = 0

  constructor(opts: AdsClientOptions) {
    super()
    this.opts = opts
    this.protocol = opts.protocol ?? 'sotw'
    this.servers = typeof opts.server === 'string' ? [opts.server] : [...opts.server]
    if (this.servers.length === 0) throw new Error('an ADS client needs a server')
    this.log = opts.log ?? ((level, msg, fields) => defaultLog(level, 'xds-client', msg, fields))
    for (const t of opts.wildcardTypes ?? [TYPE_URL.listener, TYPE_URL.cluster]) this.state(t).wildcard = true
  }

  /** Opens the stream (and keeps one open until `close()`). */
  start(): this {
    if (!this.started) {
      this.started = true
      this.connect()
    }
    return this
  }

  /** The server the current stream is open to (or the next one goes to). */
  get server(): string {
    return this.servers[this.current]!
  }

  private stub(): AdsClientStub {
    let stub = this.stubs.get(this.current)
    if (stub === undefined) {
      const { Client } = adsService()
      stub = new Client(this.server, this.opts.credentials ?? grpc.credentials.createInsecure(), {
        'grpc.keepalive_time_ms': 30_000,
        'grpc.keepalive_timeout_ms': 10_000,
        'grpc.max_receive_message_length': -1,
        'grpc-node.flow_control_window': XDS_FLOW_CONTROL_WINDOW,
      })
      this.stubs.set(this.current, stub)
    }
    return stub
  }

  /** Replaces the subscription of a type: names, or `'*'` for everything. */
  subscribe(typeUrl: string, names: Iterable<string> | '*'): void {
    const st = this.state(typeUrl)
    const wildcard = names === '*'
    const set = new Set(wildcard ? [] : names)
    if (st.wildcard === wildcard && sameSet(st.names, set) && st.requested) return
    st.wildcard = wildcard
    st.names = set
    // VirtualHosts are subscribed by alias and arrive under their own names: the consumer drops what it no longer uses
    if (!wildcard && typeUrl !== TYPE_URL.virtualHost) {
      for (const n of [...st.accepted.keys()]) {
        if (set.has(n)) continue
        st.accepted.delete(n)
        st.full?.delete(n)
      }
    }
    this.request(st)
  }

  /** The client's view of a type (undefined when never subscribed). */
  typeState(typeUrl: string): Readonly<ClientTypeState> | undefined {
    return this.types.get(typeUrl)
  }

  get connected(): boolean {
    return this.call !== undefined
  }

  /** Streams opened so far (the first connection and every reconnection). */
  get connections(): number {
    return this.streamsOpened
  }

  close(): void {
    this.closed = true
    clearTimeout(this.retryTimer)
    const call = this.call
    this.call = undefined
    call?.cancel()
    for (const stub of this.stubs.values()) stub.close()
    this.stubs.clear()
  }

  private state(typeUrl: string): ClientTypeState {
    let st = this.types.get(typeUrl)
    if (!st) {
      st = {
        typeUrl,
        wildcard: false,
        names: new Set(),
        version: '',
        nonce: '',
        accepted: new Map(),
        responses: 0,
        requested: false,
        streamWildcard: false,
        streamNames: new Set(),
        ...(FULL_STATE.has(typeUrl) && this.protocol === 'delta' ? { full: new Map() } : {}),
      }
      this.types.set(typeUrl, st)
    }
    return st
  }

  private connect(): void {
    if (this.closed || !this.started) return
    const stub = this.stub()
    const call: SotwCall | DeltaCall =
      this.protocol === 'delta' ? stub.DeltaAggregatedResources() : stub.StreamAggregatedResources()
    this.call = call
    this.nodeSent = false
    this.streamsOpened++
    for (const st of this.types.values()) {
      st.nonce = ''
      st.requested = false
      st.streamWildcard = false
      st.streamNames = new Set()
    }
    let ended = false
    const onEnd = (why: string) => {
      if (ended) return
      ended = true
      if (this.call === call) this.call = undefined
      if (this.closed) return
      const from = this.server
      const delay = this.backoff()
      // with replicas, the next stream goes to the next one
      this.current = (this.current + 1) % this.servers.length
      this.log('warn', 'ADS stream ended, reconnecting', { server: from, next: this.server, why, inMs: delay })
      this.emit('disconnected', why, from)
      this.retryTimer = setTimeout(() => this.connect(), delay)
    }
    call.on('data', (resp: DiscoveryResponse | DeltaDiscoveryResponse) => {
      this.queue = this.queue.then(() =>
        this.protocol === 'delta'
          ? this.receiveDelta(call, resp as DeltaDiscoveryResponse)
          : this.receive(call, resp as DiscoveryResponse),
      )
    })
    call.on('error', (e: grpc.ServiceError) => onEnd(`${grpc.status[e.code] ?? e.code}: ${e.details ?? e.message}`))
    call.on('end', () => onEnd('stream closed by the server'))
    const order = [...this.types.keys()].sort((a, b) => rank(a) - rank(b))
    for (const t of order) {
      const st = this.types.get(t)!
      if (st.wildcard || st.names.size > 0 || st.responses > 0) this.request(st)
    }
    this.emit('connecting', this.server)
  }

  /** The delay before the next stream: it doubles each time every server has failed in a row. */
  private backoff(): number {
    const base = this.opts.initialBackoffMs ?? 500
    const max = this.opts.maxBackoffMs ?? 30_000
    const d = Math.min(max, base * 2 ** Math.floor(this.attempt++ / this.servers.length))
    return Math.round(d * (0.8 + Math.random() * 0.4))
  }

  private wireNode(): WireNode | undefined {
    if (this.nodeSent) return undefined
    this.nodeSent = true
    const n = this.opts.node
    return {
      id: n.id,
      cluster: n.cluster ?? '',
      ...(n.metadata ? { metadata: jsonToStruct(n.metadata) } : {}),
      locality: n.locality ?? {},
      user_agent_name: 'loom',
      user_agent_version: this.opts.userAgentVersion ?? '',
      client_features: [],
    }
  }

  private write(req: DiscoveryRequest | DeltaDiscoveryRequest): void {
    try {
      ;(this.call as grpc.ClientWritableStream<DiscoveryRequest | DeltaDiscoveryRequest> | undefined)?.write(req)
    } catch (e) {
      this.log('debug', 'ADS write failed', { error: (e as Error).message })
    }
  }

  /** Sends the subscription of a type (SotW: the whole set, with the last nonce; delta: what changed). */
  private request(st: ClientTypeState): void {
    if (!this.call) return
    if (this.protocol === 'sotw') {
      this.sendSotw(st)
      return
    }
    const initial = !st.requested
    const sub: string[] = []
    const unsub: string[] = []
    if (st.wildcard && !st.streamWildcard) sub.push('*')
    if (!st.wildcard && st.streamWildcard) unsub.push('*')
    for (const n of st.names) if (!st.streamNames.has(n)) sub.push(n)
    for (const n of st.streamNames) if (!st.names.has(n)) unsub.push(n)
    if (!initial && sub.length === 0 && unsub.length === 0) return
    st.streamWildcard = st.wildcard
    st.streamNames = new Set(st.names)
    st.requested = true
    const req: DeltaDiscoveryRequest = {
      type_url: st.typeUrl,
      resource_names_subscribe: sub,
      resource_names_unsubscribe: unsub,
    }
    if (initial) {
      const versions = [...st.accepted].filter(([n, v]) => v && (st.wildcard || st.names.has(n)))
      if (versions.length > 0) req.initial_resource_versions = Object.fromEntries(versions)
    }
    const node = this.wireNode()
    if (node) req.node = node
    this.write(req)
  }

  private sendSotw(st: ClientTypeState, errorDetail?: { code: number; message: string }): void {
    const req: DiscoveryRequest = {
      version_info: st.version,
      resource_names: st.wildcard ? (st.names.size > 0 ? ['*', ...st.names] : []) : [...st.names],
      type_url: st.typeUrl,
      response_nonce: st.nonce,
    }
    if (errorDetail) req.error_detail = errorDetail
    const node = this.wireNode()
    if (node) req.node = node
    st.requested = true
    this.write(req)
  }

  private async receive(call: SotwCall | DeltaCall, resp: DiscoveryResponse): Promise<void> {
    if (this.call !== call) return
    this.attempt = 0
    const st = this.types.get(resp.type_url)
    if (!st) {
      this.log('warn', 'response for a type not subscribed', { type: resp.type_url })
      return
    }
    st.nonce = resp.nonce
    st.responses++
    const resources = new Map<string, Record<string, unknown>>()
    let removed: string[] = []
    let verdict: ConsumerVerdict
    try {
      for (const any of resp.resources ?? []) {
        const [name, r] = decode(resp.type_url, any)
        if (resources.has(name)) throw new Error(`duplicate resource ${name}`)
        resources.set(name, r)
      }
      if (FULL_STATE.has(resp.type_url)) removed = [...st.accepted.keys()].filter((n) => !resources.has(n))
      verdict = await this.opts.onResources(resp.type_url, resp.version_info, resources, removed)
    } catch (e) {
      verdict = { ok: false, error: (e as Error).message }
    }
    if (this.call !== call) return
    if (verdict.ok) {
      st.version = resp.version_info
      st.lastError = undefined
      if (FULL_STATE.has(resp.type_url)) st.accepted = new Map([...resources.keys()].map((n) => [n, '']))
      else for (const n of resources.keys()) st.accepted.set(n, '')
      this.sendSotw(st)
    } else {
      st.lastError = verdict.error
      this.log('warn', 'NACK', { type: resp.type_url, version: resp.version_info, error: verdict.error })
      this.sendSotw(st, { code: grpc.status.INVALID_ARGUMENT, message: verdict.error })
    }
    this.emit('response', resp.type_url, resp.version_info, verdict.ok)
  }

  private async receiveDelta(call: SotwCall | DeltaCall, resp: DeltaDiscoveryResponse): Promise<void> {
    if (this.call !== call) return
    this.attempt = 0
    const st = this.types.get(resp.type_url)
    if (!st) {
      this.log('warn', 'response for a type not subscribed', { type: resp.type_url })
      return
    }
    st.nonce = resp.nonce
    st.responses++
    const changed = new Map<string, { version: string; resource: Record<string, unknown> }>()
    const removed = resp.removed_resources ?? []
    let aliases: Set<string> | undefined
    if (resp.type_url === TYPE_URL.virtualHost) {
      aliases = new Set(removed)
      for (const r of resp.resources ?? []) for (const a of r.aliases ?? []) aliases.add(a)
    }
    let handed: Map<string, Record<string, unknown>> | undefined
    let verdict: ConsumerVerdict
    try {
      for (const r of resp.resources ?? []) {
        if (!r.resource) throw new Error(`resource ${r.name} without a body`)
        const [name, body] = decode(resp.type_url, r.resource)
        if (name !== r.name) throw new Error(`resource named ${r.name} holds ${name}`)
        if (changed.has(name)) throw new Error(`duplicate resource ${name}`)
        changed.set(name, { version: r.version, resource: body })
      }
      if (st.full) {
        handed = new Map(st.full)
        for (const n of removed) handed.delete(n)
        for (const [n, c] of changed) handed.set(n, c.resource)
      }
      const give = handed ?? new Map([...changed].map(([n, c]) => [n, c.resource]))
      verdict = await this.opts.onResources(resp.type_url, resp.system_version_info, give, removed, aliases)
    } catch (e) {
      verdict = { ok: false, error: (e as Error).message }
    }
    if (this.call !== call) return
    const ack: DeltaDiscoveryRequest = {
      type_url: resp.type_url,
      resource_names_subscribe: [],
      resource_names_unsubscribe: [],
      response_nonce: resp.nonce,
    }
    if (verdict.ok) {
      st.version = resp.system_version_info
      st.lastError = undefined
      for (const n of removed) st.accepted.delete(n)
      for (const [n, c] of changed) st.accepted.set(n, c.version)
      if (handed) st.full = handed
    } else {
      st.lastError = verdict.error
      this.log('warn', 'NACK', { type: resp.type_url, version: resp.system_version_info, error: verdict.error })
      ack.error_detail = { code: grpc.status.INVALID_ARGUMENT, message: verdict.error }
    }
    this.write(ack)
    this.emit('response', resp.type_url, resp.system_version_info, verdict.ok)
  }
}

/**
 * One gRPC target for unary calls to whichever replica answers (certificate signing, rate-limit shares): gRPC's own
 * `ipv4:a:port,b:port` list, which connects to the first that accepts and moves on when it fails. Names that are not
 * IPv4 addresses, and TLS (whose certificate is checked against one name), use the first server.
 */
export function grpcTarget(servers: readonly string[], tls: boolean): string {
  if (servers.length === 1 || tls) return servers[0]!
  if (!servers.every((s) => /^\d{1,3}(\.\d{1,3}){3}:\d{1,5}$/.test(s))) return servers[0]!
  return `ipv4:${servers.join(',')}`
}

function decode(typeUrl: string, any: EncodedAny): [string, Record<string, unknown>] {
  if (any.type_url !== typeUrl) throw new Error(`resource of type ${any.type_url} in a ${typeUrl} response`)
  const r = decodeResource(any, { withType: false })
  return [resourceName(typeUrl, r), r]
}

function rank(t: string): number {
  const i = REQUEST_ORDER.indexOf(t)
  return i < 0 ? REQUEST_ORDER.length : i
}

function sameSet(a: Set<string>, b: Set<string>): boolean {
  if (a.size !== b.size) return false
  for (const x of a) if (!b.has(x)) return false
  return true
}
