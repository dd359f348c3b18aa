/**
 * Envoy's edge rules for request headers through a real `loom proxy`, from HTTP/1.1 and HTTP/2 (h2c) clients, to a
 * backend that echoes the headers it received: a gateway (`use_remote_address`) overwrites `x-forwarded-proto`,
 * removes `x-envoy-*` and `x-loom-*`, appends the peer to `x-forwarded-for`, sets `x-envoy-external-address` to the
 * trusted client address (`xff_num_trusted_hops`) and replaces `x-request-id`; a sidecar passes its mesh's headers
 * on; `internal_address_config` makes a peer internal. Every client here connects from 127.0.0.1.
 */
import assert from 'node:assert/strict'
import * as http from 'node:http'
import * as http2 from 'node:http2'
import { after, before, describe, test } from 'node:test'
import { adminAddress, hcm, listener, type RunningProxy, startProxy, staticCluster } from './helpers/proxy.js'
import { type Backend, startBackend } from './helpers/servers.js'

const STDOUT_LOG = {
  name: 'envoy.access_loggers.stdout',
  typed_config: { '@type': 'type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog' },
}
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/

type Seen = Record<string, string | string[] | undefined>

function edgeListener(name: string, extra: Record<string, unknown>): unknown {
  const routes = {
    name: 'local',
    virtual_hosts: [
      { name: 'all', domains: ['*'], routes: [{ match: { prefix: '/' }, route: { cluster: 'backend' } }] },
    ],
  }
  return listener(name, hcm(routes, { stat_prefix: name, access_log: [STDOUT_LOG], ...extra }))
}

function h1(port: number, path: string, headers: Record<string, string>): Promise<Seen> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path, headers, agent: false }, (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (d: string) => (body += d))
      res.on('end', () => {
        if (res.statusCode !== 200) return reject(new Error(`status ${res.statusCode}: ${body}`))
        resolve((JSON.parse(body) as { headers: Seen }).headers)
      })
    })
    req.on('error', reject)
    req.end()
  })
}

function h2(port: number, path: string, headers: Record<string, string>): Promise<Seen> {
  return new Promise((resolve, reject) => {
    const session = http2.connect(`http://127.0.0.1:${port}`)
    session.on('error', reject)
    const req = session.request({ ':method': 'GET', ':path': path, ':authority': 'edge.test', ...headers })
    let body = ''
    let status = 0
    req.setEncoding('utf8')
    req.on('response', (h) => (status = Number(h[':status'])))
    req.on('data', (d: string) => (body += d))
    req.on('end', () => {
      session.close()
      if (status !== 200) return reject(new Error(`status ${status}: ${body}`))
      resolve((JSON.parse(body) as { headers: Seen }).headers)
    })
    req.on('error', reject)
    req.end()
  })
}

