/**
 * Automatic mTLS per endpoint: a service with one endpoint that has a sidecar (STRICT) and one that has none. The
 * client's cluster switches per endpoint (transport_socket_matches on the endpoints' EDS metadata, as Istio): every
 * request succeeds, the sidecar endpoint sees the client's SPIFFE ID in x-forwarded-client-cert, the plain one none.
 */
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import * as http from 'node:http'
import { join } from 'node:path'
import { test } from 'node:test'
import { eventually } from './helpers/control.js'
import { startUp } from './helpers/up.js'

/** A GET on 127.0.0.1:port with the given Host; resolves with status and body, rejects on a connection error. */
function get(port: number, host: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path: '/', headers: { host }, agent: false }, (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (d) => (body += d))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }))
      res.on('error', reject)
    })
    req.setTimeout(10_000, () => req.destroy(new Error('timeout')))
    req.on('error', reject)
    req.end()
  })
}

test('loom up: one service, a sidecar endpoint (mTLS, XFCC) and a plain one (plain text), every request served', {
  timeout: 240_000,
}, async (t) => {
  const up = await startUp('up-mixed-mtls', 180_000)
  t.after(() => up.stop())
  const state = JSON.parse(readFileSync(join(up.dataDir, 'up.json'), 'utf8')) as {
    workloads: { name: string; outboundPort: number }[]
  }
  const client = state.workloads.find((w) => w.name === 'client')!
  const seen = new Map<string, string>()
  await eventually(
    async () => {
      const r = await get(client.outboundPort, 'mixed.default.svc.cluster.local:9080').catch((e: Error) => ({
        status: 0,
        body: e.message,
      }))
      // the mesh may still be starting (no route or endpoints yet)
      if (r.status === 200) seen.set(r.body.split(' ')[0]!, r.body)
      return seen.has('meshed') && seen.has('plain')
    },
    60_000,
    'both endpoints answer',
  )
  // once both are known, every request succeeds whichever endpoint it reaches
  for (let i = 0; i < 20; i++) {
    const r = await get(client.outboundPort, 'mixed.default.svc.cluster.local:9080')
    assert.equal(r.status, 200, r.body)
    seen.set(r.body.split(' ')[0]!, r.body)
  }
  assert.match(seen.get('meshed')!, /^meshed xfcc=.*URI=spiffe:\/\/cluster\.local\/ns\/default\/sa\/client/)
  assert.equal(seen.get('plain'), 'plain xfcc=')
})
