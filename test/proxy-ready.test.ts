/**
 * When a `loom proxy --xds` says it is ready: `/ready` answers 200 (LIVE) only once the first config from the control
 * plane is in place and every secret it names is there, as Envoy's init manager holds a server back. A real
 * `loom control` behind a TCP relay that refuses connections until the test lets them through, and a sidecar whose
 * inbound mTLS listener needs the certificate its identity token gets it.
 */
import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import { type Control, eventually, spawnLoom, startControl, tokenFile } from './helpers/control.js'
import { tcpRelay } from './helpers/relay.js'
import { freePort } from './helpers/servers.js'

describe('a proxy is ready once its first config and secrets are in place', { timeout: 90_000 }, () => {
  let cp: Control
  before(async () => {
    cp = await startControl()
  })
  after(async () => {
    await cp?.stop()
  })

  const ready = async (admin: string) => {
    const r = await fetch(`http://${admin}/ready`)
    return { status: r.status, state: (await r.text()).trim() }
  }

  test('INITIALIZING while the control plane is out of reach, LIVE once its config arrives', async (t) => {
    const relay = await tcpRelay(cp.xds)
    relay.cut(true)
    t.after(() => relay.close())
    const outbound = `OUTBOUND_PORT=${await freePort()}`
    const proxy = await spawnLoom([
      'proxy',
      '--xds',
      relay.address,
      '--admin',
      '127.0.0.1:0',
      '--node',
      'gated',
      '--metadata',
      outbound,
    ])
    t.after(() => proxy.stop())
    const admin = String(proxy.ready.admin)
    // the proxy runs (its admin answers) but has nothing from the control plane: not ready, and stays so
    assert.deepEqual(await ready(admin), { status: 503, state: 'INITIALIZING' })
    await eventually(async () => /control plane disconnected/.test(proxy.stderr()), 15_000, 'a refused connection')
    assert.deepEqual(await ready(admin), { status: 503, state: 'INITIALIZING' })
    relay.cut(false)
    await eventually(async () => (await ready(admin)).status === 200, 30_000, 'LIVE')
    assert.equal((await ready(admin)).state, 'LIVE')
    assert.match(proxy.stderr(), /"msg":"initial config in place"/)
  })

  test('a sidecar with an inbound mTLS listener is LIVE only with its certificate', async (t) => {
    const inbound = await freePort()
    const res = await fetch(`http://${cp.api}/api/v1/workloads`, {
      method: 'POST',
      body: JSON.stringify({
        name: 'ready-v1',
        namespace: 'default',
        address: '127.0.0.1',
        ports: [{ name: 'http', number: inbound, servicePort: 9080 }],
        labels: { app: 'ready', version: 'v1' },
        serviceAccount: 'ready',
        ttlSeconds: 600,
      }),
    })
    assert.equal(res.status, 200, await res.text())
    const file = await tokenFile(cp, 'default', 'ready')
    const proxy = await spawnLoom([
      'proxy',
      '--xds',
      cp.xds,
      '--admin',
      '127.0.0.1:0',
      '--labels',
      'app=ready,version=v1',
      '--service-account',
      'ready',
      '--identity-token-file',
      file,
      '--metadata',
      `OUTBOUND_PORT=${await freePort()}`,
    ])
    t.after(() => proxy.stop())
    const admin = String(proxy.ready.admin)
    // from the first LIVE answer on, the certificate is there and the config names it
    await eventually(async () => (await ready(admin)).status === 200, 30_000, 'LIVE')
    const certs = (await (await fetch(`http://${admin}/certs`)).json()) as { identity?: { spiffe_id: string } | null }
    assert.equal(certs.identity?.spiffe_id, 'spiffe://cluster.local/ns/default/sa/ready')
    const dump = JSON.stringify(await (await fetch(`http://${admin}/config_dump`)).json())
    assert.match(dump, /"name":"default"/, 'the config names the certificate')
  })
})
