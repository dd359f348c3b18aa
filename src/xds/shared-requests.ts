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

/** Where a message's run of field-3 entries lies, or null when it has none worth sharing or does not scan. */
export function namesRun(b: Buffer): { start: number; end: number; count: number } | null {
  let i = 0
  let start = -1
  let end = -1
  let count = 0
  while (i < b.length) {
    const at = i
    let tag = 0
    let shift = 0
    for (;;) {
      if (i >= b.length || shift > 28) return null
      const c = b[i++]!
      tag |= (c & 0x7f) << shift
      if (c < 0x80) break
      shift += 7
    }
    const wire = tag & 7
    if (wire === 0) {
      let n = 0
      while (i < b.length && b[i++]! >= 0x80) if (++n > 9) return null
    } else if (wire === 1) i += 8
    else if (wire === 5) i += 4
    else if (wire === LENGTH_DELIMITED) {
      let len = 0
      shift = 0
      for (;;) {
        if (i >= b.length || shift > 28) return null
        const c = b[i++]!
        len |= (c & 0x7f) << shift
        if (c < 0x80) break
        shift += 7
      }
      i += len
    } else return null
    if (i > b.length) return null
    if (tag >>> 3 === NAMES_FIELD && wire === LENGTH_DELIMITED) {
      // the entries must follow one another: a run split by other fields is decoded as usual
      if (start < 0) start = at
      else if (end !== at) return null
      end = i
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
    const out: Record<string, grpc.MethodDefinition<unknown, unknown>> = {}
    for (const [name, method] of Object.entries(def)) {
      const field =
        name === 'StreamAggregatedResources'
          ? 'resource_names'
          : name === 'DeltaAggregatedResources'
            ? 'resource_names_subscribe'
            : null
      const inner = method.requestDeserialize as Deserialize
      out[name] =
        field === null ? method : { ...method, requestDeserialize: (b: Buffer) => this.decode(b, inner, field) }
    }
    return out as grpc.ServiceDefinition
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
