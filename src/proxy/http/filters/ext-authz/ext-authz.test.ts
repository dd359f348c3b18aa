/**
 * The ext_authz filter on its own: its schema, a stream the metadata does not enable, a per-route disable, a check
 * that fails before any request is sent (no such cluster: status_on_error or failure_mode_allow, decided inline), a
 * real HTTP authorizer on loopback reached through a real cluster manager and pools (allowed: headers for the
 * upstream and the client; denied: the authorizer's reply), and a body over max_request_bytes.
 */
import assert from 'node:assert/strict'
import { Buffer } from 'node:buffer'
import * as http from 'node:http'
import type { AddressInfo } from 'node:net'
import { after, before, describe, test } from 'node:test'
import * as v from 'valibot'
import { Cluster, type ExtAuthz, ExtAuthz as ExtAuthzSchema } from '../../../../config/envoy.js'
import { toConfigIssues } from '../../../../config/schema.js'
import { TypeUrls } from '../../../../config/type-urls.js'
import type { ConfigIssue } from '../../../../core/errors.js'
import { ClusterManager } from '../../../cluster/index.js'
import { StatsStore } from '../../../stats/stats.js'
import type { UpstreamAccess } from '../../async-client.js'
import { Headers } from '../../headers.js'
import { PoolManager } from '../../pools.js'
import type { RequestHead } from '../../types.js'
import { CONTINUE, type FilterCallbacks, STOP } from '../filter.js'
import { compileExtAuthzPerRoute, ExtAuthzFilterFactory } from './ext-authz.js'

interface Reply {
  status: number
  flag: string
  reason: string
  body: string | null
  headers: Headers | undefined
}

class FakeStream implements FilterCallbacks {
  head: RequestHead
  readonly route = null
  readonly sourceIp = '127.0.0.1'
  readonly downstreamSocket = null
  reply: Reply | null = null
  continued = 0
  private readonly md = new Map<string, Record<string, unknown>>()
  private readonly onEvent: () => void

  constructor(path: string, headers: string[] = [], onEvent: () => void = () => {}) {
    this.head = {
      method: 'GET',
      authority: 'app.local',
      path,
      scheme: 'http',
      headers: new Headers(headers),
      upgrade: null,
      protocol: 'HTTP/1.1',
    }
    this.onEvent = onEvent
  }
  setMetadata(ns: string, key: string, value: unknown): void {
    const m = this.md.get(ns) ?? {}
    m[key] = value
    this.md.set(ns, m)
  }
  metadata(ns: string) {
    return this.md.get(ns)
  }
  continueDecoding(): void {
    this.continued++
    this.onEvent()
  }
  sendLocalReply(status: number, flag: string, reason: string, text: string | Buffer | null, headers?: Headers) {
    this.reply = { status, flag, reason, body: text === null ? null : text.toString(), headers }
    this.onEvent()
  }
  addFlag(): void {}
}

function config(extra: Partial<ExtAuthz> & Record<string, unknown>): ExtAuthz {
  return v.parse(ExtAuthzSchema, { '@type': TypeUrls.extAuthz, ...extra })
}

