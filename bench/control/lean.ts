// A lean xDS client for the control-plane benchmark: real ADS on the wire (SotW or delta, ACKs with nonces,
// subscriptions as a Loom proxy makes them, reconnects with `initial_resource_versions`), but it reads of each
// resource only what a proxy needs to know to subscribe further: names (field 1 of every resource, or the delta
// `Resource.name`), the EDS service name and discovery type of a cluster (a few fields of the wire format), the RDS
// names of a listener and the clusters of a VirtualHost (those two are decoded in full: a proxy holds few of them).
// Endpoints and route configurations are never decoded: that is what makes 1000 of these fit on one core. The few
// full-decoding `AdsClient`s the fleet also runs check that what is sent decodes. It speaks gRPC over node:http2
// itself (h2call.ts): grpc-js's client was a third of the clients' CPU.
import * as grpc from '@grpc/grpc-js'
import { H2Call, H2Session, RecentMessages } from './h2call.js'
import {
  adsService,
  type DeltaDiscoveryRequest,
  type DeltaDiscoveryResponse,
  type DiscoveryRequest,
  type DiscoveryResponse,
  type WireNode,
} from '../../src/xds/ads.js'
import { XDS_FLOW_CONTROL_WINDOW } from '../../src/xds/client.js'
import { decodeResource, type EncodedAny, jsonToStruct } from '../../src/xds/proto.js'
import { TYPE_URL } from '../../src/xds/snapshot.js'

/** The VirtualHost type (VHDS), as agreed for Loom's on-demand proxies. */
export const VHOST_TYPE = 'type.googleapis.com/envoy.config.route.v3.VirtualHost'

/** Bytes of responses this process received (every lean client's; what the deserializer saw). */
export const received = { bytes: 0 }

/**
 * The ADS method a lean client calls: its path and request serializer (the ADS service's), the reader of its
 * responses, and the last few responses this process read, with what was read of them. The control plane sends
 * the streams that are in the same state one message, byte for byte (a shared push), so 500 proxies of one
 * process would read the same envelope 500 times; each still gets the bytes off its own stream, and a response
 * equal to one read lately (compared in full, as its frames arrive: `H2Call`) is handed the same read-only result.
 * What a proxy of its own process does once, done once.
 */
interface Method {
  path: string
  serialize: (req: DiscoveryRequest | DeltaDiscoveryRequest) => Buffer
  read: (b: Buffer) => unknown
  recent: RecentMessages
}
const methods: Partial<Record<'sotw' | 'delta', Method>> = {}

function methodOf(protocol: 'sotw' | 'delta'): Method {
  const have = methods[protocol]
  if (have !== undefined) return have
  const def = adsService().service[protocol === 'delta' ? 'DeltaAggregatedResources' : 'StreamAggregatedResources']!
  const m: Method = {
    path: def.path,
    serialize: (req) => def.requestSerialize(req) as Buffer,
    read: protocol === 'delta' ? deltaResponse : sotwResponse,
    recent: new RecentMessages(),
  }
  methods[protocol] = m
  return m
}

// ---- a few fields of the protobuf wire format ----

type Visit = (field: number, wire: number, varint: number, start: number, end: number) => boolean | undefined

/** Calls `visit` for each top-level field of a message (stops when it returns false). */
function scan(b: Uint8Array, visit: Visit): void {
  let p = 0
  const n = b.length
  while (p < n) {
    let key = 0
    let mul = 1
    let byte: number
    do {
      byte = b[p++]!
      key += (byte & 0x7f) * mul
      mul *= 128
    } while (byte & 0x80)
    const field = Math.floor(key / 8)
    const wire = key % 8
    let v = 0
    let start = p
    if (wire === 0) {
      mul = 1
      do {
        byte = b[p++]!
        v += (byte & 0x7f) * mul
        mul *= 128
      } while (byte & 0x80)
    } else if (wire === 2) {
      let len = 0
      mul = 1
      do {
        byte = b[p++]!
        len += (byte & 0x7f) * mul
        mul *= 128
      } while (byte & 0x80)
      start = p
      p += len
    } else if (wire === 1) p += 8
    else if (wire === 5) p += 4
    else throw new Error(`unsupported wire type ${wire}`)
    if (p > n) throw new Error('truncated message')
    if (visit(field, wire, v, start, p) === false) return
  }
}

