/**
 * The tap hub on a real admin-style HTTP server and client: filters, a reader that stops reading (lines dropped and
 * counted, not buffered without end), max_rps, and a client that goes away (the hub goes inactive).
 */
import assert from 'node:assert/strict'
import * as http from 'node:http'
import type { AddressInfo } from 'node:net'
import { after, before, describe, test } from 'node:test'
import { destinationService, parseTapQuery, TapHub, tapMatches } from './tap.js'

const entry = (over: Record<string, unknown> = {}) => ({
  method: 'GET',
  path: '/reviews/0',
  authority: 'reviews:9080',
  response_code: 200,
  upstream_cluster: 'outbound|9080|v2|reviews.default.svc.cluster.local',
  upstream_host: '127.0.0.1:1234',
  downstream_remote_address: '127.0.0.1',
  ...over,
})

async function until(cond: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms
  while (!cond()) {
    if (Date.now() > end) throw new Error('timed out')
    await new Promise((r) => setTimeout(r, 10))
  }
}

test('filters: method, path prefix, authority with or without port, destination service, direction', () => {
  const f = (q: string) => {
    const r = parseTapQuery(new URLSearchParams(q))
    assert.equal(typeof r, 'object', String(r))
    return r as Exclude<typeof r, string>
  }
  const e = entry()
  assert.equal(tapMatches(f('method=get'), 'outbound', e), true)
  assert.equal(tapMatches(f('method=POST'), 'outbound', e), false)
  assert.equal(tapMatches(f('path=/rev'), 'outbound', e), true)
  assert.equal(tapMatches(f('path=/ratings'), 'outbound', e), false)
  assert.equal(tapMatches(f('authority=reviews'), 'outbound', e), true)
  assert.equal(tapMatches(f('authority=reviews:9080'), 'outbound', e), true)
  assert.equal(tapMatches(f('authority=ratings'), 'outbound', e), false)
  assert.equal(tapMatches(f('to=reviews'), 'outbound', e), true)
  assert.equal(tapMatches(f('to=reviews.default.svc.cluster.local'), 'outbound', e), true)
  assert.equal(tapMatches(f('to=rev'), 'outbound', e), false)
  assert.equal(tapMatches(f('direction=inbound'), 'outbound', e), false)
  // inbound: the cluster is the local one, the authority names the service
  assert.equal(destinationService(entry({ upstream_cluster: 'inbound|9080||' })), 'reviews')
  assert.equal(parseTapQuery(new URLSearchParams('max=-1')), 'max must be a whole number, got "-1"')
  assert.equal(parseTapQuery(new URLSearchParams('direction=up')), 'direction must be inbound or outbound, got "up"')
})

describe('the tap stream', () => {
  const hub = new TapHub(() => 'spiffe://cluster.local/ns/default/sa/me')
  let server: http.Server
  let port = 0
  before(async () => {
    server = http.createServer((req, res) => hub.serve(req, res, new URL(req.url!, 'http://x').searchParams))
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
    port = (server.address() as AddressInfo).port
  })
  after(() => {
    server.closeAllConnections()
    server.close()
  })

  const open = (q: string) =>
    new Promise<http.IncomingMessage>((resolve, reject) =>
      http.get({ host: '127.0.0.1', port, path: `/tap?${q}`, agent: false }, resolve).on('error', reject),
    )

  test('a reader that stops reading: lines are dropped and counted, then reported when it reads again', async () => {
    const res = await open('')
    await until(() => hub.active)
    res.pause()
    // far more than the buffer and the sockets hold: each line is over 100 KiB
    const big = 'y'.repeat(100 * 1024)
    for (let i = 0; i < 200; i++) hub.publish('outbound', entry({ path: `/big/${i}`, user_agent: big }))
    const lines: Record<string, unknown>[] = []
    let partial = ''
    res.setEncoding('utf8')
    res.on('data', (c: string) => {
      const parts = (partial + c).split('\n')
      partial = parts.pop()!
      for (const l of parts) lines.push(JSON.parse(l) as Record<string, unknown>)
    })
    res.resume()
    // the next request after the reader caught up brings the report of what was lost
    await until(() => lines.filter((l) => l.type === 'request').length > 0)
    await new Promise((r) => setTimeout(r, 200))
    hub.publish('outbound', entry({ path: '/after' }))
    await until(() => lines.some((l) => l.path === '/after'))
    const got = lines.filter((l) => l.type === 'request').length
    const dropped = lines.filter((l) => l.type === 'dropped').reduce((n, l) => n + (l.count as number), 0)
    assert.ok(dropped > 0, 'some were dropped')
    assert.equal(got + dropped, 201, `${got} sent + ${dropped} dropped`)
    assert.ok(got < 100, `only what fits was kept (${got})`)
    const first = lines.find((l) => l.type === 'request')!
    assert.equal(first.direction, 'outbound')
    assert.equal(first.source, 'spiffe://cluster.local/ns/default/sa/me')
    assert.equal(first.destination, '127.0.0.1:1234')
    res.destroy()
    await until(() => !hub.active)
  })

  test('max_rps: past the limit in a second, requests are skipped and counted; a client gone leaves no tap', async () => {
    const res = await open('max_rps=3')
    await until(() => hub.active)
    let text = ''
    res.setEncoding('utf8')
    res.on('data', (c: string) => (text += c))
    for (let i = 0; i < 10; i++) hub.publish('inbound', entry({ path: `/r/${i}` }))
    await until(() => text.split('\n').filter((l) => l.includes('"type":"request"')).length === 3)
    // the count of skipped lines comes with the next line written
    await new Promise((r) => setTimeout(r, 1100))
    hub.publish('inbound', entry({ path: '/later' }))
    await until(() => text.includes('/later'))
    assert.match(text, /\{"type":"dropped","count":7,"reason":"max_rps"\}/)
    res.destroy()
    await until(() => !hub.active)
  })
})
