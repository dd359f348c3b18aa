/**
 * Envoy v3 protobuf support for the xDS server and client: one protobufjs `Root` holding the Envoy protos Loom
 * uses (loaded lazily, once, from the `deps/` folders that `@grpc/grpc-js-xds` ships), and a reflective converter
 * between Loom's proto-JSON resources and protobuf bytes.
 *
 * Loom's proto-JSON form (the shape of Envoy's YAML): snake_case field names, durations as strings ("1.5s"),
 * wrapper types (UInt32Value, BoolValue...) as plain values, enums by name, `google.protobuf.Any` as
 * `{ "@type": "type.googleapis.com/...", ...fields }`, `google.protobuf.Struct` as plain JSON, int64 as numbers
 * (strings only past 2^53), bytes as base64. Unset and default-valued scalar fields are omitted.
 */
import { existsSync } from 'node:fs'
import { createRequire } from 'node:module'
import { dirname, isAbsolute, join } from 'node:path'
import type * as PB from 'protobufjs'
import {
  CA_PROTO,
  EXPLAIN_PROTO,
  ISTIO_STATS_PROTO,
  LOOM_PROTO,
  METADATA_EXCHANGE_PROTO,
  PEAK_EWMA_PROTO,
  SHARES_PROTO,
} from './loom-protos.js'

const require = createRequire(import.meta.url)

/** The .proto files loaded (their imports come along). */
export const PROTO_FILES = [
  'envoy/service/discovery/v3/ads.proto',
  'envoy/service/discovery/v3/discovery.proto',
  'envoy/config/listener/v3/listener.proto',
  'envoy/config/route/v3/route.proto',
  'envoy/config/cluster/v3/cluster.proto',
  'envoy/config/endpoint/v3/endpoint.proto',
  'envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.proto',
  'envoy/extensions/filters/network/tcp_proxy/v3/tcp_proxy.proto',
  'envoy/extensions/filters/http/router/v3/router.proto',
  'envoy/extensions/filters/http/fault/v3/fault.proto',
  'envoy/extensions/filters/http/local_ratelimit/v3/local_rate_limit.proto',
  'envoy/extensions/filters/http/cors/v3/cors.proto',
  'envoy/extensions/retry/host/previous_hosts/v3/previous_hosts.proto',
  'envoy/extensions/filters/http/rbac/v3/rbac.proto',
  'envoy/extensions/filters/network/rbac/v3/rbac.proto',
  'envoy/extensions/filters/http/jwt_authn/v3/config.proto',
  'envoy/extensions/filters/http/ext_authz/v3/ext_authz.proto',
  'envoy/extensions/filters/listener/tls_inspector/v3/tls_inspector.proto',
  'envoy/extensions/filters/listener/http_inspector/v3/http_inspector.proto',
  'envoy/extensions/transport_sockets/tls/v3/tls.proto',
  'envoy/extensions/transport_sockets/tls/v3/secret.proto',
  'envoy/extensions/transport_sockets/raw_buffer/v3/raw_buffer.proto',
  'envoy/extensions/upstreams/http/v3/http_protocol_options.proto',
  'envoy/extensions/access_loggers/stream/v3/stream.proto',
  'envoy/extensions/access_loggers/file/v3/file.proto',
  'envoy/config/trace/v3/opentelemetry.proto',
  'envoy/extensions/request_id/uuid/v3/uuid.proto',
  // what proxyless gRPC clients accept in Cluster.load_balancing_policy and aggregate clusters
  'envoy/extensions/load_balancing_policies/round_robin/v3/round_robin.proto',
  'envoy/extensions/load_balancing_policies/ring_hash/v3/ring_hash.proto',
  'envoy/extensions/load_balancing_policies/wrr_locality/v3/wrr_locality.proto',
  'envoy/extensions/load_balancing_policies/pick_first/v3/pick_first.proto',
  'envoy/extensions/load_balancing_policies/least_request/v3/least_request.proto',
  'envoy/extensions/clusters/aggregate/v3/cluster.proto',
  'xds/type/v3/typed_struct.proto',
  'udpa/type/v1/typed_struct.proto',
  'google/rpc/status.proto',
]

