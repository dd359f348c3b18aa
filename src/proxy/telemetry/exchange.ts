/**
 * Istio's HTTP metadata exchange: a proxy tells its peer which workload it is in two headers,
 *
 * - `x-envoy-peer-metadata`: base64 of a serialized `google.protobuf.Struct` holding the node metadata Istio
 *   exchanges (`NAME`, `NAMESPACE`, `WORKLOAD_NAME`, `CLUSTER_ID`, `LABELS` as a nested Struct), Istio's encoding, so
 *   Loom and Envoy sidecars read each other;
 * - `x-envoy-peer-metadata-id`: the node id.
 *
 * The outbound side (a sidecar's outbound, a gateway) sets them on requests; the inbound side reads and removes them
 * and sets its own on the response, which the outbound side reads and removes. A proxy encodes its own metadata once
 * per config, and decodes a peer's once per distinct header value (a bounded cache); a request pays a header lookup
 * and a string comparison with the last value seen (a map lookup when the peer changed).
 *
 * What the headers say is a workload's claim about itself, used for labels only: a principal (`source_principal`,
 * `destination_principal`) always comes from a verified certificate, never from these headers.
 *
 * The Struct codec here covers what Istio puts in (strings, nested Structs) and skips what it does not use (numbers,
 * booleans, lists are decoded and ignored), without a protobuf library.
 */
import { Buffer } from 'node:buffer'
import { type LocalWorkload, podOfNodeId, type WorkloadMetadata, workloadMetadata } from './workload.js'

export const PEER_METADATA_HEADER = 'x-envoy-peer-metadata'
export const PEER_METADATA_ID_HEADER = 'x-envoy-peer-metadata-id'

type StructValue = string | number | boolean | null | StructObject | StructValue[]
export interface StructObject {
  [key: string]: StructValue
}

// === encoding ===

function varint(out: number[], n: number): void {
  while (n > 0x7f) {
    out.push((n & 0x7f) | 0x80)
    n >>>= 7
  }
  out.push(n)
}

function bytesField(out: number[], tag: number, bytes: Uint8Array | number[]): void {
  out.push(tag)
  varint(out, bytes.length)
  for (const b of bytes) out.push(b)
}

function encodeValue(v: StructValue): number[] {
  const out: number[] = []
  if (typeof v === 'string') bytesField(out, 0x1a, Buffer.from(v, 'utf8'))
  else if (typeof v === 'boolean') out.push(0x20, v ? 1 : 0)
  else if (typeof v === 'number') {
    const b = Buffer.alloc(8)
    b.writeDoubleLE(v)
    out.push(0x11, ...b)
  } else if (v === null) out.push(0x08, 0)
  else if (Array.isArray(v)) {
    const list: number[] = []
    for (const x of v) bytesField(list, 0x0a, encodeValue(x))
    bytesField(out, 0x32, list)
  } else bytesField(out, 0x2a, encodeStruct(v))
  return out
}

/** A `google.protobuf.Struct` in its wire form (fields in key order, as protobuf serializes a map deterministically). */
export function encodeStruct(o: StructObject): number[] {
  const out: number[] = []
  for (const key of Object.keys(o).sort()) {
    const entry: number[] = []
    bytesField(entry, 0x0a, Buffer.from(key, 'utf8'))
    bytesField(entry, 0x12, encodeValue(o[key]!))
    bytesField(out, 0x0a, entry)
  }
  return out
}

// === decoding ===

/** A protobuf wire-format reader over `buf[start, end)` (the Struct codec's, and the TCP exchange's Any). */
export class Reader {
  pos: number
  constructor(
    readonly buf: Buffer,
    start: number,
    readonly end: number,
  ) {
    this.pos = start
  }
  varint(): number {
    let n = 0
    let shift = 0
    for (;;) {
      if (this.pos >= this.end || shift > 49) throw new Error('truncated varint')
      const b = this.buf[this.pos++]!
      n += (b & 0x7f) * 2 ** shift
      if (b < 0x80) return n
      shift += 7
    }
  }
  /** the bounds of a length-delimited field's bytes */
  sub(): [number, number] {
    const len = this.varint()
    const start = this.pos
    if (start + len > this.end) throw new Error('truncated field')
    this.pos += len
    return [start, start + len]
  }
  skip(wire: number): void {
    if (wire === 0) this.varint()
    else if (wire === 1) this.pos += 8
    else if (wire === 2) this.sub()
    else if (wire === 5) this.pos += 4
    else throw new Error(`wire type ${wire}`)
    if (this.pos > this.end) throw new Error('truncated field')
  }
}