describe('edge headers', () => {
  let backend: Backend
  let proxy: RunningProxy
  let seq = 0

  before(async () => {
    backend = await startBackend()
    proxy = await startProxy({
      admin: { address: adminAddress() },
      static_resources: {
        listeners: [
          edgeListener('gateway', { use_remote_address: true }),
          edgeListener('gateway_hop1', { use_remote_address: true, xff_num_trusted_hops: 1 }),
          edgeListener('gateway_preserve', { use_remote_address: true, preserve_external_request_id: true }),
          edgeListener('gateway_skip', { use_remote_address: true, skip_xff_append: true }),
          edgeListener('gateway_internal', {
            use_remote_address: true,
            internal_address_config: { cidr_ranges: [{ address_prefix: '127.0.0.0', prefix_len: 8 }] },
          }),
          edgeListener('sidecar', {}),
        ],
        clusters: [staticCluster('backend', [backend.port])],
      },
    })
  })
  after(async () => {
    await proxy?.stop()
    await backend?.close()
  })

  /** The access log entry of the request to `path` (written once the response is done). */
  async function logEntry(path: string): Promise<Record<string, unknown>> {
    for (let i = 0; i < 100; i++) {
      for (const line of proxy.stdout().split('\n')) {
        if (!line.startsWith('{')) continue
        const e = JSON.parse(line) as Record<string, unknown>
        if (e.path === path) return e
      }
      await new Promise((r) => setTimeout(r, 20))
    }
    throw new Error(`no access log entry for ${path}`)
  }

  for (const [proto, send] of [
    ['HTTP/1.1', h1],
    ['HTTP/2', h2],
  ] as const) {
    const get = (l: string, headers: Record<string, string> = {}) => {
      const path = `/edge/${++seq}`
      return send(proxy.ports[l]!, path, headers).then((seen) => ({ seen, path }))
    }

    describe(proto, () => {
      test('a gateway sets x-forwarded-proto from the connection, whatever the client sent', async () => {
        const { seen } = await get('gateway', { 'x-forwarded-proto': 'https' })
        assert.equal(seen['x-forwarded-proto'], 'http')
      })

      test('a gateway removes x-envoy-* and x-loom-* request headers from outside', async () => {
        const { seen } = await get('gateway', {
          'x-envoy-retry-on': '5xx',
          'x-envoy-upstream-rq-timeout-ms': '1',
          'x-envoy-internal': 'true',
          'x-envoy-external-address': '6.6.6.6',
          'x-loom-debug': '1',
          'x-other': 'kept',
        })
        for (const name of ['x-envoy-retry-on', 'x-envoy-upstream-rq-timeout-ms', 'x-envoy-internal', 'x-loom-debug']) {
          assert.equal(seen[name], undefined, name)
        }
        assert.equal(seen['x-envoy-external-address'], '127.0.0.1', 'the proxy sets it to the client address')
        assert.equal(seen['x-other'], 'kept')
      })

      test('a gateway appends the peer to x-forwarded-for', async () => {
        assert.equal((await get('gateway')).seen['x-forwarded-for'], '127.0.0.1')
        const { seen, path } = await get('gateway', { 'x-forwarded-for': '1.2.3.4' })
        assert.equal(seen['x-forwarded-for'], '1.2.3.4, 127.0.0.1')
        // without trusted hops the client's x-forwarded-for names nobody
        assert.equal(seen['x-envoy-external-address'], '127.0.0.1')
        assert.equal((await logEntry(path)).downstream_remote_address, '127.0.0.1')
      })

      test('xff_num_trusted_hops: 1 takes the client address from x-forwarded-for', async () => {
        const { seen, path } = await get('gateway_hop1', {
          'x-forwarded-for': '1.2.3.4, 5.6.7.8',
          'x-forwarded-proto': 'https',
        })
        assert.equal(seen['x-envoy-external-address'], '5.6.7.8')
        assert.equal(seen['x-forwarded-for'], '1.2.3.4, 5.6.7.8, 127.0.0.1')
        assert.equal(seen['x-forwarded-proto'], 'https', 'a trusted hop set it')
        const entry = await logEntry(path)
        assert.equal(entry.downstream_remote_address, '5.6.7.8')
        assert.equal(entry.downstream_direct_remote_address, '127.0.0.1')
        // fewer addresses than trusted hops: the peer is the client
        const short = await get('gateway_hop1')
        assert.equal(short.seen['x-envoy-external-address'], '127.0.0.1')
        assert.equal(short.seen['x-forwarded-proto'], 'http')
      })

      test('skip_xff_append leaves x-forwarded-for as the client sent it', async () => {
        const { seen } = await get('gateway_skip', { 'x-forwarded-for': '1.2.3.4' })
        assert.equal(seen['x-forwarded-for'], '1.2.3.4')
        assert.equal(seen['x-envoy-external-address'], '127.0.0.1')
      })

      test('x-request-id: replaced at a gateway unless preserve_external_request_id, kept by a sidecar', async () => {
        const gw = (await get('gateway', { 'x-request-id': 'client-chosen' })).seen['x-request-id']
        assert.match(String(gw), UUID)
        const kept = await get('gateway_preserve', { 'x-request-id': 'client-chosen' })
        assert.equal(kept.seen['x-request-id'], 'client-chosen')
        assert.equal((await logEntry(kept.path)).request_id, 'client-chosen')
        assert.equal((await get('sidecar', { 'x-request-id': 'mesh-id' })).seen['x-request-id'], 'mesh-id')
        assert.match(String((await get('sidecar')).seen['x-request-id']), UUID, 'generated when absent')
        assert.match(String((await get('gateway_preserve')).seen['x-request-id']), UUID, 'generated when absent')
      })

      test('a sidecar passes its mesh headers on', async () => {
        const { seen, path } = await get('sidecar', {
          'x-forwarded-proto': 'https',
          'x-forwarded-for': '1.2.3.4',
          'x-envoy-external-address': '1.2.3.4',
          'x-envoy-retry-on': '5xx',
          'x-loom-hop': 'a',
          'x-envoy-internal': 'true',
        })
        assert.equal(seen['x-forwarded-proto'], 'https')
        assert.equal(seen['x-forwarded-for'], '1.2.3.4', 'not appended without use_remote_address')
        assert.equal(seen['x-envoy-external-address'], '1.2.3.4')
        assert.equal(seen['x-envoy-retry-on'], '5xx')
        assert.equal(seen['x-loom-hop'], 'a')
        assert.equal(seen['x-envoy-internal'], undefined, 'the proxy decides; 1.2.3.4 is not internal')
        // the client address is the last one in x-forwarded-for
        assert.equal((await logEntry(path)).downstream_remote_address, '1.2.3.4')
        assert.equal((await get('sidecar')).seen['x-forwarded-proto'], 'http', 'set when absent')
      })

      test('internal_address_config: an internal peer keeps its headers and is marked internal', async () => {
        const { seen } = await get('gateway_internal', {
          'x-forwarded-proto': 'https',
          'x-envoy-retry-on': '5xx',
          'x-loom-hop': 'a',
          'x-request-id': 'internal-id',
        })
        assert.equal(seen['x-forwarded-proto'], 'https')
        assert.equal(seen['x-envoy-retry-on'], '5xx')
        assert.equal(seen['x-loom-hop'], 'a')
        assert.equal(seen['x-request-id'], 'internal-id')
        assert.equal(seen['x-envoy-internal'], 'true')
        assert.equal(seen['x-envoy-external-address'], undefined)
        assert.equal(seen['x-forwarded-for'], '127.0.0.1')
        // with x-forwarded-for the request came from further away: external
        const far = await get('gateway_internal', { 'x-forwarded-for': '1.2.3.4', 'x-loom-hop': 'a' })
        assert.equal(far.seen['x-loom-hop'], undefined)
        assert.equal(far.seen['x-envoy-internal'], undefined)
        assert.equal(far.seen['x-envoy-external-address'], '127.0.0.1')
      })
    })
  }
})
