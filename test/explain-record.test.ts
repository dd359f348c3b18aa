/**
 * The live decision record (Loom's explain filter) through real `loom proxy` processes and a real backend: a
 * permitted caller's `x-loom-explain` gets the proxy's decisions on the response (`x-loom-explain-record`) and in the
 * access log (`loom_decisions`), and the header goes on upstream; a caller the filter does not permit has the header
 * removed and gets no record.
 */
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import * as http from 'node:http'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { eventually } from './helpers/control.js'
import { filterBootstrap, type RunningProxy, startProxy, writeTemp } from './helpers/proxy.js'
import { type Backend, startBackend } from './helpers/servers.js'

const EXPLAIN = 'type.googleapis.com/loom.filters.http.explain.v1alpha1.Explain'
const FAULT = 'type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault'
const FILE_LOG = 'type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog'
const NODE = 'sidecar~127.0.0.1~web-v1.default~default.svc.cluster.local'

function get(
  port: number,
  path: string,
  headers: Record<string, string> = {},
): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path, headers }, (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (c: string) => (body += c))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }))
    })
    req.on('error', reject)
    req.end()
  })
}

/** A proxy whose explain filter permits `principals`, with an access log file. */
function bootstrap(backendPort: number, principals: unknown[] | undefined, log: string): unknown {
  const b = filterBootstrap(
    backendPort,
    [
      {
        name: 'web',
        domains: ['*'],
        routes: [
          {
            name: 'abort',
            match: { prefix: '/abort' },
            route: { cluster: 'be' },
            typed_per_filter_config: {
              'envoy.filters.http.fault': {
                '@type': FAULT,
                abort: { http_status: 503, percentage: { numerator: 100 } },
              },
            },
          },
          { name: 'nowhere', match: { prefix: '/nowhere' }, route: { cluster: 'missing' } },
          { name: 'all', match: { prefix: '/' }, route: { cluster: 'be', timeout: '2s' } },
        ],
      },
    ],
    [
      {
        name: 'loom.filters.http.explain',
        typed_config: { '@type': EXPLAIN, label: 'inbound', ...(principals === undefined ? {} : { principals }) },
      },
      { name: 'envoy.filters.http.fault', typed_config: { '@type': FAULT } },
    ],
  ) as {
    node?: unknown
    static_resources: { listeners: { filter_chains: { filters: { typed_config: Record<string, unknown> }[] }[] }[] }
  }
  b.node = { id: NODE }
  const hcm = b.static_resources.listeners[0]!.filter_chains[0]!.filters[0]!.typed_config
  hcm.access_log = [{ name: 'file', typed_config: { '@type': FILE_LOG, path: log } }]
  hcm.route_config = { ...(hcm.route_config as object), validate_clusters: false }
  return b
}

/** The access log entry of the request for `path`, once the proxy has written it. */
async function entryFor(file: string, path: string): Promise<Record<string, unknown>> {
  let found: Record<string, unknown> | undefined
  await eventually(
    async () => (found = logEntries(file).find((e) => e.path === path)) !== undefined,
    5000,
    `log of ${path}`,
  )
  return found!
}

function logEntries(file: string): Record<string, unknown>[] {
  let text = ''
  try {
    text = readFileSync(file, 'utf8')
  } catch {
    return []
  }
  return text
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => JSON.parse(l) as Record<string, unknown>)
}

describe('the decision record (x-loom-explain)', () => {
  let be: Backend
  let permitted: RunningProxy
  let refused: RunningProxy
  let closed: RunningProxy
  const dir = writeTemp('x', '').replace(/\/x$/, '')
  const logs = {
    permitted: join(dir, 'permitted.log'),
    refused: join(dir, 'refused.log'),
    closed: join(dir, 'closed.log'),
  }

  before(async () => {
    be = await startBackend()
    // loopback callers are permitted; a principal no plain-text caller has; no principals at all
    permitted = await startProxy(
      bootstrap(be.port, [{ remote_ip: { address_prefix: '127.0.0.1', prefix_len: 32 } }], logs.permitted),
    )
    refused = await startProxy(
      bootstrap(
        be.port,
        [{ authenticated: { principal_name: { exact: 'spiffe://cluster.local/ns/default/sa/admin' } } }],
        logs.refused,
      ),
    )
    closed = await startProxy(bootstrap(be.port, undefined, logs.closed))
  })
  after(async () => {
    await Promise.all([permitted.stop(), refused.stop(), closed.stop()])
    await be.close()
  })

  test('a permitted caller: the record on the response and in the access log; the header goes upstream', async () => {
    const r = await get(permitted.ports.http!, '/reviews/0', { 'x-loom-explain': '1' })
    assert.equal(r.status, 200)
    const rec = r.headers['x-loom-explain-record'] as string
    assert.match(rec, /^proxy=web-v1\.default:inbound route=all cluster=be host=127\.0\.0\.1:\d+ status=200$/)
    const seen = JSON.parse(r.body) as { headers: Record<string, string> }
    assert.equal(seen.headers['x-loom-explain'], '1')
    const entry = await entryFor(logs.permitted, '/reviews/0')
    const d = entry.loom_decisions as Record<string, unknown>
    assert.equal(d.proxy, 'web-v1.default:inbound')
    assert.equal(d.route, 'all')
    assert.equal(d.virtual_host, 'web')
    assert.equal(d.cluster, 'be')
    assert.equal(d.timeout_ms, 2000)
    assert.equal(d.timed_out, false)
    assert.equal(d.response_code, 200)
    assert.deepEqual((d.attempts as string[]).length, 1)
  })

  test('a fault and a local reply are recorded with their reason', async () => {
    const a = await get(permitted.ports.http!, '/abort', { 'x-loom-explain': '1' })
    assert.equal(a.status, 503)
    assert.equal(
      a.headers['x-loom-explain-record'],
      'proxy=web-v1.default:inbound route=abort fault=abort:503 status=503 flags=FI reason=fault_filter_abort',
    )
    const nc = await get(permitted.ports.http!, '/nowhere', { 'x-loom-explain': '1' })
    assert.equal(nc.status, 503)
    assert.equal(
      nc.headers['x-loom-explain-record'],
      'proxy=web-v1.default:inbound route=nowhere status=503 flags=NC reason=cluster_not_found',
    )
  })

  test('without the header: no record, no field in the access log', async () => {
    const r = await get(permitted.ports.http!, '/plain')
    assert.equal(r.status, 200)
    assert.equal(r.headers['x-loom-explain-record'], undefined)
    const entry = await entryFor(logs.permitted, '/plain')
    assert.equal('loom_decisions' in entry, false)
  })

  test('a caller the filter does not permit: the header is removed, nothing is recorded', async () => {
    for (const [p, log] of [
      [refused, logs.refused],
      [closed, logs.closed],
    ] as const) {
      const r = await get(p.ports.http!, '/reviews/1', { 'x-loom-explain': '1' })
      assert.equal(r.status, 200)
      assert.equal(r.headers['x-loom-explain-record'], undefined)
      const seen = JSON.parse(r.body) as { headers: Record<string, string> }
      assert.equal(seen.headers['x-loom-explain'], undefined, 'the header does not reach the upstream')
      const entry = await entryFor(log, '/reviews/1')
      assert.equal('loom_decisions' in entry, false)
    }
  })
})