/** Include directories: the proto trees shipped by @grpc/grpc-js-xds, plus protobufjs's descriptor.proto. */
export function protoIncludeDirs(): string[] {
  const deps = join(dirname(require.resolve('@grpc/grpc-js-xds/package.json')), 'deps')
  return [
    ...['envoy-api', 'xds', 'googleapis', 'protoc-gen-validate'].map((d) => join(deps, d)),
    dirname(require.resolve('protobufjs/package.json')),
  ]
}

export interface ProtoLoadStats {
  /** wall time to parse and resolve the protos */
  ms: number
  /** growth of the resident set size while loading (after a GC when `--expose-gc` is on) */
  rssBytes: number
  /** growth of the V8 heap while loading */
  heapBytes: number
  /** .proto files read */
  files: number
}

let root: PB.Root | undefined
let loadStats: ProtoLoadStats | undefined
let pb: typeof PB

function lib(): typeof PB {
  pb ??= require('protobufjs') as typeof PB
  return pb
}

/** The shared Root, loaded on first use. */
export function protoRoot(): PB.Root {
  if (root) return root
  lib()
  const gc = (globalThis as { gc?: () => void }).gc
  gc?.()
  const rss0 = process.memoryUsage().rss
  const heap0 = process.memoryUsage().heapUsed
  const t0 = performance.now()
  const dirs = protoIncludeDirs()
  const r = new pb.Root()
  const files = new Set<string>()
  r.resolvePath = (_origin: string, target: string) => {
    if (isAbsolute(target)) return target
    for (const d of dirs) {
      const p = join(d, target)
      if (existsSync(p)) {
        files.add(p)
        return p
      }
    }
    throw new Error(`proto file not found in ${dirs.join(', ')}: ${target}`)
  }
  r.loadSync(PROTO_FILES, { keepCase: true })
  for (const text of [
    LOOM_PROTO,
    SHARES_PROTO,
    CA_PROTO,
    PEAK_EWMA_PROTO,
    ISTIO_STATS_PROTO,
    EXPLAIN_PROTO,
    METADATA_EXCHANGE_PROTO,
  ])
    pb.parse(text, r, { keepCase: true })
  r.resolveAll()
  const ms = performance.now() - t0
  gc?.()
  loadStats = {
    ms: Math.round(ms),
    rssBytes: process.memoryUsage().rss - rss0,
    heapBytes: process.memoryUsage().heapUsed - heap0,
    files: files.size,
  }
  root = r
  return r
}

/** How long loading the Root took and what it cost (undefined until loaded). */
export function protoLoadStats(): ProtoLoadStats | undefined {
  return loadStats
}

export class ProtoJsonError extends Error {
  constructor(
    readonly path: string,
    message: string,
  ) {
    super(`${path}: ${message}`)
    this.name = 'ProtoJsonError'
  }
}

export interface EncodedAny {
  type_url: string
  value: Buffer
}

const typeCache = new Map<string, PB.Type | null>()

/** The message type named by a type URL (`type.googleapis.com/envoy.config.cluster.v3.Cluster`) or a full name. */
export function lookupType(typeUrlOrName: string): PB.Type | undefined {
  let t = typeCache.get(typeUrlOrName)
  if (t === undefined) {
    const name = typeUrlOrName.slice(typeUrlOrName.lastIndexOf('/') + 1)
    const found = name ? protoRoot().lookup(name) : null
    t = found instanceof lib().Type ? found : null
    typeCache.set(typeUrlOrName, t)
  }
  return t ?? undefined
}

function typeFor(typeUrl: unknown, path: string): PB.Type {
  if (typeof typeUrl !== 'string' || !typeUrl) throw new ProtoJsonError(path, 'missing "@type"')
  const t = lookupType(typeUrl)
  if (!t) throw new ProtoJsonError(path, `unknown type ${typeUrl}`)
  return t
}

/**
 * Encodes a resource in proto-JSON form to an Any. Its type comes from its `@type` or, without one, from
 * `typeUrl`. Throws a ProtoJsonError naming the path of the first unknown field or bad value.
 */
export function encodeResource(json: object, typeUrl?: string): EncodedAny {
  const obj = json as Record<string, unknown>
  const url = (obj['@type'] as string | undefined) ?? typeUrl
  const type = typeFor(url, '$')
  return { type_url: url as string, value: encodeAs(type, obj, '$') }
}

