import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { Host } from './host.js'
import { leastRequest } from './lb/least-request.js'
import { roundRobin } from './lb/round-robin.js'
import { type SlowStart, slowStartFactor, slowStartSettings, withSlowStart } from './lb/slow-start.js'
import type { LbFactory } from './lb/types.js'

const hosts = (...weights: number[]) =>
  weights.map((weight, i) => new Host({ address: `10.0.0.${i + 1}`, port: 80, weight }))

const s10: SlowStart = { windowMs: 10_000, aggression: 1, minWeight: 0.1 }

function share(pick: () => Host, host: Host, n: number): number {
  let c = 0
  for (let i = 0; i < n; i++) if (pick() === host) c++
  return c / n
}

describe('slow start weight curve (Envoy: weight * max(min_weight_percent, time_factor^(1/aggression)))', () => {
  test('aggression 1 is linear over the window, floored at min_weight_percent', () => {
    assert.equal(slowStartFactor(0, s10), 0.1) // time_factor = 1 ms / 10 s, below the 10% floor
    assert.equal(slowStartFactor(500, s10), 0.1)
    assert.equal(slowStartFactor(2_500, s10), 0.25)
    assert.equal(slowStartFactor(5_000, s10), 0.5)
    assert.equal(slowStartFactor(9_000, s10), 0.9)
    assert.equal(slowStartFactor(10_000, s10), 1)
    assert.equal(slowStartFactor(60_000, s10), 1)
  })

  test('aggression above 1 ramps faster early (square root for 2), below 1 slower (square for 0.5)', () => {
    const a2 = { ...s10, aggression: 2 }
    assert.ok(Math.abs(slowStartFactor(2_500, a2) - 0.5) < 1e-12)
    assert.ok(Math.abs(slowStartFactor(4_900, a2) - 0.7) < 1e-12)
    const half = { ...s10, aggression: 0.5 }
    assert.ok(Math.abs(slowStartFactor(5_000, half) - 0.25) < 1e-12)
    assert.equal(slowStartFactor(2_000, half), 0.1) // 0.04, floored
  })

  test('min_weight_percent sets the floor', () => {
    assert.equal(slowStartFactor(1_000, { ...s10, minWeight: 0.5 }), 0.5)
    assert.equal(slowStartFactor(8_000, { ...s10, minWeight: 0.5 }), 0.8)
    assert.equal(slowStartFactor(0, { ...s10, minWeight: 0 }), 0.0001)
  })

  test('settings: Envoy defaults, zero or absent window is off, aggression that is not above 0 means 1.0', () => {
    assert.deepEqual(slowStartSettings({ slow_start_window: '30s' }), {
      windowMs: 30_000,
      aggression: 1,
      minWeight: 0.1,
    })
    assert.deepEqual(
      slowStartSettings({
        slow_start_window: '1.5s',
        aggression: { default_value: 1.5, runtime_key: 'x' },
        min_weight_percent: { value: 25 },
      }),
      { windowMs: 1_500, aggression: 1.5, minWeight: 0.25 },
    )
    assert.equal(slowStartSettings(undefined), null)
    assert.equal(slowStartSettings({}), null)
    assert.equal(slowStartSettings({ slow_start_window: '0s' }), null)
    assert.equal(slowStartSettings({ slow_start_window: '1s', aggression: { runtime_key: 'k' } })?.aggression, 1)
    assert.equal(slowStartSettings({ slow_start_window: '1s', aggression: { default_value: -2 } })?.aggression, 1)
  })
})

