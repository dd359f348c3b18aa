import assert from 'node:assert/strict'
import { test } from 'node:test'
import { Host } from '../cluster/host.js'
import { HostLatency } from '../cluster/lb/peak-ewma.js'
import { Headers } from './headers.js'
import { LatencySample } from './latency-sample.js'
import type { UpstreamCallbacks, UpstreamRequest } from './types.js'

function recorder(): UpstreamCallbacks & { calls: string[] } {
  const calls: string[] = []
  return {
    calls,
    onUpstreamHeaders: (status) => calls.push(`headers ${status}`),
    onUpstreamData: () => calls.push('data'),
    onUpstreamTrailers: () => calls.push('trailers'),
    onUpstreamReset: (reason) => calls.push(`reset ${reason}`),
    onUpstreamDrain: () => calls.push('drain'),
  }
}

const inner = (calls: string[]): UpstreamRequest => ({
  hostKey: 'h',
  sendData: () => true,
  sendTrailers: () => {},
  reset: () => calls.push('inner reset'),
  pauseResponse: () => {},
  resumeResponse: () => {},
})

function host(): Host {
  const h = new Host({ address: '10.0.0.1', port: 80 })
  h.latency = new HostLatency({ decayMs: 10_000, defaultRttMs: 30 })
  return h
}

test('the response headers give the host one latency sample, and everything passes through', async () => {
  const h = host()
  const cb = recorder()
  const s = new LatencySample(h, cb)
  s.inner = inner(cb.calls)
  await new Promise((r) => setTimeout(r, 15))
  s.onUpstreamHeaders(200, new Headers(), false)
  const est = h.latency!.estimate(performance.now())
  assert.ok(est >= 10 && est < 1000, `estimate ${est} ms`)
  s.onUpstreamData(Buffer.from('x'), true)
  s.onUpstreamReset('remote_reset', '') // after the answer: not a failure sample
  assert.ok(h.latency!.estimate(performance.now()) <= est)
  assert.deepEqual(cb.calls, ['headers 200', 'data', 'reset remote_reset'])
})

test('a failure before the headers, or the stream giving up, raises the estimate of an unmeasured host', () => {
  const h = host()
  const s = new LatencySample(h, recorder())
  s.onUpstreamReset('connect_failure', 'refused')
  assert.equal(h.latency!.estimate(performance.now()) >= 29, true, 'at least default_rtt')
  const h2 = host()
  const cb = recorder()
  const s2 = new LatencySample(h2, cb)
  s2.inner = inner(cb.calls)
  s2.reset()
  assert.ok(h2.latency!.sampled)
  assert.deepEqual(cb.calls, ['inner reset'])
})