/** Encodes proto-JSON as the given message type (an `@type` key at the top is ignored). */
export function encodeMessage(typeName: string, json: object): Buffer {
  return encodeAs(typeFor(typeName, '$'), json as Record<string, unknown>, '$')
}

function encodeAs(type: PB.Type, json: Record<string, unknown>, path: string): Buffer {
  const wkt = wktToProto(type)
  if (wkt && '@type' in json) {
    // the proto-JSON form of an Any holding a well-known type: { "@type": ..., "value": <its JSON> }
    return toBuffer(type.encode(wkt(json.value, `${path}.value`) as Record<string, unknown>).finish())
  }
  return toBuffer(type.encode(messageToProto(type, json, path, true)).finish())
}

/**
 * Decodes an Any (a resource as received) to proto-JSON form. With `withType` (the default), the result carries
 * the `@type` key, so `decodeResource(encodeResource(x))` gives back `x`.
 */
export function decodeResource(
  any: { type_url: string; value: Buffer | Uint8Array },
  opts: { withType?: boolean } = {},
): Record<string, unknown> {
  const out = anyToJson(any.type_url, any.value, '$')
  if (opts.withType === false) delete out['@type']
  return out
}

/** Decodes bytes of the given message type to proto-JSON form. */
export function decodeMessage(typeName: string, bytes: Uint8Array): Record<string, unknown> {
  const type = typeFor(typeName, '$')
  return messageToJson(type, type.decode(bytes) as unknown as Record<string, unknown>, '$') as Record<string, unknown>
}

function toBuffer(u: Uint8Array): Buffer {
  return Buffer.isBuffer(u) ? u : Buffer.from(u.buffer, u.byteOffset, u.byteLength)
}

// ---------------------------------------------------------------------------------------------------------------
// proto-JSON → protobufjs message objects (ready for Type.encode)

type ToProto = (json: unknown, path: string) => unknown

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && !(v instanceof Uint8Array)
}

function describe(v: unknown): string {
  if (v === null) return 'null'
  if (Array.isArray(v)) return 'an array'
  if (typeof v === 'string') return `"${v.length > 40 ? `${v.slice(0, 40)}...` : v}"`
  return typeof v === 'object' ? 'an object' : String(v)
}

/**
 * A type's well-known-type converter (null: none), found by the type object: protobufjs computes `fullName` on every
 * read, and encoding looks it up for every message.
 */
const wktOfType = new WeakMap<PB.Type, ToProto | null>()

function wktToProto(type: PB.Type): ToProto | null {
  let w = wktOfType.get(type)
  if (w === undefined) wktOfType.set(type, (w = WKT_TO_PROTO.get(type.fullName) ?? null))
  return w
}

function messageToProto(type: PB.Type, json: unknown, path: string, skipType = false): Record<string, unknown> {
  const wkt = wktToProto(type)
  if (wkt) return wkt(json, path) as Record<string, unknown>
  if (!isObject(json)) throw new ProtoJsonError(path, `expected an object (${type.name}), got ${describe(json)}`)
  const out: Record<string, unknown> = {}
  let oneofs: Map<string, string> | undefined
  for (const key of Object.keys(json)) {
    const value = json[key]
    if (value === undefined) continue
    if (key === '@type' && skipType) continue
    const field = Object.hasOwn(type.fields, key) ? type.fields[key] : undefined
    const fpath = `${path}.${key}`
    if (!field) throw new ProtoJsonError(fpath, `unknown field of ${type.fullName.slice(1)}`)
    if (value === null && (field.resolvedType as PB.Type | null)?.fullName !== '.google.protobuf.Value') continue
    if (field.partOf) {
      oneofs ??= new Map()
      const other = oneofs.get(field.partOf.name)
      if (other) throw new ProtoJsonError(fpath, `only one of ${other}, ${key} may be set (oneof ${field.partOf.name})`)
      oneofs.set(field.partOf.name, key)
    }
    out[key] = fieldToProto(field, value, fpath)
  }
  return out
}