const buf = (b: Uint8Array): Buffer => (Buffer.isBuffer(b) ? b : Buffer.from(b.buffer, b.byteOffset, b.byteLength))

/** UTF-8 text at [s, e) of `b`, without Buffer#toString's dispatch (a call per name and version). */
const str = (b: Uint8Array, s: number, e: number): string =>
  (buf(b) as Buffer & { utf8Slice(s: number, e: number): string }).utf8Slice(s, e)

/** A google.protobuf.Any: type_url (1), value (2, a view into `b`). */
function anyAt(b: Uint8Array, s: number, e: number): EncodedAny {
  const m = buf(b).subarray(s, e)
  let type_url = ''
  let value: Buffer = Buffer.alloc(0)
  scan(m, (f, w, _v, s2, e2) => {
    if (f === 1 && w === 2) type_url = str(m, s2, e2)
    else if (f === 2 && w === 2) value = m.subarray(s2, e2)
    return true
  })
  return { type_url, value }
}

/** A varint at `p` of `b`: [value, next position] (lengths and keys: well under 2^53). */
function varint(b: Buffer, p: number): number {
  let v = 0
  let mul = 1
  let byte: number
  do {
    byte = b[p++]!
    v += (byte & 0x7f) * mul
    mul *= 128
  } while (byte & 0x80)
  at = p
  return v
}
/** where `varint` stopped */
let at = 0

/** Skips a field of wire type `wire` at `p`; returns the next position. */
function skip(b: Buffer, p: number, wire: number): number {
  if (wire === 0) {
    varint(b, p)
    return at
  }
  if (wire === 2) {
    const len = varint(b, p)
    return at + len
  }
  if (wire === 1) return p + 8
  if (wire === 5) return p + 4
  throw new Error(`unsupported wire type ${wire}`)
}

/** The field `field()` read last: its number, wire type and, when length-delimited, its value's [start, end). */
let fNum = 0
let fWire = 0
let fStart = 0
let fEnd = 0

/** Reads the field at `p` of a message ending at `end` into fNum..fEnd; returns the position after it. */
function field(b: Buffer, p: number, end: number): number {
  const key = varint(b, p)
  fNum = Math.floor(key / 8)
  fWire = key % 8
  if (fWire !== 2) return skip(b, at, fWire)
  const len = varint(b, at)
  fStart = at
  fEnd = at + len
  if (fEnd > end) throw new Error('truncated message')
  return fEnd
}

/**
 * Names and versions, one string each for all the proxies of this process: 500 proxies holding the same 3000
 * names and versions would otherwise keep 3 million strings alive, and the collector's work over them (not any
 * proxy's) would set the pace. A proxy of its own process holds its own copy once; this is that, shared.
 */
const strings = new Map<string, string>()
function intern(x: string): string {
  const have = strings.get(x)
  if (have !== undefined) return have
  strings.set(x, x)
  return x
}

/** Whether [s, e) of `b` holds the bytes of `x` (short: a loop beats Buffer#compare's call). */
function sameBytes(b: Buffer, s: number, e: number, x: Buffer): boolean {
  if (e - s !== x.length) return false
  for (let i = 0; i < x.length; i++) if (b[s + i] !== x[i]) return false
  return true
}

/** the type URL strings seen (a response's resources all have the same one: decoded once) */
let lastTypeBytes: Buffer | null = null
let lastType = ''

/**
 * envoy.service.discovery.v3.DeltaDiscoveryResponse, the fields a client reads, without closures or copies: each
 * resource's name and version as strings, its Any value a view into the message.
 */
