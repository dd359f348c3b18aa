/**
 * Envoy's ext_authz HTTP filter through a real `loom proxy` (static bootstrap): an HTTP authorizer (node:http) that
 * allows on a header and denies with 403 and headers of its own, one that never answers (the check times out:
 * status_on_error), one that fails (5xx: an error), failure_mode_allow, the request body sent with the check; a gRPC
 * authorizer (@grpc/grpc-js serving envoy.service.auth.v3.Authorization) that adds headers or denies with its
 * denied_response; and Istio's CUSTOM wiring (an RBAC shadow filter then ext_authz with filter_enabled_metadata)
 * that checks only the requests a CUSTOM policy matches. Then Istio's ext-authz task through `loom control
 * --mesh-config` (provider `sample-ext-authz-http`) and a CUSTOM AuthorizationPolicy on `/headers` of a sidecar's
 * workload, a provider that does not exist (the policy's requests are denied), and a bad mesh config refused.
 */
import assert from 'node:assert/strict'
import * as http from 'node:http'
import { after, before, describe, test } from 'node:test'
import * as grpc from '@grpc/grpc-js'
import * as protoLoader from '@grpc/proto-loader'
import { protoIncludeDirs } from '../src/xds/proto.js'
import { type Control, eventually, type Proc, startControl, startSidecar } from './helpers/control.js'
import {
  adminAddress,
  HCM,
  listener,
  ROUTER,
  type RunningProxy,
  stat,
  startProxy,
  runLoom,
  staticCluster,
  writeTemp,
} from './helpers/proxy.js'
import { type Backend, freePort, startBackend } from './helpers/servers.js'

const EXT_AUTHZ = 'type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz'
const RBAC = 'type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC'

interface Reply {
  status: number
  body: string
  headers: http.IncomingHttpHeaders
}

function request(port: number, path: string, headers: Record<string, string> = {}, body?: string): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      { host: '127.0.0.1', port, method: body === undefined ? 'GET' : 'POST', path, headers },
      (res) => {
        let text = ''
        res.setEncoding('utf8')
        res.on('data', (c: string) => (text += c))
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text, headers: res.headers }))
      },
    )
    req.on('error', reject)
    req.end(body)
  })
}

/** The upstream's echo of what reached it. */
function echoed(r: Reply): { url: string; headers: Record<string, string>; body: string } {
  assert.equal(r.status, 200, r.body)
  return JSON.parse(r.body)
}

function hcmWith(filters: unknown[]): unknown {
  return {
    name: 'envoy.filters.network.http_connection_manager',
    typed_config: {
      '@type': HCM,
      stat_prefix: 'ingress',
      route_config: {
        virtual_hosts: [
          { name: 'all', domains: ['*'], routes: [{ match: { prefix: '/' }, route: { cluster: 'be' } }] },
        ],
      },
      http_filters: [...filters, { name: 'envoy.filters.http.router', typed_config: { '@type': ROUTER } }],
    },
  }
}

function httpAuthz(extra: Record<string, unknown> = {}): unknown {
  return {
    name: 'envoy.filters.http.ext_authz',
    typed_config: {
      '@type': EXT_AUTHZ,
      http_service: {
        server_uri: { uri: 'http://authz', cluster: 'authz-http', timeout: '0.5s' },
        path_prefix: '/check',
        authorization_request: {
          allowed_headers: { patterns: [{ exact: 'x-ext-authz' }] },
          headers_to_add: [{ key: 'x-from-proxy', value: 'loom' }],
        },
        authorization_response: {
          allowed_upstream_headers: { patterns: [{ exact: 'x-auth-user' }] },
          allowed_client_headers: { patterns: [{ exact: 'x-ext-authz-check-result' }] },
          allowed_client_headers_on_success: { patterns: [{ prefix: 'x-client-' }] },
        },
      },
      ...extra,
    },
  }
}