function fieldToProto(field: PB.Field, value: unknown, path: string): unknown {
  if (field.map) {
    if (!isObject(value)) throw new ProtoJsonError(path, `expected an object (map), got ${describe(value)}`)
    const keyType = (field as unknown as PB.MapField).keyType
    const out: Record<string, unknown> = {}
    for (const k of Object.keys(value)) {
      if (keyType !== 'string') scalarToProto(keyType, k, `${path}[${k}]`)
      out[k] = singleToProto(field, value[k], `${path}.${k}`)
    }
    return out
  }
  if (field.repeated) {
    if (!Array.isArray(value)) throw new ProtoJsonError(path, `expected an array, got ${describe(value)}`)
    return value.map((v, i) => singleToProto(field, v, `${path}[${i}]`))
  }
  return singleToProto(field, value, path)
}

function singleToProto(field: PB.Field, value: unknown, path: string): unknown {
  const rt = field.resolvedType
  if (rt instanceof pb.Type) return messageToProto(rt, value, path)
  if (rt instanceof pb.Enum) return enumToProto(rt, value, path)
  return scalarToProto(field.type, value, path)
}

function enumToProto(e: PB.Enum, value: unknown, path: string): number {
  if (typeof value === 'string') {
    const n = e.values[value]
    if (n === undefined) throw new ProtoJsonError(path, `unknown value ${value} of enum ${e.name}`)
    return n
  }
  if (typeof value === 'number' && Number.isInteger(value)) return value
  throw new ProtoJsonError(path, `expected an enum name (${e.name}), got ${describe(value)}`)
}

const INT32: Record<string, [number, number]> = {
  int32: [-0x80000000, 0x7fffffff],
  sint32: [-0x80000000, 0x7fffffff],
  sfixed32: [-0x80000000, 0x7fffffff],
  uint32: [0, 0xffffffff],
  fixed32: [0, 0xffffffff],
}

function scalarToProto(type: string, value: unknown, path: string): unknown {
  switch (type) {
    case 'string':
      if (typeof value !== 'string') throw new ProtoJsonError(path, `expected a string, got ${describe(value)}`)
      return value
    case 'bool':
      if (typeof value !== 'boolean') throw new ProtoJsonError(path, `expected a boolean, got ${describe(value)}`)
      return value
    case 'double':
    case 'float':
      if (typeof value === 'number') return value
      if (value === 'NaN') return Number.NaN
      if (value === 'Infinity') return Number.POSITIVE_INFINITY
      if (value === '-Infinity') return Number.NEGATIVE_INFINITY
      if (typeof value === 'string' && value.trim() !== '' && Number.isFinite(Number(value))) return Number(value)
      throw new ProtoJsonError(path, `expected a number, got ${describe(value)}`)
    case 'bytes':
      if (value instanceof Uint8Array) return value
      if (typeof value === 'string' && /^[A-Za-z0-9+/_-]*={0,2}$/.test(value)) return Buffer.from(value, 'base64')
      throw new ProtoJsonError(path, `expected base64 bytes, got ${describe(value)}`)
    case 'int64':
    case 'sint64':
    case 'sfixed64':
    case 'uint64':
    case 'fixed64': {
      const unsigned = type === 'uint64' || type === 'fixed64'
      if (typeof value === 'number' && Number.isSafeInteger(value) && (!unsigned || value >= 0)) return value
      if (typeof value === 'string' && (unsigned ? /^\d+$/ : /^-?\d+$/).test(value)) {
        const b = BigInt(value)
        const ok = unsigned ? b < 2n ** 64n : b >= -(2n ** 63n) && b < 2n ** 63n
        if (ok) return value
      }
      throw new ProtoJsonError(path, `expected an integer (${type}), got ${describe(value)}`)
    }
    default: {
      const range = INT32[type]
      if (!range) throw new ProtoJsonError(path, `unsupported scalar type ${type}`)
      const n = typeof value === 'string' && /^-?\d+$/.test(value) ? Number(value) : value
      if (typeof n !== 'number' || !Number.isInteger(n) || n < range[0] || n > range[1]) {
        throw new ProtoJsonError(path, `expected an integer (${type}), got ${describe(value)}`)
      }
      return n
    }
  }
}

const DURATION_RE = /^(-)?(\d+)(?:\.(\d{1,9}))?s$/