export function deltaResponse(input: Uint8Array): DeltaDiscoveryResponse {
  const b = buf(input)
  const out = {
    system_version_info: '',
    resources: [] as NonNullable<DeltaDiscoveryResponse['resources']>,
    type_url: '',
    removed_resources: [] as string[],
    nonce: '',
  }
  for (let p = 0; p < b.length; ) {
    p = field(b, p, b.length)
    if (fWire !== 2) continue
    if (fNum === 1) out.system_version_info = str(b, fStart, fEnd)
    else if (fNum === 4) out.type_url = str(b, fStart, fEnd)
    else if (fNum === 5) out.nonce = str(b, fStart, fEnd)
    else if (fNum === 6) out.removed_resources.push(str(b, fStart, fEnd))
    else if (fNum === 2) out.resources.push(resourceAt(b, fStart, fEnd))
  }
  return out as DeltaDiscoveryResponse
}

/** envoy.service.discovery.v3.Resource at [s, e) of `b`. */
function resourceAt(b: Buffer, s: number, e: number): NonNullable<DeltaDiscoveryResponse['resources']>[number] {
  let name = ''
  let version = ''
  let aliases: string[] | undefined
  let resource: EncodedAny | undefined
  for (let p = s; p < e; ) {
    p = field(b, p, e)
    if (fWire !== 2) continue
    if (fNum === 3) name = intern(str(b, fStart, fEnd))
    else if (fNum === 1) version = intern(str(b, fStart, fEnd))
    else if (fNum === 4) (aliases ??= []).push(str(b, fStart, fEnd))
    else if (fNum === 2) resource = anyIn(b, fStart, fEnd)
  }
  return (aliases === undefined ? { name, version, resource } : { name, version, resource, aliases }) as NonNullable<
    DeltaDiscoveryResponse['resources']
  >[number]
}

/** google.protobuf.Any at [s, e) of `b`: its type URL (decoded once per distinct one) and a view of its value. */
function anyIn(b: Buffer, s: number, e: number): EncodedAny {
  let type_url = ''
  let vs = 0
  let ve = 0
  for (let p = s; p < e; ) {
    p = field(b, p, e)
    if (fWire !== 2) continue
    if (fNum === 1) {
      if (lastTypeBytes !== null && sameBytes(b, fStart, fEnd, lastTypeBytes)) type_url = lastType
      else {
        type_url = str(b, fStart, fEnd)
        lastTypeBytes = Buffer.from(b.subarray(fStart, fEnd))
        lastType = type_url
      }
    } else if (fNum === 2) {
      vs = fStart
      ve = fEnd
    }
  }
  return new LazyAny(type_url, b, vs, ve)
}

/**
 * An Any whose value is a view made when read: most resources (load assignments, a full-visibility proxy's virtual
 * hosts) are never opened, and a Buffer view is dearer to make than this object.
 */
class LazyAny implements EncodedAny {
  /** a Cluster's name and EDS name, read once for every proxy handed this resource */
  cluster?: { name: string; eds?: string }
  constructor(
    readonly type_url: string,
    private readonly b: Buffer,
    private readonly s: number,
    private readonly e: number,
  ) {}
  get value(): Buffer {
    return this.b.subarray(this.s, this.e)
  }
}

/** envoy.service.discovery.v3.DiscoveryResponse, the fields a client reads. */
export function sotwResponse(b: Uint8Array): DiscoveryResponse {
  const out = { version_info: '', resources: [] as EncodedAny[], type_url: '', nonce: '' }
  scan(b, (f, w, _v, s, e) => {
    if (w !== 2) return true
    if (f === 1) out.version_info = str(b, s, e)
    else if (f === 2) out.resources.push(anyAt(b, s, e))
    else if (f === 4) out.type_url = str(b, s, e)
    else if (f === 5) out.nonce = str(b, s, e)
    return true
  })
  return out as unknown as DiscoveryResponse
}

/** Field 1 (a string) of a message: the name of a Listener, Cluster, RouteConfiguration, VirtualHost, or the
 * cluster_name of a ClusterLoadAssignment. */
export function nameOf(value: Uint8Array): string {
  let name = ''
  scan(value, (f, w, _v, s, e) => {
    if (f !== 1 || w !== 2) return true
    name = str(value, s, e)
    return false
  })
  if (name === '') throw new Error('resource without a name')
  return name
}

