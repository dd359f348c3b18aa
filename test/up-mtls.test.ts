/**
 * `loom up` with certificates: sidecars speak Istio's mutual TLS to each other with no user step (automatic mTLS),
 * the backend sees the client's SPIFFE ID in `x-forwarded-client-cert`, a STRICT workload refuses a plain-text
 * client on its inbound port and a PERMISSIVE one admits it.
 */
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { test } from 'node:test'
import { eventually } from './helpers/control.js'
import { startUp } from './helpers/up.js'
import { getWithHost } from './helpers/servers.js'

interface UpWorkload {
  name: string
  outboundPort: number
  inbound: Record<string, number>
}

const get = (port: number, host: string) => getWithHost(port, host)

test('loom up: mTLS between sidecars; STRICT refuses plain text, PERMISSIVE admits it', {
  timeout: 240_000,
}, async (t) => {
  const up = await startUp('up-mtls', 180_000)
  t.after(() => up.stop())
  const dataDir = up.dataDir
  const state = JSON.parse(readFileSync(join(dataDir, 'up.json'), 'utf8')) as {
    workloads: UpWorkload[]
    gateways: { ports: Record<string, number> }[]
  }
  const w = (name: string) => state.workloads.find((x) => x.name === name)!
  const client = w('client')

  // through the client's sidecar: mTLS, the backend's sidecar appends the client's SPIFFE ID
  for (const backend of ['strict', 'open']) {
    let last = ''
    await eventually(
      async () => {
        const r = await get(client.outboundPort, `${backend}.default.svc.cluster.local:9080`)
        last = `${r.status} ${r.body}`
        return r.status === 200 && r.body.includes('URI=spiffe://cluster.local/ns/default/sa/client')
      },
      30_000,
      `mTLS from client to ${backend} (last: ${last})`,
    )
  }

  // the gateway has its own identity too (Istio's: istio-system, istio-ingressgateway-service-account): the STRICT
  // backend admits it and sees its SPIFFE ID
  const edge = state.gateways[0]!.ports['80']!
  let last = ''
  await eventually(
    async () => {
      const r = await get(edge, 'anything.example.com')
      last = `${r.status} ${r.body}`
      return (
        r.status === 200 &&
        r.body.includes('URI=spiffe://cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account')
      )
    },
    30_000,
    `mTLS from the gateway to strict (last: ${last})`,
  )

  // plain text straight to the inbound ports: STRICT has no plain-text chain, PERMISSIVE serves it (no XFCC)
  await assert.rejects(get(w('strict').inbound['9080']!, 'strict.default.svc.cluster.local:9080'))
  const open = await get(w('open').inbound['9080']!, 'open.default.svc.cluster.local:9080')
  assert.equal(open.status, 200)
  assert.equal(open.body, 'xfcc=')
})