function decodeValue(buf: Buffer, start: number, end: number): StructValue {
  const r = new Reader(buf, start, end)
  let v: StructValue = null
  while (r.pos < end) {
    const tag = r.varint()
    const field = Math.floor(tag / 8)
    const wire = tag & 7
    if (field === 3 && wire === 2) {
      const [s, e] = r.sub()
      v = buf.toString('utf8', s, e)
    } else if (field === 5 && wire === 2) {
      const [s, e] = r.sub()
      v = decodeStruct(buf, s, e)
    } else if (field === 6 && wire === 2) {
      const [s, e] = r.sub()
      const list: StructValue[] = []
      const lr = new Reader(buf, s, e)
      while (lr.pos < e) {
        const t = lr.varint()
        if (t === 0x0a) {
          const [a, b] = lr.sub()
          list.push(decodeValue(buf, a, b))
        } else lr.skip(t & 7)
      }
      v = list
    } else if (field === 2 && wire === 1) {
      if (r.pos + 8 > end) throw new Error('truncated double')
      v = buf.readDoubleLE(r.pos)
      r.pos += 8
    } else if (field === 4 && wire === 0) v = r.varint() !== 0
    else r.skip(wire)
  }
  return v
}

/** A serialized `google.protobuf.Struct` as a plain object; throws on bytes that are not one. */
export function decodeStruct(buf: Buffer, start = 0, end = buf.length): StructObject {
  const out: StructObject = {}
  const r = new Reader(buf, start, end)
  while (r.pos < end) {
    const tag = r.varint()
    if (tag !== 0x0a) {
      r.skip(tag & 7)
      continue
    }
    const [s, e] = r.sub()
    const er = new Reader(buf, s, e)
    let key = ''
    let value: StructValue = null
    while (er.pos < e) {
      const t = er.varint()
      if (t === 0x0a) {
        const [a, b] = er.sub()
        key = buf.toString('utf8', a, b)
      } else if (t === 0x12) {
        const [a, b] = er.sub()
        value = decodeValue(buf, a, b)
      } else er.skip(t & 7)
    }
    out[key] = value
  }
  return out
}

// === the exchange ===

/** The header values a proxy sends: computed once per config. */
export interface OwnPeerHeaders {
  readonly metadata: string
  readonly id: string
}

/** The node metadata Istio exchanges about the proxy's own workload (the HTTP header's Struct, the TCP prefix's). */
export function ownMetadataFields(w: LocalWorkload): StructObject {
  const m = w.meta
  return {
    NAME: m.pod,
    NAMESPACE: m.namespace,
    WORKLOAD_NAME: m.workload,
    CLUSTER_ID: m.cluster,
    LABELS: { ...m.labels },
  }
}

/** Istio's exchanged node metadata for the proxy's own workload, encoded. */
export function encodeOwnMetadata(w: LocalWorkload): OwnPeerHeaders {
  return { metadata: Buffer.from(encodeStruct(ownMetadataFields(w))).toString('base64'), id: w.node.id }
}

function s(v: StructValue | undefined): string | null {
  return typeof v === 'string' && v !== '' ? v : null
}

/** A peer's workload from its `x-envoy-peer-metadata` value (and `-id`); null when the value does not decode. */
export function decodePeerMetadata(value: string, id: string | undefined): WorkloadMetadata | null {
  let o: StructObject
  try {
    o = decodeStruct(Buffer.from(value, 'base64'))
  } catch {
    return null
  }
  const labels: Record<string, string> = {}
  const l = o.LABELS
  if (typeof l === 'object' && l !== null && !Array.isArray(l))
    for (const [k, v] of Object.entries(l)) if (typeof v === 'string') labels[k] = v
  const fromId = id === undefined ? null : podOfNodeId(id)
  return workloadMetadata({
    workload: s(o.WORKLOAD_NAME),
    namespace: s(o.NAMESPACE) ?? fromId?.namespace,
    pod: s(o.NAME) ?? fromId?.pod,
    cluster: s(o.CLUSTER_ID),
    labels,
  })
}

/** Distinct peer values kept decoded; past this the cache starts over (a mesh has far fewer workloads). */
const PEER_CACHE_MAX = 1024
const peers = new Map<string, WorkloadMetadata | null>()
/** the last value looked up and its peer: a run of requests from one peer compares the value, not hash it */
let lastValue: string | undefined
let lastPeer: WorkloadMetadata | null = null

/**
 * The peer a header value names, decoded once per distinct value: the same object for the same value, so what
 * is derived from a peer (a metric's labels) can be cached by it. Null when the value does not decode.
 */
export function peerFromHeader(value: string, id: string | undefined): WorkloadMetadata | null {
  if (value === lastValue) return lastPeer
  let p = peers.get(value)
  if (p === undefined) {
    if (peers.size >= PEER_CACHE_MAX) peers.clear()
    p = decodePeerMetadata(value, id)
    peers.set(value, p)
  }
  lastValue = value
  lastPeer = p
  return p
}
