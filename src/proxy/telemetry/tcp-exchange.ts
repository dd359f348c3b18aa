/**
 * Istio's TCP metadata exchange (`istio.metadata_exchange`, `envoy.tcp.metadataexchange.config.MetadataExchange`
 * with `protocol: istio-peer-exchange`): on an mTLS connection whose handshake selected that ALPN, each side first
 * writes a prefix naming its workload, and reads and strips the peer's before passing bytes on; after the prefixes
 * the connection's bytes flow untouched. Where the handshake selected anything else (a peer that does not speak
 * it, plain text), nothing is written or read.
 *
 * The prefix is Istio's, so Loom and Envoy sidecars read each other:
 *
 *   magic 0x3D230467 | length N | N bytes: google.protobuf.Any {
 *     type_url: "type.googleapis.com/google.protobuf.Struct",
 *     value: Struct { "x-envoy-peer-metadata": <the Struct the HTTP exchange sends>, "x-envoy-peer-metadata-id": <node id> } }
 *
 * (both numbers 32-bit big-endian). The Struct inside is the one the HTTP exchange carries in
 * `x-envoy-peer-metadata` (exchange.ts): it is decoded through the HTTP side's bounded cache, keyed by the same
 * base64 text, so a peer is decoded once whichever way it spoke and TCP and HTTP rows share its metadata object.
 *
 * Where it runs, as Istio's pilot places it: the downstream side is a network filter of an inbound TCP chain
 * (before the network RBAC filters and istio.stats), the upstream side an entry of an outbound cluster's `filters`,
 * which the TCP proxy applies to the connections it makes to that cluster (HTTP connections exchange in headers).
 * Both sides write their prefix as soon as the handshake is done rather than on the first byte (Envoy's way): a
 * server that speaks first then works too, and an Envoy peer reads the prefix whenever it comes.
 *
 * A prefix that is not Istio's (wrong magic, a payload that is not a Struct in an Any, a length over 64 KiB) closes
 * the connection, with a warning and a counter: the peer chose the ALPN, so what follows is not the application's
 * bytes, and this side's own prefix has already gone out (Istio passes such bytes on; its log names a peer
 * without the filter). Counters, Istio's names: `metadata_exchange.alpn_protocol_found`, `.alpn_protocol_not_found`,
 * `.metadata_added` (prefixes written), `.initial_header_not_found` (wrong magic), `.header_not_found` (a payload
 * that does not decode, or is over the cap).
 *
 * Cost: a connection the exchange does not apply to pays a property read and a comparison; one that uses it pays
 * the write of the proxy's own prefix (encoded once per workload), a reader of a few fields, and the prefix's own
 * bytes copied only when they arrive split across reads. Application bytes are never copied: what follows the
 * prefix in its last read goes back to the socket as a view (`unshift`).
 */
import { Buffer } from 'node:buffer'
import type * as net from 'node:net'
import type { IstioMetadataExchange } from '../../config/envoy.js'
import { log } from '../../core/log.js'
import type { StatsStore } from '../stats/stats.js'
import {
  encodeStruct,
  ownMetadataFields,
  PEER_METADATA_HEADER,
  PEER_METADATA_ID_HEADER,
  peerFromHeader,
  Reader,
  type StructObject,
} from './exchange.js'
import { UNKNOWN_WORKLOAD } from './metrics.js'
import type { LocalWorkload, WorkloadMetadata } from './workload.js'

/** Istio's magic number, the prefix's first four bytes. */
export const EXCHANGE_MAGIC = 0x3d230467
/** The ALPN protocol Istio's sidecars exchange metadata under. */
export const EXCHANGE_PROTOCOL = 'istio-peer-exchange'
/** Bytes before the payload: magic and length. */
export const HEADER_BYTES = 8
/** The largest payload read (a workload's metadata is a few hundred bytes); longer closes the connection. */
export const MAX_PAYLOAD_BYTES = 64 * 1024
const STRUCT_TYPE_URL = 'type.googleapis.com/google.protobuf.Struct'
const STRUCT_TYPE_URL_BYTES = Buffer.from(STRUCT_TYPE_URL, 'latin1')
const METADATA_KEY = Buffer.from(PEER_METADATA_HEADER, 'latin1')
const METADATA_ID_KEY = Buffer.from(PEER_METADATA_ID_HEADER, 'latin1')

