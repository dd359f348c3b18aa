import assert from 'node:assert/strict'
import { test } from 'node:test'
import { Host } from './host.js'
import { EntryKeys, RingHash, ringHash } from './lb/ring-hash.js'
import { murmur3 } from './hash.js'
import { randomUint32 } from './lb/types.js'

const hosts = (...weights: number[]) =>
  weights.map((weight, i) => new Host({ address: `10.0.0.${i + 1}`, port: 80, weight }))
const keys = Array.from({ length: 100_000 }, () => randomUint32())

function shares(lb: { pick(h: number | undefined): Host }, hs: Host[]): number[] {
  const c = new Map<Host, number>()
  for (const k of keys) {
    const h = lb.pick(k)
    c.set(h, (c.get(h) ?? 0) + 1)
  }
  return hs.map((h) => (c.get(h) ?? 0) / keys.length)
}

test('RING_HASH: the same hash always gets the same host, whatever order hosts are listed in', () => {
  const hs = hosts(1, 1, 1, 1, 1)
  const a = ringHash()(hs)
  const b = ringHash()(hs.slice().reverse())
  for (const k of keys.slice(0, 5000)) {
    assert.equal(a.pick(k), a.pick(k))
    assert.equal(a.pick(k), b.pick(k))
  }
})

test('RING_HASH: minimum ring size 1024 by default, entries in proportion to weight', () => {
  const eq = new RingHash(hosts(1, 1, 1, 1), 1024, 8 * 1024 * 1024)
  assert.equal(eq.size, 1024)
  for (const n of eq.entriesPerHost().values()) assert.equal(n, 256)
  const weighted = new RingHash(hosts(1, 2, 5), 1024, 8 * 1024 * 1024)
  const per = [...weighted.entriesPerHost().values()]
  // The lightest host gets at least its share of the minimum ring; the others scale with weight.
  assert.ok(per[0]! >= 128, `entries ${per}`)
  assert.equal(per[1], 2 * per[0]!)
  assert.equal(per[2], 5 * per[0]!)
})

test('RING_HASH: the ring never exceeds maximum_ring_size', () => {
  const lb = new RingHash(hosts(1, 1000), 1024, 2000)
  assert.ok(lb.size <= 2000 && lb.size >= 1999, `size ${lb.size}`)
  const small = new RingHash(hosts(1, 1, 1), 10, 16)
  assert.ok(small.size <= 16)
})

test('RING_HASH spreads keys evenly with equal weights', () => {
  const hs = hosts(1, 1, 1, 1, 1, 1, 1, 1, 1, 1)
  const s = shares(ringHash(4096)(hs), hs)
  for (const x of s) assert.ok(Math.abs(x - 0.1) < 0.03, `shares ${s}`)
})

test('RING_HASH spreads keys in proportion to weight', () => {
  const hs = hosts(1, 2, 3)
  const s = shares(ringHash(4096)(hs), hs)
  assert.ok(Math.abs(s[0]! - 1 / 6) < 0.03, `shares ${s}`)
  assert.ok(Math.abs(s[1]! - 2 / 6) < 0.03, `shares ${s}`)
  assert.ok(Math.abs(s[2]! - 3 / 6) < 0.03, `shares ${s}`)
})

test('RING_HASH: removing 1 of 10 hosts remaps its own keys and few others', () => {
  const hs = hosts(1, 1, 1, 1, 1, 1, 1, 1, 1, 1)
  const before = ringHash()(hs)
  const removed = hs[3]!
  const after = ringHash()(hs.filter((h) => h !== removed))
  let moved = 0
  let fromRemoved = 0
  for (const k of keys) {
    const was = before.pick(k)
    if (was === removed) fromRemoved++
    if (was !== after.pick(k)) moved++
  }
  // The removed host's keys all move. As in Envoy, the ring keeps its minimum size, so each survivor gains entries
  // (103 -> 114 here) that take some keys from the others too: about 17% move in all.
  assert.ok(moved >= fromRemoved)
  const fraction = moved / keys.length
  assert.ok(fraction > 0.05 && fraction < 0.22, `moved ${fraction}`)
})

test("RING_HASH: with a fixed ring size per host, only the removed host's keys move", () => {
  // minimum 1000 and 10 or 9 hosts: every host keeps exactly its entries, so nothing else moves.
  const hs = hosts(1, 1, 1, 1, 1, 1, 1, 1, 1, 1)
  const before = ringHash(1000, 1000)(hs)
  const removed = hs[3]!
  const after = ringHash(900, 900)(hs.filter((h) => h !== removed))
  for (const k of keys) {
    const was = before.pick(k)
    if (was !== removed) assert.equal(after.pick(k), was)
  }
})

test('RING_HASH without a hash picks at random', () => {
  const hs = hosts(1, 1, 1)
  const lb = ringHash()(hs)
  const seen = new Set<Host>()
  for (let i = 0; i < 300; i++) seen.add(lb.pick(undefined))
  assert.equal(seen.size, 3)
})

test('RING_HASH entry j of a host sits at murmur3("<key>_<j>")', () => {
  for (const key of ['10.0.0.1:80', '[2001:db8::1]:8443']) {
    const entries = new EntryKeys(key)
    for (const j of [0, 1, 9, 10, 99, 100, 12345, 8388607]) assert.equal(entries.hash(j), murmur3(`${key}_${j}`))
  }
})