function durationToProto(json: unknown, path: string): unknown {
  const m = typeof json === 'string' ? DURATION_RE.exec(json) : null
  if (!m) throw new ProtoJsonError(path, `expected a duration such as "1.5s", got ${describe(json)}`)
  const seconds = BigInt(m[2]!)
  if (seconds > 315576000000n) throw new ProtoJsonError(path, 'duration out of range')
  const nanos = m[3] ? Number(m[3].padEnd(9, '0')) : 0
  const sign = m[1] ? -1 : 1
  return { seconds: longValue(sign * Number(seconds)), nanos: sign * nanos || 0 }
}

function longValue(n: number): number | string {
  return Number.isSafeInteger(n) ? n : String(n)
}

const TIMESTAMP_RE = /^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)$/

function timestampToProto(json: unknown, path: string): unknown {
  const m = typeof json === 'string' ? TIMESTAMP_RE.exec(json) : null
  const ms = m ? Date.parse(`${m[1]}${m[3]}`) : Number.NaN
  if (!m || Number.isNaN(ms)) throw new ProtoJsonError(path, `expected an RFC 3339 timestamp, got ${describe(json)}`)
  return { seconds: Math.floor(ms / 1000), nanos: m[2] ? Number(m[2].padEnd(9, '0')) : 0 }
}

function wrapperToProto(inner: string): ToProto {
  return (json, path) => ({ value: scalarToProto(inner, json, path) })
}

function structToProto(json: unknown, path: string): unknown {
  if (!isObject(json)) throw new ProtoJsonError(path, `expected an object (Struct), got ${describe(json)}`)
  const fields: Record<string, unknown> = {}
  for (const k of Object.keys(json)) if (json[k] !== undefined) fields[k] = valueToProto(json[k], `${path}.${k}`)
  return { fields }
}

// protobufjs bundles google/protobuf/struct.proto with camelCase Value fields (nullValue, numberValue...), and both
// our Root and @grpc/proto-loader use that bundled copy.
function valueToProto(json: unknown, path: string): unknown {
  if (json === null) return { nullValue: 0 }
  switch (typeof json) {
    case 'number':
      return { numberValue: json }
    case 'string':
      return { stringValue: json }
    case 'boolean':
      return { boolValue: json }
    case 'object':
      return Array.isArray(json) ? { listValue: listToProto(json, path) } : { structValue: structToProto(json, path) }
    default:
      throw new ProtoJsonError(path, `not a JSON value: ${describe(json)}`)
  }
}

function listToProto(json: unknown, path: string): unknown {
  if (!Array.isArray(json)) throw new ProtoJsonError(path, `expected an array (ListValue), got ${describe(json)}`)
  return { values: json.map((v, i) => valueToProto(v, `${path}[${i}]`)) }
}

function anyToProto(json: unknown, path: string): unknown {
  if (!isObject(json)) throw new ProtoJsonError(path, `expected an object with "@type" (Any), got ${describe(json)}`)
  const url = json['@type']
  const type = typeFor(url, path)
  return { type_url: url, value: encodeAs(type, json, path) }
}

const WKT_TO_PROTO = new Map<string, ToProto>([
  ['.google.protobuf.Duration', durationToProto],
  ['.google.protobuf.Timestamp', timestampToProto],
  ['.google.protobuf.Any', anyToProto],
  ['.google.protobuf.Struct', structToProto],
  ['.google.protobuf.Value', valueToProto],
  ['.google.protobuf.ListValue', listToProto],
  ['.google.protobuf.DoubleValue', wrapperToProto('double')],
  ['.google.protobuf.FloatValue', wrapperToProto('float')],
  ['.google.protobuf.Int64Value', wrapperToProto('int64')],
  ['.google.protobuf.UInt64Value', wrapperToProto('uint64')],
  ['.google.protobuf.Int32Value', wrapperToProto('int32')],
  ['.google.protobuf.UInt32Value', wrapperToProto('uint32')],
  ['.google.protobuf.BoolValue', wrapperToProto('bool')],
  ['.google.protobuf.StringValue', wrapperToProto('string')],
  ['.google.protobuf.BytesValue', wrapperToProto('bytes')],
  [
    '.google.protobuf.FieldMask',
    (json, path) => {
      if (typeof json !== 'string')
        throw new ProtoJsonError(path, `expected a field mask string, got ${describe(json)}`)
      return { paths: json ? json.split(',') : [] }
    },
  ],
  [
    '.google.protobuf.Empty',
    (json, path) => {
      if (!isObject(json) || Object.keys(json).some((k) => k !== '@type')) {
        throw new ProtoJsonError(path, `expected {} (Empty), got ${describe(json)}`)
      }
      return {}
    },
  ],
])