/** A Cluster's name and, when it takes endpoints from EDS, the name its ClusterLoadAssignment goes by. */
export function clusterOf(value: Uint8Array): { name: string; eds?: string } {
  let name = ''
  let type = 0
  let edsConfig = false
  let service = ''
  scan(value, (f, w, v, s, e) => {
    if (f === 1 && w === 2) name = str(value, s, e)
    else if (f === 2 && w === 0) type = v
    else if (f === 3 && w === 2) {
      edsConfig = true
      scan(value.subarray(s, e), (f2, w2, _v2, s2, e2) => {
        if (f2 === 2 && w2 === 2) service = str(value, s + s2, s + e2)
        return true
      })
    }
    return true
  })
  if (name === '') throw new Error('cluster without a name')
  // discovery type EDS is 3
  return type === 3 || edsConfig ? { name, eds: service || name } : { name }
}

/** RDS names a decoded listener references (HCM `rds.route_config_name`, wherever it sits). */
export function routeNames(value: unknown, out: Set<string>): void {
  if (Array.isArray(value)) {
    for (const v of value) routeNames(v, out)
  } else if (value !== null && typeof value === 'object') {
    for (const [k, v] of Object.entries(value)) {
      if (k === 'route_config_name' && typeof v === 'string') out.add(v)
      else routeNames(v, out)
    }
  }
}

/** Clusters a decoded VirtualHost routes to (`cluster`, `weighted_clusters`). */
export function vhostClusters(value: unknown, out: Set<string>): void {
  if (Array.isArray(value)) {
    for (const v of value) vhostClusters(v, out)
  } else if (value !== null && typeof value === 'object') {
    for (const [k, v] of Object.entries(value)) {
      if (k === 'cluster' && typeof v === 'string') out.add(v)
      else if (k === 'weighted_clusters' && v !== null && typeof v === 'object') {
        for (const c of (v as { clusters?: { name?: string }[] }).clusters ?? []) if (c.name) out.add(c.name)
      } else vhostClusters(v, out)
    }
  }
}

function isSubset(a: Set<string>, b: Set<string>): boolean {
  for (const x of a) if (!b.has(x)) return false
  return true
}

/**
 * A virtual host's name and the clusters it routes to, by its bytes: each on-demand proxy's messages are its own,
 * but the virtual hosts in them are the same for the proxies calling that host (about 10 here), and the process
 * decodes each content once. The key is the bytes themselves, so only equal content is shared.
 */
const vhostReads = new Map<string, { name: string; clusters: string[] }>()
const VHOST_READS_MAX = 20_000

export function vhostRead(bytes: Uint8Array, read: () => { name: string; clusters: string[] }) {
  const key = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('latin1')
  let r = vhostReads.get(key)
  if (r === undefined) {
    if (vhostReads.size >= VHOST_READS_MAX) vhostReads.clear()
    vhostReads.set(key, (r = read()))
  }
  return r
}

/** a listener's name and the route configurations it names, by the resource object read (never changed) */
const listenerReads = new WeakMap<object, { name: string; routes: string[] }>()

/** Whether a lean client opens resources of the type (delta: the envelope has the names of the rest). */
function opens(typeUrl: string, opts: LeanOptions): boolean {
  if (typeUrl === TYPE_URL.cluster || typeUrl === TYPE_URL.listener) return true
  return typeUrl === VHOST_TYPE && (opts.vhostAliases?.length ?? 0) > 0
}

// ---- the client ----

export interface LeanNode {
  id: string
  cluster: string
  metadata: Record<string, unknown>
}

export interface LeanOptions {
  server: string
  node: LeanNode
  protocol: 'sotw' | 'delta'
  /** VirtualHost aliases to ask for (on demand) once the route configuration arrived */
  vhostAliases?: readonly string[]
  /** every virtual host: VirtualHost subscribed as a wildcard */
  vhdsWildcard?: boolean
  /** a response of the type arrived (before anything of it is read) */
  onReceive?: (typeUrl: string) => void
  /** a response was handled and ACKed (or NACKed: ok false) */
  onResponse?: (typeUrl: string, version: string, ok: boolean, error?: string) => void
}

interface Sub {
  wildcard: boolean
  names: Set<string>
  /** delta: what the server knows of the subscription on this stream */
  streamNames: Set<string>
  streamWildcard: boolean
  requested: boolean
  version: string
  nonce: string
}

