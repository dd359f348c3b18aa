import assert from 'node:assert/strict'
import { test } from 'node:test'
import { Host } from './host.js'
import { leastRequest } from './lb/least-request.js'

const hosts = (...weights: number[]) =>
  weights.map((weight, i) => new Host({ address: `10.0.0.${i + 1}`, port: 80, weight }))

function shares(pick: () => Host, hs: Host[], n: number): number[] {
  const c = new Map<Host, number>()
  for (let i = 0; i < n; i++) {
    const h = pick()
    c.set(h, (c.get(h) ?? 0) + 1)
  }
  return hs.map((h) => (c.get(h) ?? 0) / n)
}

test('LEAST_REQUEST (equal weights) spreads evenly when all hosts are idle', () => {
  const hs = hosts(1, 1, 1)
  const lb = leastRequest()(hs)
  for (const s of shares(() => lb.pick(undefined), hs, 60_000)) assert.ok(Math.abs(s - 1 / 3) < 0.02, `share ${s}`)
})

test('LEAST_REQUEST prefers the idle host: P2C gives it 1 - (2/3)^2 of picks, choice_count 3 gives 1 - (2/3)^3', () => {
  const hs = hosts(1, 1, 1)
  hs[0]!.activeRequests = 5
  hs[1]!.activeRequests = 5
  const two = leastRequest(2)(hs)
  const s2 = shares(() => two.pick(undefined), hs, 60_000)[2]!
  assert.ok(Math.abs(s2 - 5 / 9) < 0.02, `share ${s2}`)
  const three = leastRequest(3)(hs)
  const s3 = shares(() => three.pick(undefined), hs, 60_000)[2]!
  assert.ok(Math.abs(s3 - 19 / 27) < 0.02, `share ${s3}`)
})

test('LEAST_REQUEST keeps load even when requests stay open', () => {
  const hs = hosts(1, 1, 1, 1)
  const lb = leastRequest()(hs)
  // Requests that never finish: the LB must keep the in-flight counts close together.
  for (let i = 0; i < 4000; i++) lb.pick(undefined).activeRequests++
  const active = hs.map((h) => h.activeRequests)
  assert.ok(Math.max(...active) - Math.min(...active) <= 20, `active ${active}`)
})

test('weighted LEAST_REQUEST picks by weight when idle and by weight / (active + 1) under load', () => {
  const hs = hosts(1, 3)
  const lb = leastRequest()(hs)
  const idle = shares(() => lb.pick(undefined), hs, 40_000)
  assert.ok(Math.abs(idle[1]! - 0.75) < 0.01, `share ${idle[1]}`)
  // Host 1: 3 / (5 + 1) = 0.5 against host 0: 1 / 1 = 1 -> host 0 gets 2/3.
  hs[1]!.activeRequests = 5
  const busy = leastRequest()(hs)
  const loaded = shares(() => busy.pick(undefined), hs, 40_000)
  assert.ok(Math.abs(loaded[0]! - 2 / 3) < 0.01, `share ${loaded[0]}`)
})
