import { murmur3Bytes } from '../hash.js'
import type { Host } from '../host.js'
import { type LbFactory, type LoadBalancer, randomUint32, sortedByKey } from './types.js'

export const defaultMinimumRingSize = 1024
export const defaultMaximumRingSize = 8 * 1024 * 1024

/**
 * RING_HASH: a ketama-style consistent hash ring. Each host gets entries in proportion to its weight, the smallest
 * weight getting at least minimum_ring_size * (its share) entries, the ring never exceeding maximum_ring_size.
 * Entry j of a host sits at hash(`${host.key}_${j}`), so it does not depend on the other hosts: removing one host
 * moves only the keys that were on it. A request goes to the first entry at or after its hash (wrapping).
 */
export function ringHash(
  minimumRingSize = defaultMinimumRingSize,
  maximumRingSize = defaultMaximumRingSize,
): LbFactory {
  return (hosts) => new RingHash(hosts, minimumRingSize, maximumRingSize)
}

// Ring entries are packed as position * 2^21 + host index into one float64 (exact below 2^53), so one native
// numeric sort orders them. Up to 2^21 hosts; a larger set uses a comparator sort.
const indexBits = 2 ** 21

export class RingHash implements LoadBalancer {
  readonly #hosts: readonly Host[]
  /** Sorted positions of the ring's entries. */
  readonly #positions: Uint32Array
  /** Index into #hosts of each entry. */
  readonly #owners: Uint32Array

  constructor(hosts: readonly Host[], minimumRingSize: number, maximumRingSize: number) {
    const sorted = sortedByKey(hosts)
    this.#hosts = sorted
    let total = 0
    for (const h of sorted) total += h.weight
    let minShare = 1
    for (const h of sorted) minShare = Math.min(minShare, h.weight / total)
    // Scale so the lightest host gets ceil(min share * minimum size) entries, capped by the maximum size.
    const scale = Math.min(Math.ceil(minShare * minimumRingSize) / minShare, maximumRingSize)
    const counts = new Uint32Array(sorted.length)
    let size = 0
    let target = 0
    for (let i = 0; i < sorted.length; i++) {
      target += (scale * sorted[i]!.weight) / total
      // Accumulated rounding, so the ring's size is `scale` without one host's rounding pushing it over.
      const n = Math.max(0, Math.round(target) - size)
      counts[i] = n
      size += n
    }
    const packed = new Float64Array(size)
    let e = 0
    for (let i = 0; i < sorted.length; i++) {
      const entries = new EntryKeys(sorted[i]!.key)
      for (let j = 0; j < counts[i]!; j++) packed[e++] = entries.hash(j) * indexBits + i
    }
    if (sorted.length <= indexBits) packed.sort()
    this.#positions = new Uint32Array(size)
    this.#owners = new Uint32Array(size)
    for (let k = 0; k < size; k++) {
      const v = packed[k]!
      this.#positions[k] = Math.floor(v / indexBits)
      this.#owners[k] = v % indexBits
    }
    if (sorted.length > indexBits) this.#sortLarge()
  }

  #sortLarge(): void {
    const pos = this.#positions
    const own = this.#owners
    const order = Array.from({ length: pos.length }, (_, i) => i).sort((a, b) => pos[a]! - pos[b]! || own[a]! - own[b]!)
    const p = Uint32Array.from(order, (i) => pos[i]!)
    const o = Uint32Array.from(order, (i) => own[i]!)
    pos.set(p)
    own.set(o)
  }

  /** Number of entries on the ring. */
  get size(): number {
    return this.#positions.length
  }

  /** Entries per host key (for tests and the admin page). */
  entriesPerHost(): Map<string, number> {
    const out = new Map<string, number>()
    for (const h of this.#hosts) out.set(h.key, 0)
    for (const i of this.#owners) {
      const key = this.#hosts[i]!.key
      out.set(key, (out.get(key) ?? 0) + 1)
    }
    return out
  }

  pick(hash: number | undefined): Host {
    const h = hash === undefined ? randomUint32() : hash >>> 0
    const pos = this.#positions
    // First entry with position >= h; past the end wraps to the first.
    let lo = 0
    let hi = pos.length
    while (lo < hi) {
      const mid = (lo + hi) >>> 1
      if (pos[mid]! < h) lo = mid + 1
      else hi = mid
    }
    if (lo === pos.length) lo = 0
    return this.#hosts[this.#owners[lo]!]!
  }
}

/** Hashes `${key}_${j}` for successive j without building strings: the key's bytes are encoded once. */
export class EntryKeys {
  readonly #bytes: Uint8Array
  readonly #prefix: number

  constructor(key: string) {
    const encoded = new TextEncoder().encode(`${key}_`)
    this.#bytes = new Uint8Array(encoded.length + 16)
    this.#bytes.set(encoded)
    this.#prefix = encoded.length
  }

  hash(j: number): number {
    const b = this.#bytes
    let digits = 1
    for (let v = j; v >= 10; v = Math.floor(v / 10)) digits++
    let v = j
    for (let d = this.#prefix + digits - 1; d >= this.#prefix; d--) {
      b[d] = 48 + (v % 10)
      v = Math.floor(v / 10)
    }
    return murmur3Bytes(b, this.#prefix + digits)
  }
}
