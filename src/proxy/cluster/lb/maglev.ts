import { murmur3 } from '../hash.js'
import type { Host } from '../host.js'
import { type LbFactory, type LoadBalancer, sortedByKey } from './types.js'

export const defaultMaglevTableSize = 65537
export const maxMaglevTableSize = 5000011

/**
 * MAGLEV: a lookup table of prime size M filled from each host's permutation of slots (offset + j * skip mod M,
 * both derived from hashes of the host's key). Hosts take turns claiming their next free preferred slot; a host of
 * weight w takes a turn in w / max(weight) of the rounds, which gives it a share of the table in proportion to
 * its weight (Envoy's weighted Maglev). A request goes to table[hash mod M]: O(1).
 */
export function maglev(tableSize = defaultMaglevTableSize): LbFactory {
  return (hosts) => new Maglev(hosts, tableSize)
}

export class Maglev implements LoadBalancer {
  readonly #hosts: readonly Host[]
  readonly #table: Uint32Array

  constructor(hosts: readonly Host[], tableSize: number) {
    const sorted = sortedByKey(hosts)
    this.#hosts = sorted
    const m = tableSize
    const n = sorted.length
    const next = new Float64Array(n)
    const skip = new Float64Array(n)
    const share = new Float64Array(n)
    const credit = new Float64Array(n)
    let maxWeight = 0
    for (const h of sorted) maxWeight = Math.max(maxWeight, h.weight)
    for (let i = 0; i < n; i++) {
      const key = sorted[i]!.key
      next[i] = murmur3(key, 0x5bd1e995) % m
      skip[i] = (murmur3(key, 0x9747b28c) % (m - 1)) + 1
      share[i] = sorted[i]!.weight / maxWeight
    }
    const table = new Uint32Array(m)
    const taken = new Uint8Array(m)
    let filled = 0
    while (filled < m) {
      for (let i = 0; i < n && filled < m; i++) {
        credit[i] = credit[i]! + share[i]!
        // The heaviest hosts claim a slot every round; a host of half that weight every other round, etc.
        if (credit[i]! < 1 - 1e-9) continue
        credit[i] = credit[i]! - 1
        let c = next[i]!
        while (taken[c] === 1) c = (c + skip[i]!) % m
        taken[c] = 1
        table[c] = i
        next[i] = (c + skip[i]!) % m
        filled++
      }
    }
    this.#table = table
  }

  /** Table slots per host key (for tests and the admin page). */
  entriesPerHost(): Map<string, number> {
    const out = new Map<string, number>()
    for (const h of this.#hosts) out.set(h.key, 0)
    for (const i of this.#table) {
      const key = this.#hosts[i]!.key
      out.set(key, (out.get(key) ?? 0) + 1)
    }
    return out
  }

  pick(hash: number | undefined): Host {
    const t = this.#table
    const slot = hash === undefined ? Math.floor(Math.random() * t.length) : (hash >>> 0) % t.length
    return this.#hosts[t[slot]!]!
  }
}