// ---------------------------------------------------------------------------------------------------------------
// protobufjs decoded messages → proto-JSON

type ToJson = (msg: Record<string, unknown>, path: string) => unknown

function anyToJson(typeUrl: string, value: Uint8Array, path: string): Record<string, unknown> {
  const type = lookupType(typeUrl)
  if (!type) throw new ProtoJsonError(path, `unknown type ${typeUrl}`)
  const msg = type.decode(value) as unknown as Record<string, unknown>
  const wkt = wktToJson(type)
  if (wkt) return { '@type': typeUrl, value: wkt(msg, path) }
  return { '@type': typeUrl, ...(messageToJson(type, msg, path) as Record<string, unknown>) }
}

const wktJsonOfType = new WeakMap<PB.Type, ToJson | null>()

/** The decoding counterpart of `wktToProto`. */
function wktToJson(type: PB.Type): ToJson | null {
  let w = wktJsonOfType.get(type)
  if (w === undefined) wktJsonOfType.set(type, (w = WKT_TO_JSON.get(type.fullName) ?? null))
  return w
}

function messageToJson(type: PB.Type, msg: Record<string, unknown>, path: string): unknown {
  const wkt = wktToJson(type)
  if (wkt) return wkt(msg, path)
  const out: Record<string, unknown> = {}
  for (const field of type.fieldsArray) {
    const name = field.name
    if (!Object.hasOwn(msg, name)) continue
    const v = msg[name]
    if (v === null || v === undefined) continue
    if (field.map) {
      const keys = Object.keys(v as object)
      if (keys.length === 0) continue
      const m: Record<string, unknown> = {}
      for (const k of keys) m[k] = singleToJson(field, (v as Record<string, unknown>)[k], `${path}.${name}.${k}`)
      out[name] = m
    } else if (field.repeated) {
      const arr = v as unknown[]
      if (arr.length === 0) continue
      out[name] = arr.map((x, i) => singleToJson(field, x, `${path}.${name}[${i}]`))
    } else if (hasPresence(field) || !isDefault(v)) {
      out[name] = singleToJson(field, v, `${path}.${name}`)
    }
  }
  return out
}

function hasPresence(field: PB.Field): boolean {
  return field.resolvedType instanceof pb.Type || !!field.partOf || !!field.options?.proto3_optional
}

function isDefault(v: unknown): boolean {
  if (v === 0 || v === '' || v === false) return true
  if (v instanceof Uint8Array) return v.length === 0
  if (typeof v === 'object' && v !== null && 'low' in v && 'high' in v) {
    return (v as { low: number; high: number }).low === 0 && (v as { low: number; high: number }).high === 0
  }
  return false
}

function singleToJson(field: PB.Field, v: unknown, path: string): unknown {
  const rt = field.resolvedType
  if (rt instanceof pb.Type) return messageToJson(rt, v as Record<string, unknown>, path)
  if (rt instanceof pb.Enum) return rt.valuesById[v as number] ?? v
  return scalarToJson(field.type, v)
}

function scalarToJson(type: string, v: unknown): unknown {
  switch (type) {
    case 'bytes':
      return Buffer.from(v as Uint8Array).toString('base64')
    case 'float':
      return shortestFloat32(v as number)
    case 'double':
      return v
    case 'int64':
    case 'sint64':
    case 'sfixed64':
    case 'uint64':
    case 'fixed64':
      return longToJson(v)
    default:
      return v
  }
}

/** int64 → a number when it is exactly representable, else its decimal string. */
function longToJson(v: unknown): number | string {
  if (typeof v === 'number') return v
  const s = String(v)
  const n = Number(s)
  return Number.isSafeInteger(n) ? n : s
}

/** The shortest decimal that reads back as the same float32 (1.1 instead of 1.100000023841858). */
function shortestFloat32(v: number): number {
  if (!Number.isFinite(v)) return v
  for (let p = 1; p <= 9; p++) {
    const n = Number(v.toPrecision(p))
    if (Math.fround(n) === v) return n
  }
  return v
}