describe('ext_authz (static bootstrap)', () => {
  let be: Backend
  let authz: Backend
  let grpcServer: grpc.Server
  let grpcPort: number
  let proxy: RunningProxy
  const held: http.ServerResponse[] = []
  const grpcSeen: { headers: Record<string, string>; path: string; body: string }[] = []

  before(async () => {
    be = await startBackend()
    // Istio's sample authorizer's rule: allow when x-ext-authz is "allow"
    authz = await startBackend((req, res, body) => {
      const path = req.url ?? ''
      if (path.startsWith('/check/slow')) {
        held.push(res) // never answered: the check times out
        return
      }
      if (path.startsWith('/check/boom')) {
        res.writeHead(500)
        res.end('authorizer broke')
        return
      }
      if (req.headers['x-ext-authz'] === 'allow') {
        res.writeHead(200, {
          'x-ext-authz-check-result': 'allowed',
          'x-auth-user': 'alice',
          'x-client-note': 'checked',
          'x-not-passed': 'nope',
          'x-seen-body': body,
        })
        res.end()
        return
      }
      res.writeHead(403, { 'x-ext-authz-check-result': 'denied', 'x-not-passed': 'nope', 'content-type': 'text/plain' })
      res.end('denied by ext_authz for not found header `x-ext-authz: allow` in the request')
    })

    const def = protoLoader.loadSync('envoy/service/auth/v3/external_auth.proto', {
      includeDirs: protoIncludeDirs(),
      keepCase: true,
      longs: Number,
      enums: String,
      defaults: false,
    })
    const pkg = grpc.loadPackageDefinition(def) as unknown as {
      envoy: { service: { auth: { v3: { Authorization: { service: grpc.ServiceDefinition } } } } }
    }
    grpcServer = new grpc.Server()
    grpcServer.addService(pkg.envoy.service.auth.v3.Authorization.service, {
      Check(
        call: grpc.ServerUnaryCall<
          { attributes: { request: { http: { headers: Record<string, string>; path: string; body?: string } } } },
          unknown
        >,
        cb: grpc.sendUnaryData<unknown>,
      ) {
        const h = call.request.attributes.request.http
        grpcSeen.push({ headers: h.headers, path: h.path, body: h.body ?? '' })
        if (h.headers['x-ext-authz'] === 'allow') {
          cb(null, {
            status: { code: 0 },
            ok_response: {
              headers: [
                { header: { key: 'x-ext-authz-added', value: 'grpc' } },
                { header: { key: 'x-tag', value: 'two' }, append: { value: true } },
              ],
              headers_to_remove: ['x-drop-me'],
              response_headers_to_add: [{ header: { key: 'x-client-grpc', value: 'ok' } }],
            },
          })
          return
        }
        if (h.headers['x-ext-authz'] === 'broken') {
          cb({ code: grpc.status.UNAVAILABLE, details: 'authorizer is down' })
          return
        }
        cb(null, {
          status: { code: 7 },
          denied_response: {
            status: { code: 'Unauthorized' },
            headers: [{ header: { key: 'x-denied-by', value: 'grpc-authorizer' } }],
            body: 'grpc says no',
          },
        })
      },
    })
    grpcPort = await new Promise<number>((resolve, reject) =>
      grpcServer.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, port) =>
        err ? reject(err) : resolve(port),
      ),
    )

    const grpcAuthz = (extra: Record<string, unknown> = {}) => ({
      name: 'envoy.filters.http.ext_authz',
      typed_config: {
        '@type': EXT_AUTHZ,
        grpc_service: { envoy_grpc: { cluster_name: 'authz-grpc' }, timeout: '2s' },
        ...extra,
      },
    })
    const h2 = {
      typed_extension_protocol_options: {
        'envoy.extensions.upstreams.http.v3.HttpProtocolOptions': {
          '@type': 'type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions',
          explicit_http_config: { http2_protocol_options: {} },
        },
      },
    }
    proxy = await startProxy({
      admin: { address: adminAddress() },
      static_resources: {
        listeners: [
          listener(
            'http',
            hcmWith([
              httpAuthz({
                status_on_error: { code: 'ServiceUnavailable' },
                with_request_body: { max_request_bytes: 16, allow_partial_message: true },
              }),
            ]),
          ),
          listener(
            'open',
            hcmWith([
              httpAuthz({
                stat_prefix: 'open',
                failure_mode_allow: true,
                failure_mode_allow_header_add: true,
              }),
            ]),
          ),
          listener('grpc', hcmWith([grpcAuthz({ with_request_body: { max_request_bytes: 1024 } })])),
          // a filter before it holds the request (a delay): the body that arrived meanwhile still goes with the check
          listener(
            'delayed',
            hcmWith([
              {
                name: 'envoy.filters.http.fault',
                typed_config: {
                  '@type': 'type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault',
                  delay: { fixed_delay: '0.2s', percentage: { numerator: 100 } },
                },
              },
              httpAuthz({ stat_prefix: 'delayed', with_request_body: { max_request_bytes: 1024 } }),
            ]),
          ),
          // Istio's CUSTOM shape: a shadow RBAC names the matched CUSTOM policy; ext_authz runs only then
          listener(
            'custom',
            hcmWith([
              {
                name: 'envoy.filters.http.rbac',
                typed_config: {
                  '@type': RBAC,
                  shadow_rules: {
                    action: 'DENY',
                    policies: {
                      'istio-ext-authz-ns[foo]-policy[ext-authz]-rule[0]': {
                        permissions: [{ url_path: { path: { prefix: '/headers' } } }],
                        principals: [{ any: true }],
                      },
                    },
                  },
                  shadow_rules_stat_prefix: 'istio_ext_authz_',
                },
              },
              grpcAuthz({
                stat_prefix: 'custom',
                filter_enabled_metadata: {
                  filter: 'envoy.filters.http.rbac',
                  path: [{ key: 'istio_ext_authz_shadow_effective_policy_id' }],
                  value: { string_match: { prefix: 'istio-ext-authz' } },
                },
              }),
            ]),
          ),
        ],
        clusters: [
          staticCluster('be', [be.port]),
          staticCluster('authz-http', [authz.port]),
          staticCluster('authz-grpc', [grpcPort], h2),
        ],
      },
    })
  })

  after(async () => {
    await proxy?.stop()
    for (const r of held) r.destroy()
    await be?.close()
    await authz?.close()
    grpcServer?.forceShutdown()
  })

  test('HTTP: allowed on the header; the check carries the allowed headers and the prefix', async () => {
    const r = await request(proxy.ports.http!, '/ip', { 'x-ext-authz': 'allow', 'x-other': 'secret' })
    const e = echoed(r)
    assert.equal(e.headers['x-auth-user'], 'alice', 'allowed_upstream_headers go upstream')
    assert.equal(e.headers['x-not-passed'], undefined)
    assert.equal(e.headers['x-ext-authz-check-result'], undefined)
    assert.equal(r.headers['x-client-note'], 'checked', 'allowed_client_headers_on_success reach the client')
    const check = authz.requests.at(-1)!
    assert.equal(check.url, '/check/ip')
    assert.equal(check.method, 'GET')
    assert.equal(check.headers['x-ext-authz'], 'allow')
    assert.equal(check.headers['x-from-proxy'], 'loom')
    assert.equal(check.headers['x-other'], undefined, 'headers not in allowed_headers stay out of the check')
  })

  test('HTTP: denied with the authorizer status, body and allowed client headers; flag UAEX', async () => {
    const before = be.requests.length
    const r = await request(proxy.ports.http!, '/ip')
    assert.equal(r.status, 403)
    assert.match(r.body, /denied by ext_authz/)
    assert.equal(r.headers['x-ext-authz-check-result'], 'denied')
    assert.equal(r.headers['x-not-passed'], undefined)
    assert.equal(r.headers['x-loom-reason'], 'ext_authz_denied')
    assert.equal(be.requests.length, before, 'a denied request never reaches the upstream')
    assert.equal(await stat(proxy.admin, 'http.ingress.ext_authz.denied'), 1)
  })

  test('HTTP: a check that times out gets status_on_error; a 5xx from the authorizer is an error', async () => {
    const t0 = performance.now()
    const slow = await request(proxy.ports.http!, '/slow', { 'x-ext-authz': 'allow' })
    assert.equal(slow.status, 503)
    assert.equal(slow.headers['x-loom-reason'], 'ext_authz_error')
    assert.ok(performance.now() - t0 >= 450, 'the check waited for its timeout')
    const boom = await request(proxy.ports.http!, '/boom', { 'x-ext-authz': 'allow' })
    assert.equal(boom.status, 503)
    assert.equal(await stat(proxy.admin, 'http.ingress.ext_authz.error'), 2)
  })

  test('HTTP: with_request_body sends the first max_request_bytes with the check', async () => {
    const r = await request(
      proxy.ports.http!,
      '/post',
      { 'x-ext-authz': 'allow', 'content-type': 'text/plain' },
      'a body longer than sixteen bytes',
    )
    const e = echoed(r)
    assert.equal(e.body, 'a body longer than sixteen bytes', 'the upstream gets the whole body')
    const check = authz.requests.at(-1)!
    assert.equal(check.body, 'a body longer th')
    assert.equal(check.headers['x-envoy-auth-partial-body'], 'true')
  })

  test('HTTP: a body held by an earlier filter (a fault delay) is sent with the check', {
    timeout: 10_000,
  }, async () => {
    const t0 = performance.now()
    const r = await request(proxy.ports.delayed!, '/post', { 'x-ext-authz': 'allow' }, 'held while delayed')
    assert.ok(performance.now() - t0 >= 190, 'the fault filter delayed the request')
    assert.equal(echoed(r).body, 'held while delayed')
    assert.equal(authz.requests.at(-1)!.body, 'held while delayed')
    assert.equal(authz.requests.at(-1)!.headers['x-envoy-auth-partial-body'], 'false')
  })

  test('HTTP: failure_mode_allow lets the request through when the check fails', async () => {
    const r = await request(proxy.ports.open!, '/slow')
    const e = echoed(r)
    assert.equal(e.headers['x-envoy-auth-failure-mode-allowed'], 'true')
    const denied = await request(proxy.ports.open!, '/ip')
    assert.equal(denied.status, 403, 'a denial is still a denial')
    assert.equal(await stat(proxy.admin, 'http.ingress.ext_authz.open.failure_mode_allowed'), 1)
  })

  test('gRPC: allowed with headers added, appended and removed; the body goes with the check', async () => {
    const r = await request(
      proxy.ports.grpc!,
      '/anything?x=1',
      { 'x-ext-authz': 'allow', 'x-tag': 'one', 'x-drop-me': 'yes', 'content-type': 'text/plain' },
      'hello',
    )
    const e = echoed(r)
    assert.equal(e.headers['x-ext-authz-added'], 'grpc')
    assert.equal(e.headers['x-tag'], 'one, two')
    assert.equal(e.headers['x-drop-me'], undefined)
    assert.equal(e.body, 'hello')
    assert.equal(r.headers['x-client-grpc'], 'ok')
    const seen = grpcSeen.at(-1)!
    assert.equal(seen.path, '/anything?x=1')
    assert.equal(seen.headers[':method'], 'POST')
    assert.equal(seen.body, 'hello')
  })

  test('gRPC: denied_response gives the status, headers and body; a gRPC error is status_on_error', async () => {
    const r = await request(proxy.ports.grpc!, '/anything')
    assert.equal(r.status, 401)
    assert.equal(r.body, 'grpc says no')
    assert.equal(r.headers['x-denied-by'], 'grpc-authorizer')
    assert.equal(r.headers['x-loom-reason'], 'ext_authz_denied')
    const broken = await request(proxy.ports.grpc!, '/anything', { 'x-ext-authz': 'broken' })
    assert.equal(broken.status, 403)
    assert.equal(broken.headers['x-loom-reason'], 'ext_authz_error')
  })

  test('CUSTOM wiring: only requests the shadow policy matched are checked', async () => {
    const checks = grpcSeen.length
    const free = await request(proxy.ports.custom!, '/ip')
    echoed(free)
    assert.equal(grpcSeen.length, checks, 'no check for a request no CUSTOM policy matched')
    const denied = await request(proxy.ports.custom!, '/headers')
    assert.equal(denied.status, 401)
    const allowed = await request(proxy.ports.custom!, '/headers', { 'x-ext-authz': 'allow' })
    assert.equal(echoed(allowed).headers['x-ext-authz-added'], 'grpc')
    assert.equal(grpcSeen.length, checks + 2)
    assert.equal(await stat(proxy.admin, 'http.ingress.ext_authz.custom.disabled'), 1)
  })
})

