/** The global rate limit filter's parts: the share bucket, a limit's state when shares stop coming, the filter. */
import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { TypeUrls } from '../../../../config/type-urls.js'
import { HttpConnManagerStats } from '../../../stats/stats.js'
import { Headers } from '../../headers.js'
import type { RequestHead } from '../../types.js'
import { CONTINUE, type FilterCallbacks, STOP } from '../filter.js'
import { GlobalRateLimitFilterFactory, GlobalRateLimitPolicy } from './global-ratelimit.js'
import { ALLOW_ALL, DENY_ALL, ENFORCE, LimitState, ShareBucket } from './shares.js'

describe('ShareBucket', () => {
  test('starts full, refills continuously at its rate, up to its capacity', () => {
    const b = new ShareBucket(10, 2, 0)
    assert.deepEqual([b.consume(0), b.consume(0), b.consume(0)], [true, true, false])
    assert.equal(b.consume(99), false, 'under one token after 99 ms at 10/s')
    assert.equal(b.consume(100), true, 'one token after 100 ms')
    assert.equal(b.consume(10_000), true)
    assert.equal(b.consume(10_000), true)
    assert.equal(b.consume(10_000), false, 'capped at the capacity')
  })

  test('a new share changes the rate and caps the tokens on hand', () => {
    const b = new ShareBucket(100, 100, 0)
    b.set(1, 3, 0)
    assert.equal(b.tokens, 3)
    for (let i = 0; i < 3; i++) assert.ok(b.consume(0))
    assert.equal(b.consume(500), false)
    assert.equal(b.resetSeconds(500), 1)
    assert.ok(b.consume(1000))
    b.set(0.1, 0.2, 1000)
    assert.equal(b.capacity, 1, 'a capacity under one token is one token')
  })
})

describe('LimitState when shares stop coming', () => {
  const cases: [string, 'KEEP_LAST_SHARE' | 'ALLOW_ALL' | 'DENY_ALL', number][] = [
    ['KeepLastShare keeps enforcing', 'KEEP_LAST_SHARE', ENFORCE],
    ['AllowAll stops limiting', 'ALLOW_ALL', ALLOW_ALL],
    ['DenyAll refuses everything', 'DENY_ALL', DENY_ALL],
  ]
  for (const [name, mode, after] of cases) {
    test(name, () => {
      const s = new LimitState('ns/l', 60, 60, mode, 0)
      assert.equal(s.bucket.rate, 60, 'before any share: the whole limit')
      s.assign(20, 20, 3, 3000, 1000)
      s.checkExpiry(4000, 3000, 0)
      assert.equal(s.mode, ENFORCE, 'still valid')
      s.checkExpiry(4001, 3000, 0)
      assert.equal(s.mode, after)
      assert.equal(s.bucket.rate, 20, 'the last share stays in the bucket')
      s.assign(30, 30, 2, 3000, 5000)
      assert.equal(s.mode, ENFORCE, 'a new share restores enforcement')
    })
  }
  test('before any share, the mode applies once the default validity has passed since the limit appeared', () => {
    const s = new LimitState('ns/l', 60, 60, 'DENY_ALL', 0)
    s.checkExpiry(2000, 3000, 0)
    assert.equal(s.mode, ENFORCE)
    s.checkExpiry(3001, 3000, 0)
    assert.equal(s.mode, DENY_ALL)
  })
})

class Recorder implements FilterCallbacks {
  head: RequestHead | null = null
  route = null
  sourceIp = '127.0.0.1'
  downstreamSocket = null
  setMetadata(): void {}
  metadata(): undefined {
    return undefined
  }
  replies: { status: number; flag: string; reason: string; text: string | null; headers: Headers }[] = []
  continueDecoding(): void {}
  sendLocalReply(status: number, flag: string, reason: string, text: string | null, headers?: Headers): void {
    this.replies.push({ status, flag, reason, text, headers: headers ?? new Headers() })
  }
  addFlag(): void {}
}

function head(method: string, path: string, headers: string[] = []): RequestHead {
  return {
    method,
    path,
    authority: 'svc',
    scheme: 'http',
    headers: new Headers(headers),
    upgrade: null,
    protocol: 'HTTP/1.1',
  }
}