// === the prefix ===

function varint(out: number[], n: number): void {
  while (n > 0x7f) {
    out.push((n & 0x7f) | 0x80)
    n >>>= 7
  }
  out.push(n)
}

/** A whole prefix (header and payload) naming `w`: its metadata and node id, as Istio's filter writes it. */
export function encodePrefix(w: LocalWorkload): Buffer {
  const fields: StructObject = { [PEER_METADATA_HEADER]: ownMetadataFields(w) }
  if (w.node.id !== '') fields[PEER_METADATA_ID_HEADER] = w.node.id
  const value = encodeStruct(fields)
  const any: number[] = [0x0a]
  varint(any, STRUCT_TYPE_URL_BYTES.length)
  for (const b of STRUCT_TYPE_URL_BYTES) any.push(b)
  any.push(0x12)
  varint(any, value.length)
  const out = Buffer.allocUnsafe(HEADER_BYTES + any.length + value.length)
  out.writeUInt32BE(EXCHANGE_MAGIC, 0)
  out.writeUInt32BE(any.length + value.length, 4)
  out.set(any, HEADER_BYTES)
  out.set(value, HEADER_BYTES + any.length)
  return out
}

const prefixes = new WeakMap<LocalWorkload, Buffer>()

/** The proxy's own prefix, encoded once per workload object (a new node makes a new one). */
export function ownPrefix(w: LocalWorkload): Buffer {
  let p = prefixes.get(w)
  if (p === undefined) prefixes.set(w, (p = encodePrefix(w)))
  return p
}

/** Whether `buf[s, e)` holds exactly the bytes of `key`. */
function bytesEqual(buf: Buffer, s: number, e: number, key: Buffer): boolean {
  return e - s === key.length && buf.compare(key, 0, key.length, s, e) === 0
}

/**
 * The peer a payload (`buf[start, end)`: the Any) names. Throws when the bytes are not an Any holding a Struct;
 * a Struct without `x-envoy-peer-metadata` names nobody (`UNKNOWN_WORKLOAD`), as a peer that sends no labels.
 */
export function peerOfPayload(buf: Buffer, start: number, end: number): WorkloadMetadata {
  const any = new Reader(buf, start, end)
  let typeUrl: [number, number] | null = null
  let value: [number, number] | null = null
  while (any.pos < end) {
    const tag = any.varint()
    if (tag === 0x0a) typeUrl = any.sub()
    else if (tag === 0x12) value = any.sub()
    else any.skip(tag & 7)
  }
  if (typeUrl === null || !isStructTypeUrl(buf, typeUrl[0], typeUrl[1]))
    throw new Error(`the payload is not a google.protobuf.Any of ${STRUCT_TYPE_URL}`)
  if (value === null) return UNKNOWN_WORKLOAD
  let metadata: [number, number] | null = null
  let id: string | undefined
  const struct = new Reader(buf, value[0], value[1])
  while (struct.pos < value[1]) {
    const tag = struct.varint()
    if (tag !== 0x0a) {
      struct.skip(tag & 7)
      continue
    }
    const [es, ee] = struct.sub()
    const entry = new Reader(buf, es, ee)
    let key: [number, number] | null = null
    let v: [number, number] | null = null
    while (entry.pos < ee) {
      const t = entry.varint()
      if (t === 0x0a) key = entry.sub()
      else if (t === 0x12) v = entry.sub()
      else entry.skip(t & 7)
    }
    if (key === null || v === null) continue
    if (bytesEqual(buf, key[0], key[1], METADATA_KEY)) metadata = valueField(buf, v, 0x2a)
    else if (bytesEqual(buf, key[0], key[1], METADATA_ID_KEY)) {
      const s = valueField(buf, v, 0x1a)
      if (s !== null) id = buf.toString('utf8', s[0], s[1])
    }
  }
  if (metadata === null) return UNKNOWN_WORKLOAD
  // the HTTP side's cache, by the header value this Struct would be: one decode per distinct peer
  const peer = peerFromHeader(buf.toString('base64', metadata[0], metadata[1]), id)
  if (peer === null) throw new Error(`${PEER_METADATA_HEADER} is not a google.protobuf.Struct`)
  return peer
}

