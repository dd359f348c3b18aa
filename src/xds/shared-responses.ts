/**
 * Responses encoded once for every stream that sends them. Proxies alike are sent alike responses (the same
 * resources at the same content hashes, the same version), and encoding a response of 1000 resources is most of what
 * a push costs the control plane: so the bytes of a response, all but its nonce, are kept by a key that names its
 * content, and each stream sends those bytes with its own nonce appended. Protobuf allows a message's fields in any
 * order, and `nonce` is field 5 of both DiscoveryResponse and DeltaDiscoveryResponse, so the bytes written are those
 * of the whole message.
 *
 * The gRPC service's response serializer passes such bytes through (`service`). Kept entries are bounded in count and
 * bytes, the least recently used going first; an entry is only ever a faster way to the same bytes.
 */
import type * as grpc from '@grpc/grpc-js'
import type { DeltaDiscoveryResponse, DiscoveryResponse } from './ads.js'

/** field 5, length-delimited: `nonce` in DiscoveryResponse and DeltaDiscoveryResponse */
const NONCE_TAG = (5 << 3) | 2

type Serialize = (value: unknown) => Buffer

/** A response's bytes as last sent: the content's, then the nonce (`full.subarray(0, body)` is the content's). */
interface Entry {
  full: Buffer
  body: number
  nonce: string
}

export class SharedResponses {
  private readonly entries = new Map<string, Entry>()
  private bytes = 0
  private readonly serializers = new Map<'sotw' | 'delta', Serialize>()
  /** responses encoded, and responses whose bytes were already there */
  encodes = 0
  reuses = 0

  constructor(
    readonly maxBytes = 64 * 1024 * 1024,
    readonly maxEntries = 512,
  ) {}

  /** The ADS service definition with serializers that send pre-encoded bytes as they are. */
  service(def: grpc.ServiceDefinition): grpc.ServiceDefinition {
    const out: Record<string, grpc.MethodDefinition<unknown, unknown>> = {}
    for (const [name, method] of Object.entries(def)) {
      const serialize = method.responseSerialize as Serialize
      if (name === 'StreamAggregatedResources') this.serializers.set('sotw', serialize)
      if (name === 'DeltaAggregatedResources') this.serializers.set('delta', serialize)
      out[name] = {
        ...method,
        responseSerialize: (value: unknown) => (Buffer.isBuffer(value) ? value : serialize(value)),
      }
    }
    return out as grpc.ServiceDefinition
  }

  /**
   * The bytes of `msg`: its content's (by `key`, which must name everything in it but the nonce), then its nonce.
   * Streams sending the same content with the same nonce (a shared push) get the same bytes: the buffer is never
   * changed once returned (gRPC copies it into its frame).
   */
  encode(protocol: 'sotw' | 'delta', key: string, msg: DiscoveryResponse | DeltaDiscoveryResponse): Buffer {
    const k = `${protocol}\n${key}`
    const e = this.entries.get(k)
    let body: Buffer
    if (e === undefined) {
      const serialize = this.serializers.get(protocol)
      if (serialize === undefined) throw new Error(`no ${protocol} serializer: service() was not called`)
      const { nonce: _, ...rest } = msg
      body = serialize(rest)
      this.encodes++
    } else {
      this.reuses++
      // most recently used last
      this.entries.delete(k)
      this.entries.set(k, e)
      if (e.nonce === msg.nonce) return e.full
      body = e.full.subarray(0, e.body)
    }
    const nonce = Buffer.from(msg.nonce, 'utf8')
    const head = Buffer.allocUnsafe(1 + varintLength(nonce.length))
    head[0] = NONCE_TAG
    writeVarint(head, 1, nonce.length)
    const full = Buffer.concat([body, head, nonce], body.length + head.length + nonce.length)
    if (e === undefined) this.keep(k, { full, body: body.length, nonce: msg.nonce })
    else {
      this.bytes += full.length - e.full.length
      e.full = full
      e.nonce = msg.nonce
    }
    return full
  }

  stats(): { entries: number; bytes: number; encodes: number; reuses: number } {
    return { entries: this.entries.size, bytes: this.bytes, encodes: this.encodes, reuses: this.reuses }
  }

  private keep(key: string, entry: Entry): void {
    if (entry.full.length > this.maxBytes) return
    this.entries.set(key, entry)
    this.bytes += entry.full.length
    for (const [k, b] of this.entries) {
      if (this.bytes <= this.maxBytes && this.entries.size <= this.maxEntries) break
      this.entries.delete(k)
      this.bytes -= b.full.length
    }
  }
}

function varintLength(n: number): number {
  let len = 1
  while (n >= 0x80) {
    n >>>= 7
    len++
  }
  return len
}

function writeVarint(b: Buffer, at: number, n: number): void {
  while (n >= 0x80) {
    b[at++] = (n & 0x7f) | 0x80
    n >>>= 7
  }
  b[at] = n
}