function durationToJson(msg: Record<string, unknown>): string {
  const seconds = BigInt(String(msg.seconds ?? 0))
  const nanos = Number(msg.nanos ?? 0)
  const negative = seconds < 0n || nanos < 0
  const abs = seconds < 0n ? -seconds : seconds
  const frac = nanos === 0 ? '' : `.${String(Math.abs(nanos)).padStart(9, '0').replace(/0+$/, '')}`
  return `${negative ? '-' : ''}${abs}${frac}s`
}

function timestampToJson(msg: Record<string, unknown>): string {
  const seconds = Number(String(msg.seconds ?? 0))
  const nanos = Number(msg.nanos ?? 0)
  const base = new Date(seconds * 1000).toISOString().slice(0, 19)
  const frac = nanos === 0 ? '' : `.${String(nanos).padStart(9, '0').replace(/0+$/, '')}`
  return `${base}${frac}Z`
}

function wrapperToJson(inner: string): ToJson {
  return (msg) => {
    const v = msg.value
    if (v === undefined || v === null) {
      return inner === 'string' || inner === 'bytes' ? '' : inner === 'bool' ? false : 0
    }
    return scalarToJson(inner, v)
  }
}

/** google.protobuf.Struct (as decoded by protobufjs or @grpc/proto-loader) → plain JSON. */
export function structToJson(msg: Record<string, unknown> | null | undefined): Record<string, unknown> {
  const out: Record<string, unknown> = {}
  const fields = (msg?.fields ?? {}) as Record<string, Record<string, unknown>>
  for (const k of Object.keys(fields)) out[k] = valueToJson(fields[k]!)
  return out
}

/** google.protobuf.Value → plain JSON (accepts camelCase and snake_case field names). */
export function valueToJson(msg: Record<string, unknown>): unknown {
  // own properties only: decoded protobufjs messages carry defaults (and a `kind` getter) on their prototype
  const get = (snake: string, camel: string) =>
    Object.hasOwn(msg, camel) && msg[camel] != null ? msg[camel] : Object.hasOwn(msg, snake) ? msg[snake] : undefined
  let v: unknown
  if ((v = get('struct_value', 'structValue')) != null) return structToJson(v as Record<string, unknown>)
  if ((v = get('list_value', 'listValue')) != null) return listToJson(v as Record<string, unknown>)
  if ((v = get('string_value', 'stringValue')) != null) return v
  if ((v = get('number_value', 'numberValue')) != null) return v
  if ((v = get('bool_value', 'boolValue')) != null) return v
  return null
}

function listToJson(msg: Record<string, unknown>): unknown[] {
  return ((msg?.values ?? []) as Record<string, unknown>[]).map(valueToJson)
}

/** Plain JSON → google.protobuf.Struct in protobufjs object form (for @grpc/proto-loader messages). */
export function jsonToStruct(json: Record<string, unknown>): Record<string, unknown> {
  return structToProto(json, '$') as Record<string, unknown>
}

const WKT_TO_JSON = new Map<string, ToJson>([
  ['.google.protobuf.Duration', durationToJson],
  ['.google.protobuf.Timestamp', timestampToJson],
  [
    '.google.protobuf.Any',
    (msg, path) => anyToJson(String(msg.type_url ?? ''), (msg.value as Uint8Array) ?? new Uint8Array(), path),
  ],
  ['.google.protobuf.Struct', (msg) => structToJson(msg)],
  ['.google.protobuf.Value', (msg) => valueToJson(msg)],
  ['.google.protobuf.ListValue', (msg) => listToJson(msg)],
  ['.google.protobuf.DoubleValue', wrapperToJson('double')],
  ['.google.protobuf.FloatValue', wrapperToJson('float')],
  ['.google.protobuf.Int64Value', wrapperToJson('int64')],
  ['.google.protobuf.UInt64Value', wrapperToJson('uint64')],
  ['.google.protobuf.Int32Value', wrapperToJson('int32')],
  ['.google.protobuf.UInt32Value', wrapperToJson('uint32')],
  ['.google.protobuf.BoolValue', wrapperToJson('bool')],
  ['.google.protobuf.StringValue', wrapperToJson('string')],
  ['.google.protobuf.BytesValue', wrapperToJson('bytes')],
  ['.google.protobuf.FieldMask', (msg) => ((msg.paths ?? []) as string[]).join(',')],
  ['.google.protobuf.Empty', () => ({})],
])
