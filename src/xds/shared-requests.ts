/**
 * Requests whose long name lists are decoded once for every stream that sends them. Sidecars alike subscribe alike:
 * a thousand of them each send the same thousand EDS names (SotW repeats them with every ACK), and decoding a
 * million strings was a large part of what a connection storm cost the control plane.
 *
 * The names are field 3 of both DiscoveryRequest (`resource_names`) and DeltaDiscoveryRequest
 * (`resource_names_subscribe`), one length-delimited entry per name, written one after the other. A request's run of
 * those entries that is byte for byte the run of a recent request is not decoded again: the rest of the message is
 * decoded, and the names are the recent request's array, frozen and shared (whoever reads it must not change it;
 * `Object.isFrozen` tells a shared array, which the server then maps to its name set by identity). Anything else
 * (a short list, names not in one run, a message that does not scan) is decoded as usual.
 *
 * The gRPC service's request deserializers do this (`service`). Kept runs are bounded in count and bytes, the least
 * recently used going first; a run is only ever a faster way to the same names.
 */
import type * as grpc from '@grpc/grpc-js'
import { withAdsMethods } from './ads.js'

/** a run of fewer names is decoded as usual: comparing it would save nothing */
const MIN_NAMES = 32
const NAMES_FIELD = 3
const LENGTH_DELIMITED = 2

type Deserialize = (bytes: Buffer) => unknown

interface Run {
  /** the run's bytes (a copy: gRPC may reuse the buffer it decoded from) */
  bytes: Buffer
  names: readonly string[]
}

/** Reads protobuf varints of up to 32 bits from `b`; -1 for one that runs past the end or is longer. */
class VarintReader {
  at = 0
  constructor(readonly b: Buffer) {}

  next(): number {
    const b = this.b
    let v = 0
    for (let shift = 0; shift <= 28; shift += 7) {
      if (this.at >= b.length) return -1
      const c = b[this.at++]!
      v |= (c & 0x7f) << shift
      if (c < 0x80) return v >>> 0
    }
    return -1
  }
}

/** Where a message's run of field-3 entries lies, or null when it has none worth sharing or does not scan. */
export function namesRun(b: Buffer): { start: number; end: number; count: number } | null {
  const r = new VarintReader(b)
  let start = -1
  let end = -1
  let count = 0
  while (r.at < b.length) {
    const at = r.at
    const tag = r.next()
    if (tag < 0) return null
    const wire = tag & 7
    if (wire === 0) {
      // a varint value of any length (up to 10 bytes)
      let n = 0
      while (r.at < b.length && b[r.at++]! >= 0x80) if (++n > 9) return null
    } else if (wire === 1) r.at += 8
    else if (wire === 5) r.at += 4
    else if (wire === LENGTH_DELIMITED) {
      const len = r.next()
      if (len < 0) return null
      r.at += len
    } else return null
    if (r.at > b.length) return null
    if (tag >>> 3 === NAMES_FIELD && wire === LENGTH_DELIMITED) {
      // the entries must follow one another: a run split by other fields is decoded as usual
      if (start < 0) start = at
      else if (end !== at) return null
      end = r.at
      count++
    }
  }
  return count >= MIN_NAMES ? { start, end, count } : null
}

export class SharedRequestNames {
  /** the runs kept, most recently used last */
  private readonly runs: Run[] = []
  private bytes = 0
  /** requests decoded with a kept run's names, and runs decoded and kept */
  reuses = 0
  decodes = 0

  constructor(
    readonly maxBytes = 8 * 1024 * 1024,
    readonly maxRuns = 32,
  ) {}

  /** The ADS service definition with request deserializers that share alike name lists. */
  service(def: grpc.ServiceDefinition): grpc.ServiceDefinition {
    return withAdsMethods(def, (method, protocol) => {
      const field = protocol === 'sotw' ? 'resource_names' : 'resource_names_subscribe'
      const inner = method.requestDeserialize as Deserialize
      return { ...method, requestDeserialize: (b: Buffer) => this.decode(b, inner, field) }
    })
  }

  /** `bytes` decoded by `inner`, with the names of `field` shared when a recent request had the same run. */
  decode(bytes: Buffer, inner: Deserialize, field: string): unknown {
    const run = namesRun(bytes)
    if (run === null) return inner(bytes)
    const { start, end } = run
    const region = bytes.subarray(start, end)
    const runs = this.runs
    for (let k = runs.length - 1; k >= 0; k--) {
      const r = runs[k]!
      if (r.bytes.length !== region.length || !r.bytes.equals(region)) continue
      if (k !== runs.length - 1) {
        runs.splice(k, 1)
        runs.push(r)
      }
      this.reuses++
      const msg = inner(Buffer.concat([bytes.subarray(0, start), bytes.subarray(end)])) as Record<string, unknown>
      msg[field] = r.names
      return msg
    }
    const msg = inner(bytes) as Record<string, unknown>
    const names = msg[field]
    if (!Array.isArray(names) || names.length !== run.count || region.length > this.maxBytes) return msg
    Object.freeze(names)
    this.decodes++
    runs.push({ bytes: Buffer.from(region), names })
    this.bytes += region.length
    while (this.bytes > this.maxBytes || runs.length > this.maxRuns) this.bytes -= runs.shift()!.bytes.length
    return msg
  }

  stats(): { runs: number; bytes: number; decodes: number; reuses: number } {
    return { runs: this.runs.length, bytes: this.bytes, decodes: this.decodes, reuses: this.reuses }
  }
}