/** Istio's sample authorizer: allows when `x-ext-authz: allow`, else 403, and says so in x-ext-authz-check-result. */
function sampleAuthorizer(): Promise<Backend> {
  return startBackend((req, res) => {
    const allowed = req.headers['x-ext-authz'] === 'allow'
    res.writeHead(allowed ? 200 : 403, { 'x-ext-authz-check-result': allowed ? 'allowed' : 'denied' })
    res.end(allowed ? '' : 'denied by ext_authz for not found header `x-ext-authz: allow` in the request')
  })
}

const MESH_CONFIG = `# the object of the istio ConfigMap's "mesh" key
extensionProviders:
- name: sample-ext-authz-http
  envoyExtAuthzHttp:
    service: ext-authz.foo.svc.cluster.local
    port: "8000"
    includeRequestHeadersInCheck: ["x-ext-authz"]
    headersToUpstreamOnAllow: ["x-ext-authz-check-result"]
    headersToDownstreamOnDeny: ["x-ext-authz-check-result"]
- name: zipkin
  zipkin: {service: zipkin.istio-system.svc.cluster.local, port: 9411}
defaultConfig:
  concurrency: 2
`

describe('CUSTOM AuthorizationPolicy through loom control --mesh-config and a sidecar', () => {
  const procs: Proc[] = []
  let backend: Backend
  let authorizer: Backend
  let cp: Control
  let inbound: number

  const send = (path: string, headers: Record<string, string> = {}) => request(inbound, path, headers)

  before(async () => {
    backend = await startBackend()
    authorizer = await sampleAuthorizer()
    cp = await startControl(undefined, 0, ['--mesh-config', writeTemp('mesh.yaml', MESH_CONFIG)])
    procs.push(cp)
    const register = async (body: unknown) => {
      const res = await fetch(`http://${cp.api}/api/v1/workloads`, { method: 'POST', body: JSON.stringify(body) })
      assert.equal(res.status, 200, await res.text())
    }
    // the authorizer, ext-authz.foo:8000 in the registry
    await register({
      name: 'ext-authz',
      namespace: 'foo',
      address: '127.0.0.1',
      ports: [{ name: 'http', number: authorizer.port, servicePort: 8000 }],
      labels: { app: 'ext-authz' },
      ttlSeconds: 600,
    })
    inbound = await freePort()
    await register({
      name: 'httpbin-v1',
      namespace: 'default',
      address: '127.0.0.1',
      ports: [{ name: 'http', number: inbound, servicePort: 8000 }],
      labels: { app: 'httpbin', version: 'v1' },
      ttlSeconds: 600,
    })
    const sidecar = await startSidecar(cp.xds, { app: 'httpbin', version: 'v1' }, await freePort(), [
      '--metadata',
      `APP_PORTS=8000:${backend.port}`,
    ])
    procs.push(sidecar)
    await eventually(async () => (await send('/headers')).status === 200, 15000, 'the inbound listener')
  })

  after(async () => {
    for (const p of procs.reverse()) await p.stop()
    await backend?.close()
    await authorizer?.close()
  })

  test('the mesh config fields Loom does not read are warnings', () => {
    assert.match(cp.stderr(), /mesh\.yaml: extensionProviders\[1\]\.zipkin: not read by Loom \(ignored\)/)
    assert.match(cp.stderr(), /mesh\.yaml: defaultConfig\.concurrency: not read by Loom \(ignored\)/)
  })

  test("Istio's task: /headers is checked by the authorizer, /ip is not", async () => {
    const policy = writeTemp(
      'ext-authz.yaml',
      `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ext-authz, namespace: default}
spec:
  selector: {matchLabels: {app: httpbin}}
  action: CUSTOM
  provider: {name: sample-ext-authz-http}
  rules:
  - to:
    - operation: {paths: ["/headers"]}
`,
    )
    const r = await cp.loom(['apply', '-f', policy])
    assert.equal(r.code, 0, r.stderr)
    assert.equal(r.stderr, '', 'the provider is known: no diagnostic')
    await eventually(async () => (await send('/headers')).status === 403, 15000, 'the CUSTOM policy')
    const denied = await send('/headers', { 'x-ext-authz': 'deny' })
    assert.equal(denied.status, 403)
    assert.equal(denied.headers['x-ext-authz-check-result'], 'denied')
    assert.match(denied.body, /denied by ext_authz for not found header `x-ext-authz: allow`/)
    const allowed = await send('/headers', { 'x-ext-authz': 'allow' })
    const e = echoed(allowed)
    assert.equal(e.headers['x-ext-authz-check-result'], 'allowed', 'headersToUpstreamOnAllow')
    const checks = authorizer.requests.length
    echoed(await send('/ip'))
    assert.equal(authorizer.requests.length, checks, 'a request no CUSTOM rule matches is not checked')
    assert.equal(authorizer.requests.at(-1)!.url, '/headers')
  })

  test('a second CUSTOM policy naming an unknown provider: an analyze error, and their requests denied', async () => {
    const policy = writeTemp(
      'bad.yaml',
      `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: bad-provider, namespace: default}
spec:
  selector: {matchLabels: {app: httpbin}}
  action: CUSTOM
  provider: {name: nope}
  rules: [{to: [{operation: {paths: ["/status/*"]}}]}]
`,
    )
    const r = await cp.loom(['apply', '-f', policy])
    assert.match(r.stderr, /spec\.provider\.name: extension provider "nope" is not defined in the mesh config/)
    await eventually(
      async () => (await send('/headers', { 'x-ext-authz': 'allow' })).status === 403,
      15000,
      'the bad CUSTOM policies deny',
    )
    const res = await send('/status/200', { 'x-ext-authz': 'allow' })
    assert.equal(res.status, 403)
    assert.match(res.body, /RBAC: access denied/)
    assert.equal(
      res.headers['x-loom-reason'],
      'rbac_access_denied_matched_policy[istio-ext-authz-ns[default]-policy[bad-provider]-rule[0]-deny-due-to-bad-CUSTOM-action]',
    )
    echoed(await send('/ip'))
  })

  test('a mesh config with a bad field is refused, with its file and field path', async () => {
    const file = writeTemp(
      'bad-mesh.yaml',
      'extensionProviders:\n- name: a\n  envoyExtAuthzHttp: {service: a.b.svc.cluster.local, port: "http"}\n',
    )
    const r = await runLoom(['control', '--mesh-config', file, '--api', '127.0.0.1:0', '--xds', '127.0.0.1:0'])
    assert.notEqual(r.code, 0)
    assert.ok(
      r.stderr.includes(`${file}: extensionProviders[0].envoyExtAuthzHttp.port: port must be a number`),
      r.stderr,
    )
    const wrapped = writeTemp('wrapped.yaml', 'meshConfig:\n  trustDomain: example.com\n')
    const w = await runLoom(['control', '--mesh-config', wrapped, '--api', '127.0.0.1:0', '--xds', '127.0.0.1:0'])
    assert.notEqual(w.code, 0)
    assert.match(w.stderr, /found a "meshConfig" key: the file is the MeshConfig object itself/)
  })
})