function isStructTypeUrl(buf: Buffer, s: number, e: number): boolean {
  if (bytesEqual(buf, s, e, STRUCT_TYPE_URL_BYTES)) return true
  // an Any's type URL may have another host part before the last '/'
  return buf.toString('latin1', s, e).endsWith('/google.protobuf.Struct')
}

/** The bounds of a google.protobuf.Value's field `tag` (string_value 0x1a, struct_value 0x2a), or null. */
function valueField(buf: Buffer, [s, e]: [number, number], tag: number): [number, number] | null {
  const r = new Reader(buf, s, e)
  let out: [number, number] | null = null
  while (r.pos < e) {
    const t = r.varint()
    if (t === tag) out = r.sub()
    else r.skip(t & 7)
  }
  return out
}

export type PrefixError = 'magic' | 'oversized' | 'malformed'

/** What a read of the prefix came to. */
export type PrefixResult =
  | { readonly kind: 'more' }
  | {
      readonly kind: 'done'
      readonly peer: WorkloadMetadata
      /** the bytes of the prefix (header and payload) */
      readonly length: number
      /** what followed the prefix in the last read (a view of it), or null */
      readonly rest: Buffer | null
    }
  | { readonly kind: 'error'; readonly error: PrefixError; readonly message: string }

const MORE: PrefixResult = Object.freeze({ kind: 'more' })

/**
 * Reads a peer's prefix across reads: `push` each read until the result is not `more`. The header is taken byte
 * by byte (a wrong magic is refused after four bytes, an oversized length after eight, without waiting for the
 * rest); a payload inside one read is decoded where it lies, one split across reads is gathered once.
 */
export class PrefixReader {
  readonly #max: number
  #seen = 0
  #magic = 0
  #length = 0
  #payload: Buffer | null = null
  #filled = 0
  #over = false

  constructor(max = MAX_PAYLOAD_BYTES) {
    this.#max = max
  }