export class LeanClient {
  /** per type: name → version held ('' over SotW) */
  readonly held = new Map<string, Map<string, string>>()
  /** names the server answered as absent (delta `removed_resources` for a name never held: aliases not found) */
  readonly absent = new Set<string>()
  /** EDS cluster → the name of its ClusterLoadAssignment */
  readonly edsOf = new Map<string, string>()
  /** VirtualHost → the clusters it routes to */
  readonly vhostRefs = new Map<string, string[]>()
  connections = 0
  private readonly subs = new Map<string, Sub>()
  private readonly session: H2Session
  private call?: H2Call
  private nodeSent = false
  private closed = false
  private retry?: NodeJS.Timeout
  private aliasesAsked = false

  constructor(private readonly opts: LeanOptions) {
    // a connection of its own, as a proxy has, advertising the window a Loom proxy (and Envoy) advertises
    this.session = new H2Session(opts.server, XDS_FLOW_CONTROL_WINDOW)
    for (const t of [TYPE_URL.cluster, TYPE_URL.listener]) this.sub(t).wildcard = true
    if (opts.vhdsWildcard) this.sub(VHOST_TYPE).wildcard = true
  }

  get connected(): boolean {
    return this.call !== undefined
  }

  start(): void {
    this.connect()
  }

  close(): void {
    this.closed = true
    clearTimeout(this.retry)
    const c = this.call
    this.call = undefined
    c?.cancel()
    this.session.close()
  }

  count(typeUrl: string): number {
    return this.held.get(typeUrl)?.size ?? 0
  }

  private sub(typeUrl: string): Sub {
    let s = this.subs.get(typeUrl)
    if (s === undefined) {
      s = {
        wildcard: false,
        names: new Set(),
        streamNames: new Set(),
        streamWildcard: false,
        requested: false,
        version: '',
        nonce: '',
      }
      this.subs.set(typeUrl, s)
    }
    return s
  }

  private heldOf(typeUrl: string): Map<string, string> {
    let m = this.held.get(typeUrl)
    if (m === undefined) {
      m = new Map()
      this.held.set(typeUrl, m)
    }
    return m
  }

  private connect(): void {
    if (this.closed) return
    const delta = this.opts.protocol === 'delta'
    const method = methodOf(this.opts.protocol)
    this.connections++
    this.nodeSent = false
    for (const s of this.subs.values()) {
      s.requested = false
      s.streamNames = new Set()
      s.streamWildcard = false
      s.nonce = ''
    }
    const call: H2Call = new H2Call(this.session, method.path, method.recent, method.read, received, {
      message: (resp) => {
        if (this.call !== call) return
        const r = resp as DiscoveryResponse | DeltaDiscoveryResponse
        try {
          if (delta) this.onDelta(r as DeltaDiscoveryResponse)
          else this.onSotw(r as DiscoveryResponse)
        } catch (e) {
          this.opts.onResponse?.(r.type_url, '', false, (e as Error).message)
        }
      },
      end: () => {
        if (this.call === call) this.call = undefined
        if (this.closed) return
        this.retry = setTimeout(() => this.connect(), 500 + Math.random() * 500)
      },
    })
    this.call = call
    for (const t of [TYPE_URL.cluster, TYPE_URL.listener, TYPE_URL.endpoint, TYPE_URL.route, VHOST_TYPE]) {
      const s = this.subs.get(t)
      if (s && (s.wildcard || s.names.size > 0)) this.request(t)
    }
  }

  private wireNode(): WireNode | undefined {
    if (this.nodeSent) return undefined
    this.nodeSent = true
    const n = this.opts.node
    return {
      id: n.id,
      cluster: n.cluster,
      metadata: jsonToStruct(n.metadata),
      user_agent_name: 'loom',
      user_agent_version: 'bench',
      client_features: [],
    }
  }

  private write(req: DiscoveryRequest | DeltaDiscoveryRequest): void {
    if (this.call === undefined) return
    const node = this.wireNode()
    if (node) req.node = node
    this.call.write(methodOf(this.opts.protocol).serialize(req))
  }

