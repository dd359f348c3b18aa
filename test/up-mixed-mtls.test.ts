/**
 * Automatic mTLS per endpoint: a service with one endpoint that has a sidecar (STRICT) and one that has none. The
 * client's cluster switches per endpoint (transport_socket_matches on the endpoints' EDS metadata, as Istio): every
 * request succeeds, the sidecar endpoint sees the client's SPIFFE ID in x-forwarded-client-cert, the plain one none.
 */
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { test } from 'node:test'
import { eventually } from './helpers/control.js'
import { startUp } from './helpers/up.js'
import { getWithHost } from './helpers/servers.js'

const get = (port: number, host: string) => getWithHost(port, host)

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
