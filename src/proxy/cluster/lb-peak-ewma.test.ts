import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { Host } from './host.js'
import { HostLatency, peakEwma, peakEwmaCost, peakEwmaSettings } from './lb/peak-ewma.js'

const hosts = (...weights: number[]) =>
  weights.map((weight, i) => new Host({ address: `10.0.0.${i + 1}`, port: 80, weight }))

const settings = { decayMs: 1_000, defaultRttMs: 30 }
const close = (a: number, b: number, what: string) => assert.ok(Math.abs(a - b) < 1e-6, `${what}: ${a} != ${b}`)

/** A random source that replays `values` in a loop. */
function replay(...values: number[]): () => number {
  let i = 0
  return () => values[i++ % values.length]!
}

describe('peak-EWMA estimate', () => {
  test('the first sample is the estimate; a higher one replaces it (the peak)', () => {
    const l = new HostLatency(settings)
    assert.ok(Number.isNaN(l.estimate(0)))
    l.observe(10, 0)
    assert.equal(l.estimate(0), 10)
    l.observe(50, 1)
    assert.equal(l.estimate(1), 50)
  })

  test('between samples it decays toward zero with the time constant', () => {
    const l = new HostLatency(settings)
    l.observe(20, 0)
    close(l.estimate(1_000), 20 * 0.36787944117144233, 'one tau later: 20/e')
    close(l.estimate(2_000), 20 * 0.1353352832366127, 'two tau later: 20/e^2')
  })

  test('a lower sample pulls the decayed estimate toward it by 1 - e^(-dt/tau)', () => {
    const l = new HostLatency(settings)
    l.observe(20, 0)
    l.observe(10, 100) // decayed: 20 e^-0.1 = 18.0967; blended: 18.0967 e^-0.1 + 10 (1 - e^-0.1)
    close(l.estimate(100), 17.32624088, 'blended')
  })

  test('failures raise the estimate, never lower it; a first failure counts as at least default_rtt', () => {
    const l = new HostLatency(settings)
    l.observeFailure(1, 0)
    assert.equal(l.estimate(0), 30)
    l.observeFailure(5, 0)
    assert.equal(l.estimate(0), 30)
    l.observeFailure(500, 0)
    assert.equal(l.estimate(0), 500)
  })

  test('settings: Linkerd defaults (decay 10 s, default 30 ms) or the configured durations', () => {
    assert.deepEqual(peakEwmaSettings({ '@type': 'type.googleapis.com/loom.config.lb.v1.PeakEwma' }), {
      decayMs: 10_000,
      defaultRttMs: 30,
    })
    assert.deepEqual(
      peakEwmaSettings({
        '@type': 'type.googleapis.com/loom.config.lb.v1.PeakEwma',
        decay_time: '2s',
        default_rtt: '0.005s',
      }),
      { decayMs: 2_000, defaultRttMs: 5 },
    )
  })
})

describe('peak-EWMA cost and selection (injected clock and random)', () => {
  test('cost = estimate * (in flight + 1) / weight; no sample: 0 while idle, a penalty once one is in flight', () => {
    const [h, heavy] = hosts(1, 2) as [Host, Host]
    assert.equal(peakEwmaCost(h, 0), 0)
    h.activeRequests = 1
    assert.ok(peakEwmaCost(h, 0) > 1e9, 'an unprobed host with a request in flight is the last choice')
    h.latency = new HostLatency(settings)
    h.latency.observe(10, 0)
    h.activeRequests = 2
    assert.equal(peakEwmaCost(h, 0), 30)
    heavy.latency = new HostLatency(settings)
    heavy.latency.observe(10, 0)
    assert.equal(peakEwmaCost(heavy, 0), 5)
  })

  test('of two hosts the faster one is chosen, whichever is drawn first', () => {
    const [fast, slow] = hosts(1, 1) as [Host, Host]
    const lb = peakEwma(settings, replay(0, 0, 0.9, 0.1), () => 0)([fast, slow])
    fast.latency!.observe(5, 0)
    slow.latency!.observe(25, 0)
    for (let i = 0; i < 10; i++) assert.equal(lb.pick(undefined), fast)
  })

  test('in-flight requests count: a fast host with 5 in flight loses to an idle slower one', () => {
    const [fast, slow] = hosts(1, 1) as [Host, Host]
    const lb = peakEwma(settings, replay(0.2, 0.7), () => 0)([fast, slow])
    fast.latency!.observe(5, 0)
    slow.latency!.observe(25, 0)
    fast.activeRequests = 4 // 5 * 5 = 25, a tie: the first drawn (fast) stays
    assert.equal(lb.pick(undefined), fast)
    fast.activeRequests = 5 // 30 > 25
    assert.equal(lb.pick(undefined), slow)
  })

  test('the two hosts drawn are distinct, and only they are compared', () => {
    const [a, b, c] = hosts(1, 1, 1) as [Host, Host, Host]
    const lb = peakEwma(settings, replay(0, 0), () => 0)([a, b, c]) // i = 0, j = 0 -> skips to 1
    a.latency!.observe(50, 0)
    b.latency!.observe(40, 0)
    c.latency!.observe(1, 0) // the best, but not drawn
    assert.equal(lb.pick(undefined), b)
    const lb2 = peakEwma(settings, replay(0.99, 0.99), () => 0)([a, b, c]) // i = 2, j = 1
    assert.equal(lb2.pick(undefined), c)
  })

  test('a new host is probed while idle, even when the others are faster than default_rtt; one request at a time', () => {
    const [old, fresh] = hosts(1, 1) as [Host, Host]
    const lb = peakEwma(settings, replay(0, 0), () => 0)([old, fresh])
    old.latency!.observe(5, 0)
    assert.equal(lb.pick(undefined), fresh)
    fresh.activeRequests = 1
    assert.equal(lb.pick(undefined), old)
  })

  test('a slow host left alone decays and is tried again', () => {
    let now = 0
    const [fast, slow] = hosts(1, 1) as [Host, Host]
    const lb = peakEwma(settings, replay(0, 0), () => now)([fast, slow])
    fast.latency!.observe(2, 0)
    slow.latency!.observe(20, 0)
    assert.equal(lb.pick(undefined), fast)
    fast.latency!.observe(2, 3_000) // the fast host keeps answering in 2 ms
    now = 3_000 // slow: 20 e^-3 = 0.996 ms, below 2
    assert.equal(lb.pick(undefined), slow)
  })

  test('a single host is always picked; estimates survive a rebuild', () => {
    const [only, other] = hosts(1, 1) as [Host, Host]
    const f = peakEwma(settings, Math.random, () => 0)
    assert.equal(f([only]).pick(undefined), only)
    const est = only.latency!
    f([only, other])
    assert.equal(only.latency, est)
  })
})