  /** Sends the subscription of a type (SotW: all of it with the last version and nonce; delta: what changed). */
  private request(typeUrl: string, nack?: string): void {
    if (this.call === undefined) return
    const s = this.sub(typeUrl)
    if (this.opts.protocol === 'sotw') {
      s.requested = true
      const req: DiscoveryRequest = {
        version_info: s.version,
        resource_names: s.wildcard ? [] : [...s.names],
        type_url: typeUrl,
        response_nonce: s.nonce,
      }
      if (nack !== undefined) req.error_detail = { code: grpc.status.INVALID_ARGUMENT, message: nack }
      this.write(req)
      return
    }
    const sub: string[] = []
    const unsub: string[] = []
    if (s.wildcard && !s.streamWildcard) sub.push('*')
    for (const n of s.names) if (!s.streamNames.has(n)) sub.push(n)
    for (const n of s.streamNames) if (!s.names.has(n)) unsub.push(n)
    const initial = !s.requested
    if (!initial && sub.length === 0 && unsub.length === 0) return
    s.requested = true
    s.streamWildcard = s.wildcard
    s.streamNames = new Set(s.names)
    const req: DeltaDiscoveryRequest = {
      type_url: typeUrl,
      resource_names_subscribe: sub,
      resource_names_unsubscribe: unsub,
    }
    if (initial) {
      const held = this.held.get(typeUrl)
      if (held !== undefined && held.size > 0) req.initial_resource_versions = Object.fromEntries(held)
    }
    this.write(req)
  }

  private subscribe(typeUrl: string, names: Iterable<string>): void {
    const s = this.sub(typeUrl)
    const next = new Set(names)
    if (s.requested && next.size === s.names.size && isSubset(next, s.names)) return
    s.names = next
    // what is no longer subscribed is no longer held
    const held = this.held.get(typeUrl)
    if (held) for (const n of [...held.keys()]) if (!next.has(n)) held.delete(n)
    this.request(typeUrl)
  }

  /** Reads what a resource of the type says about further subscriptions; returns its name. */
  private read(typeUrl: string, any: EncodedAny, routes: Set<string>): string {
    if (any.type_url !== typeUrl) throw new Error(`resource of type ${any.type_url} in a ${typeUrl} response`)
    if (typeUrl === TYPE_URL.cluster) {
      const c = any instanceof LazyAny ? (any.cluster ??= clusterOf(any.value)) : clusterOf(any.value as Uint8Array)
      if (c.eds !== undefined) this.edsOf.set(c.name, c.eds)
      else this.edsOf.delete(c.name)
      return c.name
    }
    if (typeUrl === TYPE_URL.listener) {
      // alike messages are read once and hand every client the same resource objects: their listener too
      let read = listenerReads.get(any)
      if (read === undefined) {
        const l = decodeResource(any, { withType: false })
        const names = new Set<string>()
        routeNames(l, names)
        read = { name: l.name as string, routes: [...names] }
        listenerReads.set(any, read)
      }
      for (const r of read.routes) routes.add(r)
      return read.name
    }
    // the clusters a virtual host routes to matter on demand only (a full-visibility proxy holds every cluster)
    if (typeUrl === VHOST_TYPE && (this.opts.vhostAliases?.length ?? 0) > 0) {
      const read = vhostRead(any.value as Uint8Array, () => {
        const v = decodeResource(any, { withType: false })
        const out = new Set<string>()
        vhostClusters(v, out)
        return { name: v.name as string, clusters: [...out] }
      })
      this.vhostRefs.set(read.name, read.clusters)
      return read.name
    }
    return nameOf(any.value as Uint8Array)
  }

  private after(typeUrl: string, routes: Set<string> | null): void {
    if (typeUrl === TYPE_URL.listener && routes !== null) this.subscribe(TYPE_URL.route, [...routes].sort())
    if (typeUrl === TYPE_URL.cluster) {
      const eds = new Set<string>()
      for (const n of this.heldOf(TYPE_URL.cluster).keys()) {
        const e = this.edsOf.get(n)
        if (e !== undefined) eds.add(e)
      }
      this.subscribe(TYPE_URL.endpoint, eds)
    }
    if (typeUrl === TYPE_URL.route && !this.aliasesAsked && (this.opts.vhostAliases?.length ?? 0) > 0) {
      // on demand: the proxy asks for the hosts it calls once it has the route configuration
      this.aliasesAsked = true
      this.subscribe(VHOST_TYPE, this.opts.vhostAliases!)
    }
  }

