import assert from 'node:assert/strict'
import { test } from 'node:test'
import { Host } from './host.js'
import { random } from './lb/random.js'

const hosts = (...weights: number[]) =>
  weights.map((weight, i) => new Host({ address: `10.0.0.${i + 1}`, port: 80, weight }))

function shares(hs: Host[], n: number): number[] {
  const lb = random(hs)
  const c = new Map<Host, number>()
  for (let i = 0; i < n; i++) {
    const h = lb.pick(undefined)
    c.set(h, (c.get(h) ?? 0) + 1)
  }
  return hs.map((h) => (c.get(h) ?? 0) / n)
}

test('RANDOM with equal weights spreads evenly', () => {
  const s = shares(hosts(1, 1, 1, 1), 100_000)
  for (const x of s) assert.ok(Math.abs(x - 0.25) < 0.015, `share ${x}`)
})

test('RANDOM with unequal weights picks in proportion to weight', () => {
  const s = shares(hosts(1, 3, 6), 100_000)
  assert.ok(Math.abs(s[0]! - 0.1) < 0.01, `share ${s[0]}`)
  assert.ok(Math.abs(s[1]! - 0.3) < 0.015, `share ${s[1]}`)
  assert.ok(Math.abs(s[2]! - 0.6) < 0.015, `share ${s[2]}`)
})
