import assert from 'node:assert/strict'
import { test } from 'node:test'
import { Host } from './host.js'
import { roundRobin } from './lb/round-robin.js'

const hosts = (...weights: number[]) =>
  weights.map((weight, i) => new Host({ address: `10.0.0.${i + 1}`, port: 80, weight }))

function counts(pick: () => Host, n: number): Map<Host, number> {
  const out = new Map<Host, number>()
  for (let i = 0; i < n; i++) {
    const h = pick()
    out.set(h, (out.get(h) ?? 0) + 1)
  }
  return out
}

test('ROUND_ROBIN with equal weights rotates through every host in turn', () => {
  const hs = hosts(1, 1, 1)
  const lb = roundRobin(hs)
  const first = lb.pick(undefined)
  const start = hs.indexOf(first)
  for (let i = 1; i < 30; i++) assert.equal(lb.pick(undefined), hs[(start + i) % 3])
  const c = counts(() => lb.pick(undefined), 30_000)
  for (const h of hs) assert.equal(c.get(h), 10_000)
})

test('ROUND_ROBIN with unequal weights picks in proportion (EDF), exactly over a period', () => {
  const hs = hosts(1, 2, 3)
  const lb = roundRobin(hs)
  const c = counts(() => lb.pick(undefined), 60_000)
  assert.ok(Math.abs(c.get(hs[0]!)! - 10_000) <= 3)
  assert.ok(Math.abs(c.get(hs[1]!)! - 20_000) <= 3)
  assert.ok(Math.abs(c.get(hs[2]!)! - 30_000) <= 3)
})

test('weighted ROUND_ROBIN interleaves rather than sending runs to the heaviest host', () => {
  const hs = hosts(1, 4)
  const lb = roundRobin(hs)
  let run = 0
  let longest = 0
  for (let i = 0; i < 1000; i++) {
    run = lb.pick(undefined) === hs[1] ? run + 1 : 0
    longest = Math.max(longest, run)
  }
  assert.ok(longest <= 4, `longest run ${longest}`)
})

test('ROUND_ROBIN with one host always returns it', () => {
  const hs = hosts(7)
  const lb = roundRobin(hs)
  for (let i = 0; i < 10; i++) assert.equal(lb.pick(undefined), hs[0])
})