  private onSotw(resp: DiscoveryResponse): void {
    const t = resp.type_url
    this.opts.onReceive?.(t)
    const s = this.sub(t)
    s.nonce = resp.nonce
    const routes = new Set<string>()
    const names = new Map<string, string>()
    let error: string | undefined
    try {
      for (const any of resp.resources ?? []) {
        const n = this.read(t, any, routes)
        if (names.has(n)) throw new Error(`duplicate resource ${n}`)
        names.set(n, '')
      }
    } catch (e) {
      error = (e as Error).message
    }
    if (error === undefined) {
      s.version = resp.version_info
      this.held.set(t, names)
      if (t === TYPE_URL.cluster) for (const n of [...this.edsOf.keys()]) if (!names.has(n)) this.edsOf.delete(n)
    }
    this.request(t, error)
    this.opts.onResponse?.(t, resp.version_info, error === undefined, error)
    if (error === undefined) this.after(t, t === TYPE_URL.listener ? routes : null)
  }

  private onDelta(resp: DeltaDiscoveryResponse): void {
    const t = resp.type_url
    this.opts.onReceive?.(t)
    const s = this.sub(t)
    s.nonce = resp.nonce
    const routes = new Set<string>()
    let error: string | undefined
    const got = resp.resources ?? []
    // the envelope names the resource: only what the client reads further is opened
    const open = opens(t, this.opts)
    try {
      for (const r of got) {
        if (!r.resource) throw new Error(`resource ${r.name} without a body`)
        if (r.resource.type_url !== t) throw new Error(`resource of type ${r.resource.type_url} in a ${t} response`)
        if (open) {
          const n = this.read(t, r.resource, routes)
          if (n !== r.name) throw new Error(`resource named ${r.name} holds ${n}`)
        }
      }
    } catch (e) {
      error = (e as Error).message
    }
    const held = this.heldOf(t)
    if (error === undefined) {
      s.version = resp.system_version_info
      for (const n of resp.removed_resources ?? []) {
        if (!held.delete(n)) this.absent.add(n)
        if (t === TYPE_URL.cluster) this.edsOf.delete(n)
        if (t === VHOST_TYPE) this.vhostRefs.delete(n)
      }
      for (const r of got) held.set(r.name, r.version)
      if (this.absent.size > 0) for (const r of got) this.absent.delete(r.name)
      if (t === VHOST_TYPE) for (const r of got) for (const a of r.aliases ?? []) this.absent.delete(a)
    }
    const ack: DeltaDiscoveryRequest = {
      type_url: t,
      resource_names_subscribe: [],
      resource_names_unsubscribe: [],
      response_nonce: resp.nonce,
    }
    if (error !== undefined) ack.error_detail = { code: grpc.status.INVALID_ARGUMENT, message: error }
    this.write(ack)
    this.opts.onResponse?.(t, resp.system_version_info, error === undefined, error)
    if (error === undefined) {
      // the listener set is full state: its routes are those of every listener held, read again only on change
      this.after(t, t === TYPE_URL.listener && got.length > 0 ? this.allRoutes(routes, got) : null)
    }
  }

  /** delta LDS: the RDS names of the listeners held (those not in this response keep what they named). */
  private listenerRoutes = new Map<string, string[]>()
  private allRoutes(routes: Set<string>, got: readonly { name: string }[]): Set<string> {
    // a response with several listeners merges their names; attribute them to each (they are few)
    for (const r of got) this.listenerRoutes.set(r.name, [...routes])
    const held = this.heldOf(TYPE_URL.listener)
    for (const n of [...this.listenerRoutes.keys()]) if (!held.has(n)) this.listenerRoutes.delete(n)
    const out = new Set<string>()
    for (const rs of this.listenerRoutes.values()) for (const r of rs) out.add(r)
    return out
  }
}
