/**
 * The share service over real gRPC: an XdsServer on a loopback port serving RateLimitShares, proxies' reporters
 * (each with its own set of limits, as separate processes would have), and raw clients for misbehaving ones.
 */
import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import { manifests } from '../translate/testdata/bookinfo.js'
import { ShareReporter } from '../../proxy/http/filters/global-ratelimit/reporter.js'
import { GlobalLimits, type LimitState } from '../../proxy/http/filters/global-ratelimit/shares.js'
import { rateLimitSharesClient, rateLimitSharesService } from '../../xds/ratelimit-service.js'
import { XdsServer } from '../../xds/server.js'
import { ShareServer } from './share-server.js'

const NAME = 'default/limit'
const WINDOW = 100

async function until(what: string, fn: () => boolean, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms
  while (!fn()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 10))
  }
}

describe('ShareServer', () => {
  let xds: XdsServer
  let shares: ShareServer
  let address = ''
  const reporters: ShareReporter[] = []

  before(async () => {
    xds = new XdsServer()
    shares = new ShareServer({ windowMs: WINDOW })
    xds.addService(rateLimitSharesService, shares.handlers())
    address = `127.0.0.1:${await xds.listen('127.0.0.1', 0)}`
    shares.setResources(
      manifests(`
apiVersion: loom.dev/v1alpha1
kind: GlobalRateLimit
metadata: { name: limit, namespace: default }
spec: { hosts: [svc], requestsPerSecond: 100 }
`),
    )
  })
  after(async () => {
    for (const r of reporters) r.close()
    shares.close()
    await xds.close(200)
  })

  function proxy(id: string): { state: LimitState; reporter: ShareReporter } {
    const limits = new GlobalLimits()
    const reporter = new ShareReporter({ server: address, nodeId: id, limits, windowMs: WINDOW }).attach()
    reporters.push(reporter)
    return { state: limits.get(NAME, 100, 100, 'KEEP_LAST_SHARE'), reporter }
  }

  test('shares follow demand, add up to the limit, and a proxy that leaves gives its share back', async () => {
    const a = proxy('a')
    const b = proxy('b')
    await until('both proxies sharing', () => a.state.proxies === 2 && b.state.proxies === 2)
    // a offers 200 req/s (mostly refused), b 10 req/s
    const load = setInterval(() => {
      a.state.denied += 20
      b.state.admitted += 1
    }, WINDOW)
    try {
      await until('shares by demand', () => b.state.bucket.rate < 20 && a.state.bucket.rate > 80)
      assert.ok(Math.abs(a.state.bucket.rate + b.state.bucket.rate - 100) < 1e-6)
      const status = shares.status()[0]!
      assert.equal(status.name, NAME)
      assert.deepEqual(
        status.proxies.map((p) => p.node),
        ['a', 'b'],
      )
      b.reporter.close()
      await until('a alone', () => a.state.bucket.rate === 100 && a.state.proxies === 1)
    } finally {
      clearInterval(load)
    }
  })

  test('a proxy that stops reporting loses its share after the expiry windows', async () => {
    const c = proxy('c')
    await until('c has a share', () => c.state.proxies >= 1)
    const silent = rateLimitSharesClient(address)
    const call = silent.StreamShares()
    const got: number[] = []
    call.on('data', (m: { shares?: { requests_per_second?: number }[] }) =>
      got.push(m.shares?.[0]?.requests_per_second ?? 0),
    )
    call.on('error', () => {})
    call.write({ node_id: 'silent', window_ms: 0, usage: [{ name: NAME, admitted: 0, denied: 0 }] })
    const proxiesNow = () => shares.status()[0]!.proxies.map((p) => p.node)
    await until('the silent one counted', () => proxiesNow().includes('silent'))
    await until('the silent one dropped', () => !proxiesNow().includes('silent'), 3000)
    const n = got.length
    await new Promise((r) => setTimeout(r, 3 * WINDOW))
    assert.equal(got.length, n, 'no more shares for a proxy that went silent')
    call.cancel()
    silent.close()
  })
})