describe('slow start load balancing (deterministic clock)', () => {
  test('a host that just joined gets f / (1 + f) of the picks next to an old host, its fair share after the window', () => {
    let now = 100_000
    const [old, fresh] = hosts(1, 1) as [Host, Host]
    old.healthyAt = 0 // long past its window
    const lb = withSlowStart(roundRobin, s10, false, () => now)
    const picks = lb([old, fresh])
    assert.equal(fresh.healthyAt, 100_000, 'the first build stamps a host that has no time yet')
    const at0 = share(() => picks.pick(undefined), fresh, 11_000)
    assert.ok(Math.abs(at0 - 0.1 / 1.1) < 0.005, `share at 0 s: ${at0}`)
    now += 5_000
    // weights are re-evaluated as hosts are scheduled again: let the schedule catch up, then measure
    share(() => picks.pick(undefined), fresh, 100)
    const at5 = share(() => picks.pick(undefined), fresh, 15_000)
    assert.ok(Math.abs(at5 - 0.5 / 1.5) < 0.005, `share at 5 s: ${at5}`)
    now += 5_000
    const after = share(() => picks.pick(undefined), fresh, 10_000)
    assert.equal(after, 0.5, 'past the window the plain round robin alternates')
  })

  test('the share grows over the window as the clock moves', () => {
    let now = 50_000
    const [a, b, fresh] = hosts(1, 1, 1) as [Host, Host, Host]
    a.healthyAt = 0
    b.healthyAt = 0
    const lb = withSlowStart(roundRobin, s10, false, () => now)([a, b, fresh])
    const perSecond: number[] = []
    for (let s = 0; s < 10; s++) {
      let c = 0
      for (let i = 0; i < 3_000; i++) {
        now += 1000 / 3_000
        if (lb.pick(undefined) === fresh) c++
      }
      perSecond.push(c / 3_000)
    }
    for (let s = 1; s < 10; s++) assert.ok(perSecond[s]! > perSecond[s - 1]!, `share rises: ${perSecond.join(', ')}`)
    assert.ok(perSecond[0]! < 0.1, `first second: ${perSecond[0]}`)
    assert.ok(perSecond[9]! > 0.3, `last second: ${perSecond[9]}`)
  })

  test('no host in its window: the policy itself is built (slow start costs nothing)', () => {
    const hs = hosts(1, 1)
    for (const h of hs) h.healthyAt = 0
    const sentinel = { pick: () => hs[0]! }
    const inner: LbFactory = () => sentinel
    assert.equal(withSlowStart(inner, s10, false, () => 20_000)(hs), sentinel)
    assert.notEqual(withSlowStart(inner, s10, false, () => 5_000)(hs), sentinel)
  })

  test('a host keeps its healthyAt across rebuilds; a degraded host is not slowed', () => {
    let now = 1_000
    const [a, b] = hosts(1, 1) as [Host, Host]
    const f = withSlowStart(roundRobin, s10, false, () => now)
    f([a])
    now = 4_000
    f([a, b])
    assert.equal(a.healthyAt, 1_000)
    assert.equal(b.healthyAt, 4_000)
    const [old, degraded] = hosts(1, 1) as [Host, Host]
    old.healthyAt = 0
    degraded.healthStatus = 'DEGRADED'
    const lb = withSlowStart(roundRobin, s10, false, () => 100_000)([old, degraded])
    assert.ok(Number.isNaN(degraded.healthyAt))
    assert.ok(Math.abs(share(() => lb.pick(undefined), degraded, 10_000) - 0.5) < 0.01)
  })

  test('LEAST_REQUEST: the warming weight is weight / (active + 1) times the factor', () => {
    const [busy, fresh] = hosts(1, 1) as [Host, Host]
    busy.healthyAt = 0
    busy.activeRequests = 4 // 1/5 = 0.2
    fresh.healthyAt = 100_000
    const lb = withSlowStart(leastRequest(2), s10, true, () => 105_000)([busy, fresh])
    // fresh: 1 * 0.5 (5 s into its window) against busy: 0.2
    const s = share(() => lb.pick(undefined), fresh, 14_000)
    assert.ok(Math.abs(s - 0.5 / 0.7) < 0.005, `share ${s}`)
  })

  test('weighted hosts keep their proportions once warm', () => {
    let now = 0
    const [a, b] = hosts(3, 1) as [Host, Host]
    const lb = withSlowStart(roundRobin, s10, false, () => now)([a, b])
    now = 10_000
    const s = share(() => lb.pick(undefined), a, 8_000)
    assert.equal(s, 0.75)
  })
})