describe('the global rate limit filter', () => {
  const stats = new HttpConnManagerStats('test')
  const factory = new GlobalRateLimitFilterFactory(
    'loom.filters.http.global_ratelimit',
    { '@type': TypeUrls.globalRateLimit },
    stats,
  )
  const policy = (name: string, extra: Record<string, unknown> = {}) => {
    const issues: { path: string; message: string }[] = []
    const p = new GlobalRateLimitPolicy(
      {
        '@type': TypeUrls.globalRateLimitPerRoute,
        limits: [{ name, requests_per_second: 1, burst: 2, ...extra }],
      },
      'x',
      issues,
    )
    assert.deepEqual(issues, [])
    return p
  }

  test('a route without limits gets no filter object', () => {
    assert.equal(factory.create(new Recorder(), undefined), null)
  })

  test('within the share: continue; past it: 429 RL with the x-ratelimit headers and the limit named', () => {
    const p = policy('t/plain')
    const results: number[] = []
    const cb = new Recorder()
    for (let i = 0; i < 3; i++) results.push(factory.create(cb, p)!.decodeHeaders!(head('GET', '/'), true))
    assert.deepEqual(results, [CONTINUE, CONTINUE, STOP])
    assert.equal(cb.replies.length, 1)
    const r = cb.replies[0]!
    assert.deepEqual(
      [r.status, r.flag, r.reason, r.text],
      [429, 'RL', 'global_rate_limited:t/plain', 'global_rate_limited'],
    )
    assert.equal(r.headers.get('x-envoy-ratelimited'), 'true')
    assert.equal(r.headers.get('x-ratelimit-limit'), '1, 1;w=1')
    assert.equal(r.headers.get('x-ratelimit-remaining'), '0')
    assert.equal(r.headers.get('x-ratelimit-reset'), '1')
    const s = p.limits[0]!.state
    assert.deepEqual(s.take(), { admitted: 2, denied: 1 })
  })

  test('only matching requests count; an inverted match counts the others', () => {
    const headers = [
      { name: ':method', string_match: { exact: 'POST' } },
      { name: 'x-tenant', string_match: { exact: 'free' } },
    ]
    const p = policy('t/match', { headers })
    const cb = new Recorder()
    const run = (h: RequestHead) => factory.create(cb, p)!.decodeHeaders!(h, true)
    for (let i = 0; i < 5; i++) assert.equal(run(head('GET', '/', ['x-tenant', 'free'])), CONTINUE)
    for (let i = 0; i < 5; i++) assert.equal(run(head('POST', '/', ['x-tenant', 'paid'])), CONTINUE)
    assert.equal(run(head('POST', '/', ['x-tenant', 'free'])), CONTINUE)
    assert.equal(run(head('POST', '/', ['x-tenant', 'free'])), CONTINUE)
    assert.equal(run(head('POST', '/', ['x-tenant', 'free'])), STOP)
    const inv = policy('t/inverted', {
      headers: [{ name: ':path', string_match: { prefix: '/health' } }],
      invert_match: true,
    })
    const run2 = (h: RequestHead) => factory.create(cb, inv)!.decodeHeaders!(h, true)
    for (let i = 0; i < 5; i++) assert.equal(run2(head('GET', '/healthz')), CONTINUE)
    assert.deepEqual(
      [run2(head('GET', '/a')), run2(head('GET', '/a')), run2(head('GET', '/a'))],
      [CONTINUE, CONTINUE, STOP],
    )
  })

  test('ALLOW_ALL and DENY_ALL modes', () => {
    const p = policy('t/modes')
    const s = p.limits[0]!.state
    const cb = new Recorder()
    s.mode = ALLOW_ALL
    for (let i = 0; i < 10; i++) assert.equal(factory.create(cb, p)!.decodeHeaders!(head('GET', '/'), true), CONTINUE)
    s.mode = DENY_ALL
    assert.equal(factory.create(cb, p)!.decodeHeaders!(head('GET', '/'), true), STOP)
    assert.deepEqual(s.take(), { admitted: 10, denied: 1 })
  })

  test('a limit listed twice is an error at its name', () => {
    const issues: { path: string; message: string }[] = []
    new GlobalRateLimitPolicy(
      {
        '@type': TypeUrls.globalRateLimitPerRoute,
        limits: [
          { name: 't/dup', requests_per_second: 1 },
          { name: 't/dup', requests_per_second: 1 },
        ],
      },
      'vh',
      issues,
    )
    assert.deepEqual(issues, [{ path: 'vh.limits[1].name', message: 'limit "t/dup" is listed twice' }])
  })
})
