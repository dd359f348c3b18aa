/**
 * A mesh run by hand: `loom control`, a backend that registers itself over the API (with a TTL, then heartbeats),
 * and a `loom proxy` sidecar that calls it. The control plane is killed (SIGKILL) and started again on the same
 * addresses: with the same data dir the registration is back before the next heartbeat; with its data dir lost, a
 * heartbeat that carries its registration registers the workload again. Either way the route through the sidecar
 * answers again without anyone registering by hand.
 */
import assert from 'node:assert/strict'
import { rmSync } from 'node:fs'
import { join } from 'node:path'
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { after, before, describe, test } from 'node:test'
import { eventually, type Proc, spawnLoom, startSidecar } from './helpers/control.js'
import { type Backend, freePort, startBackend, getWithHost } from './helpers/servers.js'

const get = (port: number, host: string) => getWithHost(port, host, '/hello')

describe('self-registered workloads across a control plane restart', { timeout: 180_000 }, () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'loom-reg-'))
  let cp: Proc
  let api = ''
  let xds = ''
  let sidecar: Proc
  let backend: Backend
  let out = 0
  let registration: Record<string, unknown>

  const startControl = async (apiAddr = '127.0.0.1:0', xdsAddr = '127.0.0.1:0') => {
    const p = await spawnLoom([
      'control',
      '--data-dir',
      dataDir,
      '--api',
      apiAddr,
      '--xds',
      xdsAddr,
      '--xds-tls',
      'off',
    ])
    api = String(p.ready.api)
    xds = String(p.ready.xds)
    return p
  }
  /** one heartbeat, as a workload's own loop sends it: bare, or carrying its registration */
  const heartbeat = async (carry: boolean): Promise<number> => {
    const r = await fetch(`http://${api}/api/v1/workloads/default/hello-1/heartbeat`, {
      method: 'POST',
      body: JSON.stringify(carry ? { healthy: true, registration } : { healthy: true }),
    })
    await r.arrayBuffer()
    return r.status
  }
  /** what the route through the sidecar last answered, for the failure message */
  let lastAnswer = 'nothing yet'
  const routeAnswers = async () => {
    const r = await get(out, 'hello:8080').catch((e: Error) => ({ status: 0, body: e.message }))
    lastAnswer = `${r.status} ${r.body.slice(0, 200)}`
    return r.status === 200 && r.body.includes('/hello')
  }
  /**
   * The sidecar is connected to the control plane running now and has ACKed its config, routes included. The API's
   * `synced` needs at least one type sent and every type ACKed; a stream that has just opened lists no type yet (and
   * "every type" of none is vacuously true), and one whose requests are still arriving may list only some.
   */
  const resynced = () =>
    eventually(
      async () => {
        const nodes = (await (await fetch(`http://${api}/api/v1/proxy-status`)).json()) as {
          synced: boolean
          perType: { typeUrl: string }[]
        }[]
        return (
          nodes.length === 1 &&
          nodes[0]!.synced &&
          nodes[0]!.perType.some((t) => t.typeUrl === 'type.googleapis.com/envoy.config.route.v3.RouteConfiguration')
        )
      },
      20_000,
      'the sidecar to reconnect and resync',
    )

  before(async () => {
    backend = await startBackend()
    cp = await startControl()
    registration = {
      name: 'hello-1',
      namespace: 'default',
      address: '127.0.0.1',
      ports: [{ name: 'http', number: backend.port, servicePort: 8080 }],
      labels: { app: 'hello' },
      ttlSeconds: 30,
    }
    const r = await fetch(`http://${api}/api/v1/workloads`, { method: 'POST', body: JSON.stringify(registration) })
    assert.equal(r.status, 200, await r.text())
    out = await freePort()
    sidecar = await startSidecar(xds, { app: 'client' }, out)
    await eventually(routeAnswers, 30_000, 'the route through the sidecar').catch((e: Error) => {
      throw new Error(`${e.message}; it last answered: ${lastAnswer}; sidecar log:\n${sidecar.stderr().slice(-2000)}`)
    })
  })
  after(async () => {
    await sidecar?.stop()
    await cp?.stop()
    await backend?.close()
  })

  test('with the same data dir, the registration is back before the next heartbeat', async (t) => {
    await cp.stop('SIGKILL')
    const t0 = Date.now()
    cp = await startControl(api, xds)
    // the registration was restored at start: the first (bare) heartbeat finds it
    assert.equal(await heartbeat(false), 200)
    const workloads = (await (await fetch(`http://${api}/api/v1/workloads`)).json()) as { id: string }[]
    assert.deepEqual(
      workloads.map((w) => w.id),
      ['default/hello-1'],
    )
    await resynced()
    assert.ok(await routeAnswers(), 'the route answers with the config of the restarted control plane')
    t.diagnostic(`the sidecar had its config and the route answered ${Date.now() - t0} ms after the restart`)
  })

  test('with the data dir lost, a heartbeat that carries its registration registers the workload again', async (t) => {
    await cp.stop('SIGKILL')
    rmSync(join(dataDir, 'workloads.json'))
    const t0 = Date.now()
    cp = await startControl(api, xds)
    assert.equal(await heartbeat(false), 404, 'a bare heartbeat: unknown')
    // the sidecar reconnects to a control plane that knows no hello: the route is gone
    await resynced()
    assert.equal((await get(out, 'hello:8080')).status, 404)
    const t1 = Date.now()
    assert.equal(await heartbeat(true), 200, 'a heartbeat with its registration: registered again')
    assert.equal(await heartbeat(false), 200)
    await eventually(routeAnswers, 20_000, 'the route to answer again')
    t.diagnostic(
      `restart to resynced sidecar ${t1 - t0} ms; heartbeat with the registration to the route answering ${Date.now() - t1} ms`,
    )
  })

  test('a heartbeat carrying a registration for another workload is refused', async () => {
    const r = await fetch(`http://${api}/api/v1/workloads/default/other/heartbeat`, {
      method: 'POST',
      body: JSON.stringify({ healthy: true, registration }),
    })
    assert.equal(r.status, 400)
    assert.match(await r.text(), /names default\/hello-1/)
  })
})
