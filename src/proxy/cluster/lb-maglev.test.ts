import assert from 'node:assert/strict'
import { test } from 'node:test'
import { Host } from './host.js'
import { Maglev, maglev } from './lb/maglev.js'
import { randomUint32 } from './lb/types.js'

const hosts = (...weights: number[]) =>
  weights.map((weight, i) => new Host({ address: `10.0.0.${i + 1}`, port: 80, weight }))
const keys = Array.from({ length: 100_000 }, () => randomUint32())

test('MAGLEV: equal weights get table slots within one of each other (default table 65537)', () => {
  const lb = new Maglev(hosts(1, 1, 1, 1, 1, 1, 1), 65537)
  const per = [...lb.entriesPerHost().values()]
  assert.equal(
    per.reduce((a, b) => a + b, 0),
    65537,
  )
  assert.ok(Math.max(...per) - Math.min(...per) <= 1, `slots ${per}`)
})

test('MAGLEV: unequal weights get slots in proportion to weight', () => {
  const lb = new Maglev(hosts(1, 2, 3), 65537)
  const per = [...lb.entriesPerHost().values()]
  assert.ok(Math.abs(per[0]! / 65537 - 1 / 6) < 0.002, `slots ${per}`)
  assert.ok(Math.abs(per[1]! / 65537 - 2 / 6) < 0.002, `slots ${per}`)
  assert.ok(Math.abs(per[2]! / 65537 - 3 / 6) < 0.002, `slots ${per}`)
})

test('MAGLEV spreads request hashes in proportion to weight', () => {
  const hs = hosts(1, 1, 2)
  const lb = maglev()(hs)
  const c = new Map<Host, number>()
  for (const k of keys) c.set(lb.pick(k), (c.get(lb.pick(k)) ?? 0) + 1)
  assert.ok(Math.abs(c.get(hs[0]!)! / keys.length - 0.25) < 0.01)
  assert.ok(Math.abs(c.get(hs[2]!)! / keys.length - 0.5) < 0.01)
})

test('MAGLEV: same hash same host, whatever order hosts are listed in', () => {
  const hs = hosts(1, 1, 1, 1)
  const a = maglev()(hs)
  const b = maglev()(hs.slice().reverse())
  for (const k of keys.slice(0, 5000)) {
    assert.equal(a.pick(k), a.pick(k))
    assert.equal(a.pick(k), b.pick(k))
  }
})

test('MAGLEV: removing 1 of 10 hosts remaps about 10% of keys', () => {
  const hs = hosts(1, 1, 1, 1, 1, 1, 1, 1, 1, 1)
  const before = maglev()(hs)
  const removed = hs[6]!
  const after = maglev()(hs.filter((h) => h !== removed))
  let moved = 0
  let fromRemoved = 0
  for (const k of keys) {
    const was = before.pick(k)
    if (was !== after.pick(k)) moved++
    if (was === removed) fromRemoved++
  }
  const fraction = moved / keys.length
  // Every key of the removed host moves, plus a little Maglev churn.
  assert.ok(moved >= fromRemoved)
  assert.ok(fraction > 0.08 && fraction < 0.15, `moved ${fraction}`)
})

test('MAGLEV honours table_size and picks at random without a hash', () => {
  const hs = hosts(1, 1)
  const lb = new Maglev(hs, 251)
  const per = [...lb.entriesPerHost().values()]
  assert.equal(per[0]! + per[1]!, 251)
  const seen = new Set<Host>()
  for (let i = 0; i < 100; i++) seen.add(lb.pick(undefined))
  assert.equal(seen.size, 2)
})