describe('ext_authz filter', () => {
  let server: http.Server
  let port = 0
  let access: UpstreamAccess
  const seen: { url: string; headers: http.IncomingHttpHeaders }[] = []

  before(async () => {
    server = http.createServer((req, res) => {
      seen.push({ url: req.url ?? '', headers: req.headers })
      req.resume()
      if (req.headers['x-ext-authz'] === 'allow' || req.headers.authorization === 'Bearer t') {
        res.writeHead(200, { 'x-user': 'alice', 'x-note': 'ok', 'x-other': 'no' })
        res.end()
      } else {
        res.writeHead(401, { 'www-authenticate': 'Bearer', 'x-why': 'no token', 'content-type': 'text/plain' })
        res.end('who are you?')
      }
    })
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
    port = (server.address() as AddressInfo).port
    const store = new StatsStore()
    const clusters = new ClusterManager([
      v.parse(Cluster, {
        name: 'authz',
        type: 'STATIC',
        connect_timeout: '1s',
        load_assignment: {
          cluster_name: 'authz',
          endpoints: [
            {
              lb_endpoints: [{ endpoint: { address: { socket_address: { address: '127.0.0.1', port_value: port } } } }],
            },
          ],
        },
      }),
    ])
    await clusters.start()
    access = { clusters, store, pools: new PoolManager(store) }
  })
  after(() => {
    server.closeAllConnections()
    server.close()
  })

  const factory = (cfg: ExtAuthz) => {
    const issues: ConfigIssue[] = []
    const f = new ExtAuthzFilterFactory('ext', cfg, 'typed_config', issues, new StatsStore().forHcm('t'), access)
    assert.deepEqual(issues, [])
    return f
  }
  const httpService = (cluster = 'authz', extra: Record<string, unknown> = {}) => ({
    http_service: { server_uri: { uri: 'http://authz', cluster, timeout: '2s' }, ...extra },
  })

  test('schema: exactly one of grpc_service and http_service; status_on_error by name or number', () => {
    const r = v.safeParse(ExtAuthzSchema, { '@type': TypeUrls.extAuthz })
    assert.equal(r.success, false)
    assert.match(toConfigIssues(r.issues!)[0]!.message, /one of grpc_service, http_service is required/)
    assert.equal(
      config({ ...httpService(), status_on_error: { code: 'ServiceUnavailable' } } as never).status_on_error?.code,
      503,
    )
    const unknown = v.safeParse(ExtAuthzSchema, { '@type': TypeUrls.extAuthz, ...httpService(), nope: 1 })
    assert.equal(toConfigIssues(unknown.issues!)[0]!.path, 'nope')
  })

  test('filter_enabled_metadata that does not match: no check, counted as disabled', () => {
    const f = factory(
      config({
        ...httpService('missing'),
        filter_enabled_metadata: {
          filter: 'envoy.filters.http.rbac',
          path: [{ key: 'istio_ext_authz_shadow_effective_policy_id' }],
          value: { string_match: { prefix: 'istio-ext-authz' } },
        },
      } as never),
    )
    const s = new FakeStream('/')
    assert.equal(f.create(s, undefined)!.decodeHeaders!(s.head, true), CONTINUE)
    assert.equal(f.stats.disabled, 1)
    assert.equal(s.reply, null)
    const matched = new FakeStream('/')
    matched.setMetadata('envoy.filters.http.rbac', 'istio_ext_authz_shadow_effective_policy_id', 'istio-ext-authz-x')
    f.create(matched, undefined)!.decodeHeaders!(matched.head, true)
    assert.equal(matched.reply?.status, 403, 'enabled: the check runs (and fails: no such cluster)')
  })

  test('a route with ExtAuthzPerRoute disabled gets no filter', () => {
    const f = factory(config(httpService()))
    const s = new FakeStream('/')
    assert.equal(f.create(s, compileExtAuthzPerRoute({ '@type': TypeUrls.extAuthzPerRoute, disabled: true })), null)
  })

  test('a check that cannot be sent: status_on_error (default 403, UAEX), or on with failure_mode_allow', () => {
    const closed = factory(config(httpService('missing')))
    const s = new FakeStream('/')
    closed.create(s, undefined)!.decodeHeaders!(s.head, true)
    assert.deepEqual(
      [s.reply?.status, s.reply?.flag, s.reply?.reason, s.reply?.body],
      [403, 'UAEX', 'ext_authz_error', null],
    )
    assert.match(String(s.metadata('envoy.filters.http.ext_authz')?.error), /no_cluster/)
    const open = factory(
      config({ ...httpService('missing'), failure_mode_allow: true, failure_mode_allow_header_add: true } as never),
    )
    const o = new FakeStream('/')
    assert.equal(open.create(o, undefined)!.decodeHeaders!(o.head, true), CONTINUE, 'decided inline: no stop')
    assert.equal(o.continued, 0)
    assert.equal(o.head.headers.get('x-envoy-auth-failure-mode-allowed'), 'true')
    assert.deepEqual([open.stats.error, open.stats.failure_mode_allowed], [1, 1])
  })

  test('an HTTP authorizer allows: allowed_upstream_headers on the request, on-success headers on the response', async () => {
    const f = factory(
      config(
        httpService('authz', {
          path_prefix: '/auth',
          authorization_response: {
            allowed_upstream_headers: { patterns: [{ exact: 'X-User' }] },
            allowed_client_headers_on_success: { patterns: [{ exact: 'x-note' }] },
          },
        }),
      ),
    )
    let done!: () => void
    const settled = new Promise<void>((r) => (done = r))
    const s = new FakeStream('/x?y=1', ['x-ext-authz', 'allow', 'authorization', 'Bearer t', 'x-private', 'p'], () =>
      done(),
    )
    const sf = f.create(s, undefined)!
    assert.equal(sf.decodeHeaders!(s.head, true), STOP)
    await settled
    assert.equal(s.continued, 1)
    assert.equal(s.head.headers.get('x-user'), 'alice')
    assert.equal(s.head.headers.get('x-other'), undefined)
    const res = new Headers()
    sf.encodeHeaders!(200, res, true)
    assert.equal(res.get('x-note'), 'ok')
    const check = seen.at(-1)!
    assert.equal(check.url, '/auth/x?y=1')
    assert.equal(check.headers.authorization, 'Bearer t', 'Authorization always goes with the check')
    assert.equal(check.headers['x-private'], undefined, 'other headers only when allowed_headers names them')
    assert.equal(check.headers['x-ext-authz'], undefined)
    assert.equal(f.stats.ok, 1)
  })

  test('an HTTP authorizer denies: its status and body, and its headers when allowed_client_headers is unset', async () => {
    const f = factory(config({ ...httpService(), allowed_headers: { patterns: [{ exact: 'x-ext-authz' }] } } as never))
    let done!: () => void
    const settled = new Promise<void>((r) => (done = r))
    const s = new FakeStream('/', ['x-ext-authz', 'deny'], () => done())
    assert.equal(f.create(s, undefined)!.decodeHeaders!(s.head, true), STOP)
    await settled
    assert.equal(seen.at(-1)!.headers['x-ext-authz'], 'deny', 'allowed_headers at the top level')
    assert.deepEqual(
      [s.reply?.status, s.reply?.flag, s.reply?.reason, s.reply?.body],
      [401, 'UAEX', 'ext_authz_denied', 'who are you?'],
    )
    assert.equal(s.reply?.headers?.get('www-authenticate'), 'Bearer')
    assert.equal(s.reply?.headers?.get('x-why'), 'no token')
    assert.equal(s.reply?.headers?.get('content-length'), undefined, 'the reply frames itself')
    assert.equal(f.stats.denied, 1)
  })

  test('with_request_body: the body is held for the check; over max_request_bytes without partial: 413', () => {
    const f = factory(config({ ...httpService('missing'), with_request_body: { max_request_bytes: 4 } } as never))
    const s = new FakeStream('/')
    const sf = f.create(s, undefined)!
    assert.equal(sf.decodeHeaders!(s.head, false), STOP, 'waits for the body')
    assert.equal(s.reply, null)
    sf.decodeData!(Buffer.from('abcdef'), false)
    assert.equal((s.reply as Reply | null)?.status, 413)
  })
})