  push(chunk: Buffer): PrefixResult {
    if (this.#over) throw new Error('PrefixReader: the prefix was already read')
    const n = chunk.length
    let i = 0
    while (this.#seen < HEADER_BYTES && i < n) {
      const b = chunk[i++]!
      if (this.#seen < 4) this.#magic = this.#magic * 256 + b
      else this.#length = this.#length * 256 + b
      this.#seen++
      if (this.#seen === 4 && this.#magic !== EXCHANGE_MAGIC)
        return this.#fail('magic', `wrong magic 0x${this.#magic.toString(16).padStart(8, '0')}`)
      if (this.#seen === HEADER_BYTES && this.#length > this.#max)
        return this.#fail('oversized', `a payload of ${this.#length} bytes, over the ${this.#max} bytes read`)
    }
    if (this.#seen < HEADER_BYTES) return MORE
    const len = this.#length
    if (this.#payload === null) {
      if (n - i >= len) return this.#finish(chunk, i, i + len, chunk, i + len)
      this.#payload = Buffer.allocUnsafe(len)
    }
    const take = Math.min(len - this.#filled, n - i)
    chunk.copy(this.#payload, this.#filled, i, i + take)
    this.#filled += take
    i += take
    if (this.#filled < len) return MORE
    return this.#finish(this.#payload, 0, len, chunk, i)
  }

  #finish(buf: Buffer, start: number, end: number, chunk: Buffer, restAt: number): PrefixResult {
    this.#over = true
    let peer: WorkloadMetadata
    try {
      peer = peerOfPayload(buf, start, end)
    } catch (err) {
      return { kind: 'error', error: 'malformed', message: (err as Error).message }
    }
    const rest = restAt < chunk.length ? chunk.subarray(restAt) : null
    return { kind: 'done', peer, length: HEADER_BYTES + this.#length, rest }
  }

  #fail(error: PrefixError, message: string): PrefixResult {
    this.#over = true
    return { kind: 'error', error, message }
  }
}

// === on a connection ===

/** The counters, Istio's names under `metadata_exchange.`. */
export interface ExchangeCounters {
  alpn_protocol_found: number
  alpn_protocol_not_found: number
  metadata_added: number
  initial_header_not_found: number
  header_not_found: number
}

/** What one side of a connection learnt: the peer, and the prefix bytes each way (not the application's). */
export interface ExchangeResult {
  readonly peer: WorkloadMetadata
  /** prefix bytes read from the socket */
  readonly read: number
  /** prefix bytes written to it */
  readonly written: number
}

/** A side where the exchange did not happen: nobody learnt, nothing written or read. */
export const NO_EXCHANGE: ExchangeResult = Object.freeze({ peer: UNKNOWN_WORKLOAD, read: 0, written: 0 })

/**
 * The exchange as a TCP proxy runs it, one per tcp_proxy chain: the proxy's own workload (its prefix), the counters,
 * and the protocol of the chain's downstream filter (null: the chain has none). The upstream side's protocol is the
 * cluster's (`UpstreamCluster.exchangeProtocol`).
 */
export class TcpExchange {
  readonly downstreamProtocol: string | null
  readonly #workload: LocalWorkload
  readonly #store: StatsStore
  #counters: ExchangeCounters | null = null

  constructor(workload: LocalWorkload, store: StatsStore, downstream: IstioMetadataExchange | null) {
    this.#workload = workload
    this.#store = store
    this.downstreamProtocol = downstream?.protocol ?? null
    // a proxy that configures no exchange shows no counters (the upstream side makes them on first use)
    if (downstream !== null) this.#counters = exchangeCounters(store)
  }

  /** The counters, Istio's names under `metadata_exchange.` (shared by every chain of the proxy). */
  get counters(): ExchangeCounters {
    this.#counters ??= exchangeCounters(this.#store)
    return this.#counters
  }

  /**
   * Runs the exchange on `socket` when its handshake selected `protocol`: writes the own prefix, reads the peer's,
   * then calls `done` (the socket paused, what followed the prefix back in it). When the ALPN is another, `done`
   * runs at once with NO_EXCHANGE. A bad prefix, or an end before it, calls `fail` with why (logged and counted
   * here); the caller closes the connection. `where` names the connection in the log (listener or cluster).
   */
  run(
    socket: net.Socket,
    protocol: string,
    where: string,
    done: (r: ExchangeResult) => void,
    fail: (reason: string) => void,
  ): void {
    const c = this.counters
    if ((socket as { alpnProtocol?: string | false }).alpnProtocol !== protocol) {
      c.alpn_protocol_not_found++
      done(NO_EXCHANGE)
      return
    }
    c.alpn_protocol_found++
    const own = ownPrefix(this.#workload)
    socket.write(own)
    c.metadata_added++
    const reader = new PrefixReader()
    const onEnd = () => {
      socket.off('data', onData)
      log('debug', 'metadata_exchange', 'the peer closed before its prefix', { where })
      fail('metadata_exchange: the peer closed before its prefix')
    }
    const onData = (chunk: Buffer) => {
      const r = reader.push(chunk)
      if (r.kind === 'more') return
      // paused before returning: no read is emitted with nobody listening
      socket.pause()
      socket.off('data', onData)
      socket.off('end', onEnd)
      if (r.kind === 'error') {
        if (r.error === 'magic') c.initial_header_not_found++
        else c.header_not_found++
        log('warn', 'metadata_exchange', `the peer's ${protocol} prefix is not Istio's: connection closed`, {
          where,
          remote: socket.remoteAddress ?? null,
          reason: r.error,
          detail: r.message,
        })
        fail(`metadata_exchange: ${r.error}`)
        return
      }
      if (r.rest !== null) socket.unshift(r.rest)
      done({ peer: r.peer, read: r.length, written: own.length })
    }
    socket.on('data', onData)
    socket.once('end', onEnd)
    // a socket the caller paused does not flow for a new 'data' listener on its own
    socket.resume()
  }
}

function exchangeCounters(store: StatsStore): ExchangeCounters {
  const c = store.forCounters('metadata_exchange.').values
  for (const k of COUNTER_NAMES) c[k] ??= 0
  return c as unknown as ExchangeCounters
}

const COUNTER_NAMES: readonly (keyof ExchangeCounters)[] = [
  'alpn_protocol_found',
  'alpn_protocol_not_found',
  'metadata_added',
  'initial_header_not_found',
  'header_not_found',
]
