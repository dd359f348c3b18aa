import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import * as v from 'valibot'
import { RetryPolicy } from '../../config/envoy.js'
import { toConfigIssues } from '../../config/schema.js'
import { CompiledRetryPolicy } from './retry.js'

function issues(p: unknown): string[] {
  const r = v.safeParse(RetryPolicy, p)
  return r.success ? [] : toConfigIssues(r.issues).map((i) => `${i.path}: ${i.message}`)
}

describe('retry_policy', () => {
  it("Envoy's defaults: one retry, 25 ms base interval, 10 × base at most, one extra host pick", () => {
    const p = new CompiledRetryPolicy({ retry_on: '5xx' })
    assert.equal(p.numRetries, 1)
    assert.equal(p.baseIntervalMs, 25)
    assert.equal(p.maxIntervalMs, 250)
    assert.equal(p.hostSelectionAttempts, 1)
    assert.equal(p.perTryTimeoutMs, 0)
    assert.equal(p.previousHosts, false)
  })

  it('back-off: full jitter in [0, (2^n - 1) × base), capped at max_interval', () => {
    const p = new CompiledRetryPolicy({ retry_on: '5xx', retry_back_off: { base_interval: '0.1s' } })
    for (let i = 0; i < 200; i++) {
      const b1 = p.backOffMs(1)
      const b2 = p.backOffMs(2)
      const b9 = p.backOffMs(9)
      assert.ok(b1 >= 0 && b1 < 100, `${b1}`)
      assert.ok(b2 >= 0 && b2 < 300, `${b2}`)
      assert.ok(b9 >= 0 && b9 <= 1000, `${b9}`)
    }
  })

  it('which responses each condition retries', () => {
    const on = (retryOn: string, codes?: number[]) =>
      new CompiledRetryPolicy({ retry_on: retryOn, ...(codes === undefined ? {} : { retriable_status_codes: codes }) })
    assert.equal(on('5xx').retriableResponse(500, undefined), true)
    assert.equal(on('5xx').retriableResponse(404, undefined), false)
    assert.equal(on('gateway-error').retriableResponse(500, undefined), false)
    assert.equal(on('gateway-error').retriableResponse(504, undefined), true)
    assert.equal(on('retriable-4xx').retriableResponse(409, undefined), true)
    assert.equal(on('retriable-4xx').retriableResponse(429, undefined), false)
    assert.equal(on('retriable-status-codes', [429]).retriableResponse(429, undefined), true)
    // the codes alone do nothing without the condition (as Envoy)
    assert.equal(on('5xx', [429]).retriableResponse(429, undefined), false)
    assert.equal(on('unavailable').retriableResponse(200, '14'), true)
    assert.equal(on('unavailable').retriableResponse(200, '13'), false)
    assert.equal(on('internal,cancelled').retriableResponse(200, '1'), true)
    assert.equal(on('deadline-exceeded').retriableResponse(200, '4'), true)
    assert.equal(on('resource-exhausted').retriableResponse(200, '8'), true)
  })

  it('which resets each condition retries; never a pool overflow; a per-try timeout like a reset', () => {
    const on = (retryOn: string) => new CompiledRetryPolicy({ retry_on: retryOn })
    for (const c of ['5xx', 'gateway-error', 'reset']) {
      assert.equal(on(c).retriableReset('remote_reset'), true, c)
      assert.equal(on(c).retriableReset(null), true, c)
      assert.equal(on(c).retriableReset('overflow'), false, c)
    }
    assert.equal(on('connect-failure').retriableReset('connect_failure'), true)
    assert.equal(on('connect-failure').retriableReset('connect_timeout'), true)
    assert.equal(on('connect-failure').retriableReset('connection_termination'), false)
    assert.equal(on('connect-failure').retriableReset(null), false)
    assert.equal(on('refused-stream').retriableReset('refused_stream'), true)
    assert.equal(on('refused-stream').retriableReset('remote_reset'), false)
    assert.equal(on('retriable-4xx').retriableReset('remote_reset'), false)
  })

  it('the schema: unknown conditions and fields are rejected with their path', () => {
    assert.deepEqual(issues({ retry_on: '5xx, gateway-error,connect-failure', num_retries: 3 }), [])
    assert.deepEqual(issues({ retry_on: '5xx,retriable-headers' }), [
      'retry_on: unsupported retry condition "retriable-headers" (supported: 5xx, gateway-error, reset, connect-failure, retriable-4xx, refused-stream, retriable-status-codes, cancelled, deadline-exceeded, internal, resource-exhausted, unavailable)',
    ])
    assert.equal(issues({ retry_priority: { name: 'x' } }).length, 1)
    assert.match(issues({ retry_priority: { name: 'x' } })[0]!, /^retry_priority: /)
    assert.match(
      issues({ retry_host_predicate: [{ name: 'envoy.retry_host_predicates.omit_canary_hosts' }] })[0]!,
      /^retry_host_predicate\[0\]\.name: /,
    )
    assert.deepEqual(issues({ host_selection_retry_max_attempts: '5' }), [])
  })
})
