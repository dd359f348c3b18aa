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
import { type DeltaDiscoveryResponse, type DiscoveryResponse, withAdsMethods } from './ads.js'
import { encodeDeltaDiscoveryResponse, encodeDiscoveryResponse } from './response-wire.js'

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
  /**
   * per protocol, by key: the key is the same string for every stream of a shared push (a long one: it names every
   * resource), so its hash is computed once; a key made per call (the protocol prepended) would be hashed per stream
   */
  private readonly entries = new Map<'sotw' | 'delta', Map<string, Entry>>([
    ['sotw', new Map()],
    ['delta', new Map()],
  ])
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
    return withAdsMethods(def, (method, protocol) => {
      const generic = method.responseSerialize as Serialize
      // the ADS responses by hand (response-wire.ts: the same bytes), anything it does not write as before
      const serialize: Serialize =
        protocol === 'sotw'
          ? (v) => encodeDiscoveryResponse(v as DiscoveryResponse) ?? generic(v)
          : (v) => encodeDeltaDiscoveryResponse(v as DeltaDiscoveryResponse) ?? generic(v)
      this.serializers.set(protocol, serialize)
      return { ...method, responseSerialize: (value: unknown) => (Buffer.isBuffer(value) ? value : serialize(value)) }
    })
  }

  /**
   * The bytes of `msg`: its content's (by `key`, which must name everything in it but the nonce), then its nonce.
   * Streams sending the same content with the same nonce (a shared push) get the same bytes: the buffer is never
   * changed once returned (gRPC copies it into its frame).
   */
  encode(protocol: 'sotw' | 'delta', key: string, msg: DiscoveryResponse | DeltaDiscoveryResponse): Buffer {
    const entries = this.entries.get(protocol)!
    const e = entries.get(key)
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
      entries.delete(key)
      entries.set(key, e)
      if (e.nonce === msg.nonce) return e.full
      body = e.full.subarray(0, e.body)
    }
    const nonce = Buffer.from(msg.nonce, 'utf8')
    const head = Buffer.allocUnsafe(1 + varintLength(nonce.length))
    head[0] = NONCE_TAG
    writeVarint(head, 1, nonce.length)
    const full = Buffer.concat([body, head, nonce], body.length + head.length + nonce.length)
    if (e === undefined) this.keep(entries, key, { full, body: body.length, nonce: msg.nonce })
    else {
      this.bytes += full.length - e.full.length
      e.full = full
      e.nonce = msg.nonce
    }
    return full
  }

  stats(): { entries: number; bytes: number; encodes: number; reuses: number } {
    return { entries: this.count(), bytes: this.bytes, encodes: this.encodes, reuses: this.reuses }
  }

  private count(): number {
    let n = 0
    for (const m of this.entries.values()) n += m.size
    return n
  }

  /**
   * Keeps an entry, then drops the least recently used while over the bounds: those of its own protocol, then the
   * other's; the entry just kept goes last (an entry is never larger than `maxBytes`, so it stays).
   */
  private keep(entries: Map<string, Entry>, key: string, entry: Entry): void {
    if (entry.full.length > this.maxBytes) return
    entries.set(key, entry)
    this.bytes += entry.full.length
    const over = () => this.bytes > this.maxBytes || this.count() > this.maxEntries
    for (const m of [entries, ...[...this.entries.values()].filter((x) => x !== entries)]) {
      for (const [k, b] of m) {
        if (!over()) return
        if (b === entry) continue
        m.delete(k)
        this.bytes -= b.full.length
      }
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
