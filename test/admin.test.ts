/** The admin endpoint, and graceful drain on SIGTERM, against a real proxy process. */
import assert from 'node:assert/strict'
import * as http from 'node:http'
import * as net from 'node:net'
import { after, before, describe, test } from 'node:test'
import { eventually } from './helpers/control.js'
import { type RunningProxy, simpleBootstrap, startProxy, staticCluster } from './helpers/proxy.js'
import { type Backend, startBackend } from './helpers/servers.js'

function get(port: number, path: string, agent?: http.Agent): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    http
      .get({ host: '127.0.0.1', port, path, agent: agent ?? false }, (res) => {
        let body = ''
        res.on('data', (c) => (body += c))
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }))
      })
      .on('error', reject)
  })
}

function connects(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1')
    s.once('connect', () => {
      s.destroy()
      resolve(true)
    })
    s.once('error', () => resolve(false))
  })
}

describe('admin endpoint', () => {
  let be: Backend
  let proxy: RunningProxy
  before(async () => {
    be = await startBackend((_req, res) => res.end('ok'))
    proxy = await startProxy(simpleBootstrap([staticCluster('backend', [be.port])]))
    for (let i = 0; i < 3; i++) await get(proxy.ports.http!, `/r${i}`)
  })
  after(async () => {
    await proxy.stop()
    await be.close()
  })
  const admin = (path: string, init?: RequestInit) => fetch(`http://${proxy.admin}${path}`, init)

  test('/ready says LIVE', async () => {
    const r = await admin('/ready')
    assert.equal(r.status, 200)
    assert.equal((await r.text()).trim(), 'LIVE')
  })

  test('/stats counts requests per listener, cluster and route', async () => {
    const text = await (await admin('/stats')).text()
    assert.match(text, /^http\.ingress\.downstream_rq_total: 3$/m)
    assert.match(text, /^http\.ingress\.downstream_rq_2xx: 3$/m)
    assert.match(text, /^cluster\.backend\.upstream_rq_total: 3$/m)
    assert.match(text, /^cluster\.backend\.upstream_rq_2xx: 3$/m)
    assert.match(text, /^cluster\.backend\.upstream_cx_total: [1-3]$/m)
    assert.match(text, /^vhost\.all\.route\.all\/0\.rq_total: 3$/m)
    assert.match(text, /^cluster\.backend\.upstream_cx_rx_bytes_total: [1-9]\d*$/m)
  })

  test('/stats/prometheus uses Envoy names and labels, with a latency histogram', async () => {
    const text = await (await admin('/stats/prometheus')).text()
    assert.match(text, /^envoy_cluster_upstream_rq_total\{envoy_cluster_name="backend"\} 3$/m)
    assert.match(
      text,
      /^envoy_cluster_upstream_rq_xx\{envoy_cluster_name="backend",envoy_response_code_class="2"\} 3$/m,
    )
    assert.match(text, /^envoy_cluster_upstream_rq_time_bucket\{envoy_cluster_name="backend",le="\+Inf"\} 3$/m)
    assert.match(text, /^# TYPE envoy_cluster_upstream_rq_time histogram$/m)
  })

  test('/config_dump returns the running config', async () => {
    const dump = (await (await admin('/config_dump')).json()) as {
      configs: { '@type': string; static_listeners?: unknown[] }[]
    }
    const listeners = dump.configs.find((c) => c['@type'].endsWith('ListenersConfigDump'))
    assert.equal(listeners?.static_listeners?.length, 1)
  })

  test('/clusters lists hosts with health and active requests', async () => {
    const text = await (await admin('/clusters')).text()
    assert.match(text, new RegExp(`^backend::127\\.0\\.0\\.1:${be.port}::rq_active::0$`, 'm'))
    const json = (await (await admin('/clusters?format=json')).json()) as { cluster_statuses: { name: string }[] }
    assert.equal(json.cluster_statuses[0]?.name, 'backend')
  })

  test('unknown paths get 404 with the list of endpoints', async () => {
    const r = await admin('/nope')
    assert.equal(r.status, 404)
    assert.match(await r.text(), /\/stats\/prometheus/)
  })

  test('/drain_listeners needs POST', async () => {
    assert.equal((await admin('/drain_listeners')).status, 405)
  })
})

describe('draining', () => {
  test('POST /drain_listeners stops accepting; the proxy stays up', async () => {
    const be = await startBackend((_req, res) => res.end('ok'))
    const proxy = await startProxy(simpleBootstrap([staticCluster('backend', [be.port])]))
    try {
      const port = proxy.ports.http!
      assert.ok(await connects(port))
      const r = await fetch(`http://${proxy.admin}/drain_listeners`, { method: 'POST' })
      assert.equal(r.status, 200)
      assert.equal(await connects(port), false)
      // Envoy's states: /ready is 200 only when LIVE; a proxy that no longer accepts is DRAINING
      const ready = await fetch(`http://${proxy.admin}/ready`)
      assert.equal(ready.status, 503)
      assert.equal(await ready.text(), 'DRAINING\n')
      const info = (await (await fetch(`http://${proxy.admin}/server_info`)).json()) as { state: string }
      assert.equal(info.state, 'DRAINING')
      // SIGTERM after a drain still shuts down cleanly
      assert.equal(await proxy.stop('SIGTERM'), 0)
    } finally {
      await proxy.stop()
      await be.close()
    }
  })

  test('SIGTERM: in-flight requests finish, new connections are refused, exit 0', async () => {
    let release: () => void = () => {}
    const arrived = new Promise<void>((r) => {
      release = r
    })
    let finish: () => void = () => {}
    const finished = new Promise<void>((r) => {
      finish = r
    })
    const be = await startBackend((_req, res) => {
      release()
      void finished.then(() => res.end('finished'))
    })
    const proxy = await startProxy(simpleBootstrap([staticCluster('backend', [be.port])]), ['--drain-time-s', '5'])
    try {
      const port = proxy.ports.http!
      const inflight = get(port, '/slow')
      await arrived
      const exited = proxy.stop('SIGTERM')
      // the request is held by the backend until the listener is seen closed
      await eventually(async () => !(await connects(port)), 5000, 'listener closed while draining')
      finish()
      const r = await inflight
      assert.equal(r.status, 200)
      assert.equal(r.body, 'finished')
      assert.equal(await exited, 0)
    } finally {
      await proxy.stop()
      await be.close()
    }
  })
})
