/**
 * AuthorizationPolicy translation, judged by what the proxy decides: each case translates policies for one
 * workload, validates the filters with the proxy's schema, compiles them with the proxy's RBAC filter and runs
 * requests through them in chain order (a request passes when every filter lets it through), as Istio's semantics
 * say it must go.
 */
import assert from 'node:assert/strict'
import type { Socket } from 'node:net'
import { describe, it } from 'node:test'
import * as v from 'valibot'
import type { AuthorizationPolicySpec, Resource } from '../../api/index.js'
import { ExtAuthz, HttpFilter, NetworkFilter, type RbacRules } from '../../config/envoy.js'
import type { ConfigIssue } from '../../core/errors.js'
import { Headers } from '../../proxy/http/headers.js'
import { RbacEngine, type RbacInput } from '../../proxy/http/filters/rbac/matcher.js'
import { RbacRulesEngine } from '../../proxy/rbac/matcher.js'
import { CONNECTION_RULES } from '../../proxy/rbac/network.js'
import { decodeResource, encodeResource } from '../../xds/proto.js'
import type { ProxyNode } from '../../xds/snapshot.js'
import type { Service } from '../registry/registry.js'
import { applicablePolicies, authzHttpFilters, authzNetworkFilters, pathMatcher, stringMatcher } from './authz.js'
import { resolveMeshConfig, Scope } from './scope.js'
import type { Json } from './util.js'

const NODE: ProxyNode = {
  id: 'sidecar~10.0.0.9~productpage-v1.default~default.svc.cluster.local',
  kind: 'sidecar',
  namespace: 'default',
  labels: { app: 'productpage', version: 'v1' },
  serviceAccount: 'bookinfo-productpage',
  ip: '10.0.0.9',
  generator: 'envoy',
}

function policy(
  name: string,
  spec: AuthorizationPolicySpec,
  namespace = 'default',
  annotations?: Record<string, string>,
): Resource<AuthorizationPolicySpec> {
  return {
    apiVersion: 'security.istio.io/v1',
    kind: 'AuthorizationPolicy',
    metadata: { name, namespace, ...(annotations === undefined ? {} : { annotations }) },
    spec,
  }
}

function scopeOf(resources: Resource[], node: ProxyNode = NODE): Scope {
  return new Scope(resources, [], node, resolveMeshConfig(undefined))
}

interface Req {
  method?: string
  path?: string
  host?: string
  headers?: string[]
  /** the verified peer's SPIFFE ID; none: plain text */
  peer?: string
  ip?: string
  remoteIp?: string
  port?: number
  /** the TLS connection's SNI */
  sni?: string
  metadata?: Record<string, Record<string, unknown>>
}

function requestInput(r: Req): RbacInput {
  const socket: Partial<Socket> & Record<string, unknown> = {
    remoteAddress: r.ip ?? '10.0.0.5',
    localAddress: '10.0.0.9',
    localPort: r.port ?? 9080,
  }
  if (r.sni !== undefined) socket.servername = r.sni
  if (r.peer !== undefined) {
    socket.authorized = true
    socket.getPeerCertificate = () => ({ subject: {}, subjectaltname: `URI:${r.peer}`, raw: Buffer.alloc(0) })
  }
  return {
    head: {
      method: r.method ?? 'GET',
      authority: r.host ?? 'productpage:9080',
      path: r.path ?? '/',
      scheme: 'http',
      headers: new Headers(r.headers ?? []),
      upgrade: null,
      protocol: 'HTTP/1.1',
    },
    downstreamSocket: socket as unknown as Socket,
    sourceIp: r.remoteIp ?? r.ip ?? '10.0.0.5',
    metadata: (ns) => r.metadata?.[ns],
  }
}

/** The filters for the workload, compiled as the proxy compiles them. */
function compiled(resources: Resource[], node?: ProxyNode, listenPort = 9080) {
  const filters = authzHttpFilters(scopeOf(resources, node), { workloadPort: 9080, listenPort })
  return filters.map((f) => {
    const parsed = v.safeParse(HttpFilter, f)
    assert.ok(parsed.success, JSON.stringify(parsed.issues?.map((i) => i.message)))
    const tc = parsed.output.typed_config as { rules?: RbacRules }
    const issues: ConfigIssue[] = []
    const engine = tc.rules === undefined ? null : new RbacEngine(tc.rules, 'rules', issues)
    assert.deepEqual(issues, [])
    return { name: f.name as string, engine }
  })
}

/** Whether the chain admits the request. */
function admits(resources: Resource[], r: Req, node?: ProxyNode, listenPort?: number): boolean {
  for (const { engine } of compiled(resources, node, listenPort)) {
    if (engine === null) continue
    const input = requestInput(r)
    if (!engine.allows(engine.matchedPolicy(input))) return false
  }
  return true
}

const ALLOW_NOTHING = policy('allow-nothing', {})

describe('which policies apply', () => {
  it('no policy: no filter, everything is allowed', () => {
    assert.deepEqual(authzHttpFilters(scopeOf([]), { workloadPort: 9080, listenPort: 9080 }), [])
    assert.equal(admits([], {}), true)
  })
  it('the root namespace applies mesh-wide; other namespaces only to their own workloads', () => {
    const list = [
      policy('mesh', {}, 'istio-system'),
      policy('here', {}, 'default'),
      policy('there', {}, 'foo'),
      policy('selected', { selector: { matchLabels: { app: 'productpage' } } }),
      policy('not-selected', { selector: { matchLabels: { app: 'reviews' } } }),
      policy('root-selected', { selector: { matchLabels: { app: 'productpage' } } }, 'istio-system'),
      policy('waypoint', { targetRefs: [{ kind: 'Gateway', group: 'gateway.networking.k8s.io', name: 'w' }] }),
    ]
    assert.deepEqual(
      applicablePolicies(scopeOf(list)).map((p) => p.metadata.name),
      ['here', 'selected', 'mesh', 'root-selected'],
    )
  })
  it('filters in Istio order, CUSTOM, AUDIT, DENY, ALLOW', () => {
    const list = [
      policy('a', { action: 'ALLOW', rules: [{}] }),
      policy('d', { action: 'DENY', rules: [{}] }),
      policy('l', { action: 'AUDIT', rules: [{}] }),
      policy('c', { action: 'CUSTOM', provider: { name: 'x' }, rules: [{}] }),
    ]
    assert.deepEqual(
      compiled(list).map((f) => f.name),
      [
        'envoy.filters.http.rbac.custom',
        'envoy.filters.http.rbac.audit',
        'envoy.filters.http.rbac.deny',
        'envoy.filters.http.rbac.allow',
      ],
    )
  })
})

describe('CUSTOM (external authorization)', () => {
  const AUTHZ_HOST = 'ext-authz.foo.svc.cluster.local'
  const services = [{ hostname: AUTHZ_HOST, namespace: 'foo' }] as unknown as Service[]
  const mesh = resolveMeshConfig({
    extensionProviders: [
      {
        name: 'sample-ext-authz-http',
        envoyExtAuthzHttp: {
          service: AUTHZ_HOST,
          port: 8000,
          includeRequestHeadersInCheck: ['x-ext-authz'],
          headersToUpstreamOnAllow: ['x-auth-*'],
          headersToDownstreamOnDeny: ['x-ext-authz-check-result'],
          headersToDownstreamOnAllow: ['*-note'],
          includeAdditionalHeadersInCheck: { 'x-b': '2', 'x-a': '1' },
          pathPrefix: '/check',
          statusOnError: '503',
          includeRequestBodyInCheck: { maxRequestBytes: 4096, allowPartialMessage: true },
        },
      },
      {
        name: 'sample-ext-authz-grpc',
        envoyExtAuthzGrpc: { service: `foo/${AUTHZ_HOST}`, port: 9000, failOpen: true },
      },
      { name: 'gone', envoyExtAuthzHttp: { service: 'nowhere.example.com', port: 80 } },
    ],
  })
  const custom = (provider: string) =>
    policy('ext-authz', {
      action: 'CUSTOM',
      provider: { name: provider },
      rules: [{ to: [{ operation: { paths: ['/headers'] } }] }],
    })
  const filtersOf = (resources: Resource[]) => {
    const scope = new Scope(resources, services, NODE, mesh)
    return authzHttpFilters(scope, { workloadPort: 9080, listenPort: 9080 }).map((f) => {
      const parsed = v.safeParse(HttpFilter, f)
      assert.ok(parsed.success, JSON.stringify(parsed.issues?.map((i) => `${i.path?.map((p) => p.key)}: ${i.message}`)))
      return f as { name: string; typed_config: Json }
    })
  }

  it('an HTTP provider: the RBAC shadow names the policy, ext_authz runs when it matched', () => {
    const [rbac, ext, deny] = filtersOf([custom('sample-ext-authz-http'), policy('d', { action: 'DENY', rules: [{}] })])
    assert.equal(rbac!.name, 'envoy.filters.http.rbac.custom')
    const tc = rbac!.typed_config as { shadow_rules: RbacRules; shadow_rules_stat_prefix: string; rules?: unknown }
    assert.equal(tc.rules, undefined, 'nothing enforced by the RBAC filter')
    assert.equal(tc.shadow_rules_stat_prefix, 'istio_ext_authz_')
    assert.equal(tc.shadow_rules.action, 'DENY')
    assert.deepEqual(Object.keys(tc.shadow_rules.policies ?? {}), [
      'istio-ext-authz-ns[default]-policy[ext-authz]-rule[0]',
    ])
    assert.equal(ext!.name, 'envoy.filters.http.ext_authz')
    assert.equal(deny!.name, 'envoy.filters.http.rbac.deny', 'CUSTOM before DENY')
    assert.deepEqual(ext!.typed_config, {
      '@type': 'type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz',
      http_service: {
        server_uri: { uri: `http://${AUTHZ_HOST}`, cluster: `outbound|8000||${AUTHZ_HOST}`, timeout: '600s' },
        path_prefix: '/check',
        authorization_request: {
          headers_to_add: [
            { key: 'x-a', value: '1' },
            { key: 'x-b', value: '2' },
          ],
        },
        authorization_response: {
          allowed_upstream_headers: { patterns: [{ prefix: 'x-auth-', ignore_case: true }] },
          allowed_client_headers: { patterns: [{ exact: 'x-ext-authz-check-result', ignore_case: true }] },
          allowed_client_headers_on_success: { patterns: [{ suffix: '-note', ignore_case: true }] },
        },
      },
      allowed_headers: { patterns: [{ exact: 'x-ext-authz', ignore_case: true }] },
      transport_api_version: 'V3',
      status_on_error: { code: 503 },
      with_request_body: { max_request_bytes: 4096, allow_partial_message: true },
      filter_enabled_metadata: {
        filter: 'envoy.filters.http.rbac',
        path: [{ key: 'istio_ext_authz_shadow_effective_policy_id' }],
        value: { string_match: { prefix: 'istio-ext-authz' } },
      },
    })
    // the shadow engine matches /headers only: the metadata that enables the check
    const engine = new RbacEngine(tc.shadow_rules, 'shadow_rules', [])
    assert.equal(
      engine.matchedPolicy(requestInput({ path: '/headers' })),
      'istio-ext-authz-ns[default]-policy[ext-authz]-rule[0]',
    )
    assert.equal(engine.matchedPolicy(requestInput({ path: '/ip' })), null)
  })

  it('a gRPC provider, its namespace given: grpc_service on the outbound cluster, fail open', () => {
    const ext = filtersOf([custom('sample-ext-authz-grpc')])[1]!.typed_config
    assert.deepEqual(ext.grpc_service, {
      envoy_grpc: {
        cluster_name: `outbound|9000||${AUTHZ_HOST}`,
        authority: `outbound_.9000_._.${AUTHZ_HOST}`,
      },
      timeout: '600s',
    })
    assert.equal(ext.failure_mode_allow, true)
  })

  it('an unknown provider, a service not in the registry, two providers: the rules deny (Istio)', () => {
    for (const list of [
      [custom('nope')],
      [custom('gone')],
      [
        custom('sample-ext-authz-http'),
        { ...custom('sample-ext-authz-grpc'), metadata: { name: 'b', namespace: 'default' } },
      ],
    ]) {
      const fs = filtersOf(list as Resource[])
      assert.equal(fs.length, 1)
      const tc = fs[0]!.typed_config as { rules: RbacRules }
      assert.equal(tc.rules.action, 'DENY')
      for (const name of Object.keys(tc.rules.policies ?? {}))
        assert.match(name, /^istio-ext-authz-ns\[default\]-policy\[.*\]-rule\[0\]-deny-due-to-bad-CUSTOM-action$/)
      const engine = new RbacEngine(tc.rules, 'rules', [])
      assert.equal(engine.allows(engine.matchedPolicy(requestInput({ path: '/headers' }))), false)
      assert.equal(engine.allows(engine.matchedPolicy(requestInput({ path: '/ip' }))), true)
    }
  })

  it('the ext_authz config survives protobuf (xDS) and the proxy takes it', () => {
    for (const provider of ['sample-ext-authz-http', 'sample-ext-authz-grpc']) {
      const tc = filtersOf([custom(provider)])[1]!.typed_config
      const back = decodeResource(encodeResource(tc))
      const parsed = v.safeParse(ExtAuthz, back)
      assert.ok(parsed.success, JSON.stringify(parsed.issues?.map((i) => i.message)))
      const want = v.parse(ExtAuthz, tc)
      assert.deepEqual(parsed.output, want, provider)
    }
  })

  it('a dry-run CUSTOM policy is not built', () => {
    const p = custom('sample-ext-authz-http')
    p.metadata.annotations = { 'istio.io/dry-run': 'true' }
    assert.deepEqual(filtersOf([p]), [])
  })
})

describe('Istio semantics, end to end through the proxy engine', () => {
  const getProductpage = policy('get-productpage', {
    rules: [{ to: [{ operation: { methods: ['GET'], paths: ['/productpage'] } }] }],
  })
  const denyHeader = policy('deny-header', {
    action: 'DENY',
    rules: [{ when: [{ key: 'request.headers[x-block]', values: ['yes'] }] }],
  })
  const cases: [string, Resource[], Req, boolean][] = [
    ['allow-nothing ({}) denies everything', [ALLOW_NOTHING], {}, false],
    ['an ALLOW with a {} rule allows everything', [policy('all', { rules: [{}] })], { method: 'DELETE' }, true],
    [
      'allow-nothing beside an ALLOW of GET: the GET passes',
      [ALLOW_NOTHING, getProductpage],
      { path: '/productpage' },
      true,
    ],
    ['ALLOW GET /productpage: GET /productpage', [getProductpage], { path: '/productpage?x=1' }, true],
    ['ALLOW GET /productpage: POST /productpage', [getProductpage], { method: 'POST', path: '/productpage' }, false],
    ['ALLOW GET /productpage: GET /reviews', [getProductpage], { path: '/reviews' }, false],
    [
      'DENY wins over ALLOW',
      [getProductpage, denyHeader],
      { path: '/productpage', headers: ['x-block', 'yes'] },
      false,
    ],
    ['DENY without a match leaves ALLOW to decide', [getProductpage, denyHeader], { path: '/productpage' }, true],
    ['DENY alone: the rest is allowed', [denyHeader], { path: '/anything' }, true],
    ['AUDIT never denies', [policy('audit', { action: 'AUDIT', rules: [{}] })], {}, true],
    ['dry-run ALLOW is not enforced', [policy('dry', {}, 'default', { 'istio.io/dry-run': 'true' })], {}, true],
    [
      'principals need mTLS: plain text does not match',
      [policy('p', { rules: [{ from: [{ source: { principals: ['cluster.local/ns/default/sa/sleep'] } }] }] })],
      {},
      false,
    ],
    [
      'principals: the peer’s SPIFFE ID',
      [policy('p', { rules: [{ from: [{ source: { principals: ['cluster.local/ns/default/sa/sleep'] } }] }] })],
      { peer: 'spiffe://cluster.local/ns/default/sa/sleep' },
      true,
    ],
    [
      'principals: * is any authenticated peer',
      [policy('p', { rules: [{ from: [{ source: { principals: ['*'] } }] }] })],
      { peer: 'spiffe://cluster.local/ns/x/sa/y' },
      true,
    ],
    [
      'principals: prefix*',
      [policy('p', { rules: [{ from: [{ source: { principals: ['cluster.local/ns/foo/*'] } }] }] })],
      { peer: 'spiffe://cluster.local/ns/foo/sa/y' },
      true,
    ],
    [
      'principals: *suffix',
      [policy('p', { rules: [{ from: [{ source: { principals: ['*/sa/sleep'] } }] }] })],
      { peer: 'spiffe://other.td/ns/bar/sa/sleep' },
      true,
    ],
    [
      'namespaces: /ns/<ns>/ in the peer’s ID',
      [policy('p', { rules: [{ from: [{ source: { namespaces: ['foo'] } }] }] })],
      { peer: 'spiffe://cluster.local/ns/foo/sa/y' },
      true,
    ],
    [
      'namespaces: another namespace',
      [policy('p', { rules: [{ from: [{ source: { namespaces: ['foo'] } }] }] })],
      { peer: 'spiffe://cluster.local/ns/foobar/sa/y' },
      false,
    ],
    ['namespaces need mTLS', [policy('p', { rules: [{ from: [{ source: { namespaces: ['foo'] } }] }] })], {}, false],
    [
      'DENY notNamespaces: plain text has no namespace, so it is denied',
      [policy('d', { action: 'DENY', rules: [{ from: [{ source: { notNamespaces: ['foo'] } }] }] })],
      {},
      false,
    ],
    [
      'serviceAccounts: ns/sa',
      [policy('p', { rules: [{ from: [{ source: { serviceAccounts: ['foo/sleep'] } }] }] })],
      { peer: 'spiffe://cluster.local/ns/foo/sa/sleep' },
      true,
    ],
    [
      'ipBlocks: the connection’s peer',
      [policy('p', { rules: [{ from: [{ source: { ipBlocks: ['10.0.0.0/24'] } }] }] })],
      { ip: '10.0.0.5', remoteIp: '192.0.2.1' },
      true,
    ],
    [
      'remoteIpBlocks: the trusted client address',
      [policy('p', { rules: [{ from: [{ source: { remoteIpBlocks: ['192.0.2.1'] } }] }] })],
      { ip: '10.0.0.5', remoteIp: '192.0.2.1' },
      true,
    ],
    [
      'notIpBlocks',
      [policy('p', { rules: [{ from: [{ source: { notIpBlocks: ['10.0.0.0/8'] } }] }] })],
      { ip: '10.0.0.5' },
      false,
    ],
    [
      'requestPrincipals: istio_authn metadata',
      [policy('p', { rules: [{ from: [{ source: { requestPrincipals: ['https://issuer/alice'] } }] }] })],
      { metadata: { istio_authn: { 'request.auth.principal': 'https://issuer/alice' } } },
      true,
    ],
    [
      'requestPrincipals: * needs a verified token',
      [policy('p', { rules: [{ from: [{ source: { requestPrincipals: ['*'] } }] }] })],
      {},
      false,
    ],
    [
      'notRequestPrincipals',
      [policy('p', { rules: [{ from: [{ source: { notRequestPrincipals: ['https://issuer/*'] } }] }] })],
      { metadata: { istio_authn: { 'request.auth.principal': 'https://issuer/bob' } } },
      false,
    ],
    [
      'hosts: case-insensitive',
      [policy('p', { rules: [{ to: [{ operation: { hosts: ['BookInfo.com'] } }] }] })],
      { host: 'bookinfo.COM' },
      true,
    ],
    [
      'hosts: a host without a port does not match the authority with one (Istio lists both)',
      [policy('p', { rules: [{ to: [{ operation: { hosts: ['bookinfo.com'] } }] }] })],
      { host: 'bookinfo.com:8080' },
      false,
    ],
    [
      'hosts: with its port',
      [policy('p', { rules: [{ to: [{ operation: { hosts: ['bookinfo.com', 'bookinfo.com:8080'] } }] }] })],
      { host: 'bookinfo.com:8080' },
      true,
    ],
    [
      'hosts: *.suffix',
      [policy('p', { rules: [{ to: [{ operation: { hosts: ['*.example.com'] } }] }] })],
      { host: 'a.EXAMPLE.com' },
      true,
    ],
    [
      'hosts: prefix*',
      [policy('p', { rules: [{ to: [{ operation: { hosts: ['bookinfo.*'] } }] }] })],
      { host: 'bookinfo.com:80' },
      true,
    ],
    [
      'notHosts',
      [policy('p', { rules: [{ to: [{ operation: { notHosts: ['evil.com'] } }] }] })],
      { host: 'evil.com' },
      false,
    ],
    ['ports: the workload port', [policy('p', { rules: [{ to: [{ operation: { ports: ['9080'] } }] }] })], {}, true],
    ['ports: another port', [policy('p', { rules: [{ to: [{ operation: { ports: ['9090'] } }] }] })], {}, false],
    [
      'notMethods',
      [policy('p', { rules: [{ to: [{ operation: { notMethods: ['DELETE'] } }] }] })],
      { method: 'DELETE' },
      false,
    ],
    [
      'paths: prefix*',
      [policy('p', { rules: [{ to: [{ operation: { paths: ['/api/*'] } }] }] })],
      { path: '/api/v1' },
      true,
    ],
    [
      'notPaths with DENY: everything but /public is denied',
      [policy('d', { action: 'DENY', rules: [{ to: [{ operation: { notPaths: ['/public'] } }] }] })],
      { path: '/private' },
      false,
    ],
    [
      'paths: a template {*}',
      [policy('p', { rules: [{ to: [{ operation: { paths: ['/users/{*}/profile'] } }] }] })],
      { path: '/users/7/profile' },
      true,
    ],
    [
      'paths: {*} is one segment',
      [policy('p', { rules: [{ to: [{ operation: { paths: ['/users/{*}/profile'] } }] }] })],
      { path: '/users/7/8/profile' },
      false,
    ],
    [
      'paths: {**} is the rest',
      [policy('p', { rules: [{ to: [{ operation: { paths: ['/files/{**}'] } }] }] })],
      { path: '/files/a/b/c' },
      true,
    ],
    [
      'from and to together must both match',
      [
        policy('p', {
          rules: [{ from: [{ source: { ipBlocks: ['10.0.0.0/8'] } }], to: [{ operation: { methods: ['GET'] } }] }],
        }),
      ],
      { ip: '192.0.2.9' },
      false,
    ],
    [
      'several from entries are alternatives',
      [
        policy('p', {
          rules: [{ from: [{ source: { ipBlocks: ['10.0.0.0/8'] } }, { source: { ipBlocks: ['192.0.2.0/24'] } }] }],
        }),
      ],
      { ip: '192.0.2.9' },
      true,
    ],
    [
      'when request.headers: values',
      [policy('p', { rules: [{ when: [{ key: 'request.headers[x-version]', values: ['v1', 'v2*'] }] }] })],
      { headers: ['x-version', 'v2-beta'] },
      true,
    ],
    [
      'when request.headers: notValues',
      [policy('p', { rules: [{ when: [{ key: 'request.headers[x-version]', notValues: ['v1'] }] }] })],
      { headers: ['x-version', 'v1'] },
      false,
    ],
    [
      'when source.ip',
      [policy('p', { rules: [{ when: [{ key: 'source.ip', values: ['10.0.0.5'] }] }] })],
      { ip: '10.0.0.5' },
      true,
    ],
    [
      'when remote.ip',
      [policy('p', { rules: [{ when: [{ key: 'remote.ip', values: ['192.0.2.0/24'] }] }] })],
      { remoteIp: '192.0.2.3' },
      true,
    ],
    [
      'when source.namespace',
      [policy('p', { rules: [{ when: [{ key: 'source.namespace', values: ['foo'] }] }] })],
      { peer: 'spiffe://cluster.local/ns/foo/sa/x' },
      true,
    ],
    [
      'when source.principal',
      [policy('p', { rules: [{ when: [{ key: 'source.principal', values: ['cluster.local/ns/foo/sa/x'] }] }] })],
      { peer: 'spiffe://cluster.local/ns/foo/sa/x' },
      true,
    ],
    [
      'when request.auth.claims (nested)',
      [policy('p', { rules: [{ when: [{ key: 'request.auth.claims[org][team]', values: ['blue'] }] }] })],
      { metadata: { istio_authn: { 'request.auth.claims': { org: { team: 'blue' } } } } },
      true,
    ],
    [
      'when request.auth.claims: a list claim',
      [policy('p', { rules: [{ when: [{ key: 'request.auth.claims[groups]', values: ['ops'] }] }] })],
      { metadata: { istio_authn: { 'request.auth.claims': { groups: ['dev', 'ops'] } } } },
      true,
    ],
    [
      'when request.auth.audiences',
      [policy('p', { rules: [{ when: [{ key: 'request.auth.audiences', values: ['bookinfo'] }] }] })],
      { metadata: { istio_authn: { 'request.auth.audiences': ['bookinfo'] } } },
      true,
    ],
    [
      'when request.auth.presenter',
      [policy('p', { rules: [{ when: [{ key: 'request.auth.presenter', values: ['web'] }] }] })],
      { metadata: { istio_authn: { 'request.auth.presenter': 'cli' } } },
      false,
    ],
    [
      'when destination.port',
      [policy('p', { rules: [{ when: [{ key: 'destination.port', values: ['9080'] }] }] })],
      {},
      true,
    ],
    [
      'when destination.ip',
      [policy('p', { rules: [{ when: [{ key: 'destination.ip', values: ['10.0.0.0/24'] }] }] })],
      {},
      true,
    ],
    [
      'notPrincipals: the named peer is not admitted',
      [policy('p', { rules: [{ from: [{ source: { notPrincipals: ['cluster.local/ns/default/sa/sleep'] } }] }] })],
      { peer: 'spiffe://cluster.local/ns/default/sa/sleep' },
      false,
    ],
    [
      'notPrincipals: another peer is',
      [policy('p', { rules: [{ from: [{ source: { notPrincipals: ['cluster.local/ns/default/sa/sleep'] } }] }] })],
      { peer: 'spiffe://cluster.local/ns/default/sa/other' },
      true,
    ],
    [
      'notRemoteIpBlocks',
      [policy('p', { rules: [{ from: [{ source: { notRemoteIpBlocks: ['192.0.2.0/24'] } }] }] })],
      { ip: '10.0.0.5', remoteIp: '192.0.2.1' },
      false,
    ],
    [
      'notServiceAccounts (sa alone: the policy’s namespace)',
      [policy('p', { rules: [{ from: [{ source: { notServiceAccounts: ['sleep'] } }] }] })],
      { peer: 'spiffe://cluster.local/ns/default/sa/sleep' },
      false,
    ],
    ['notPorts', [policy('p', { rules: [{ to: [{ operation: { notPorts: ['9080'] } }] }] })], {}, false],
    [
      'methods: exact, case-sensitive as Istio',
      [policy('p', { rules: [{ to: [{ operation: { methods: ['get'] } }] }] })],
      { method: 'GET' },
      false,
    ],
    [
      'notPaths with ALLOW',
      [policy('p', { rules: [{ to: [{ operation: { notPaths: ['/admin*'] } }] }] })],
      { path: '/admin/x' },
      false,
    ],
    [
      'when notValues of source.principal',
      [policy('p', { rules: [{ when: [{ key: 'source.principal', notValues: ['*'] }] }] })],
      {},
      true,
    ],
    [
      'when source.serviceAccount',
      [policy('p', { rules: [{ when: [{ key: 'source.serviceAccount', values: ['foo/x'] }] }] })],
      { peer: 'spiffe://cluster.local/ns/foo/sa/x' },
      true,
    ],
    [
      'when request.auth.principal',
      [policy('p', { rules: [{ when: [{ key: 'request.auth.principal', values: ['https://issuer/*'] }] }] })],
      { metadata: { istio_authn: { 'request.auth.principal': 'https://issuer/alice' } } },
      true,
    ],
    [
      'when connection.sni with SNI',
      [policy('p', { rules: [{ when: [{ key: 'connection.sni', values: ['*.local'] }] }] })],
      { sni: 'productpage.default.svc.cluster.local' },
      true,
    ],
    [
      'when experimental.envoy.filters.*: another filter’s metadata',
      [
        policy('p', {
          rules: [{ when: [{ key: 'experimental.envoy.filters.http.x[verdict]', values: ['ok'] }] }],
        }),
      ],
      { metadata: { 'envoy.filters.http.x': { verdict: 'ok' } } },
      true,
    ],
    [
      'when connection.sni on plain text',
      [policy('p', { rules: [{ when: [{ key: 'connection.sni', values: ['*.local'] }] }] })],
      {},
      false,
    ],
  ]
  for (const [name, resources, req, want] of cases) {
    it(name, () => assert.equal(admits(resources, req), want))
  }

  it('ports are the workload’s: the proxy listening on another port still matches them', () => {
    const list = [policy('p', { rules: [{ to: [{ operation: { ports: ['9080'] } }] }] })]
    assert.equal(admits(list, { port: 15090 }, NODE, 15090), true)
    const other = [policy('p', { rules: [{ to: [{ operation: { ports: ['15090'] } }] }] })]
    assert.equal(admits(other, { port: 15090 }, NODE, 15090), false)
  })

  it('on a sidecar the service port names the listener too (the registered port is the sidecar’s in local mode)', () => {
    const list = [policy('p', { rules: [{ to: [{ operation: { ports: ['9080'] } }] }] })]
    const filters = authzHttpFilters(scopeOf(list), { workloadPort: 15090, servicePort: 9080, listenPort: 15090 })
    const rules = (filters[0]!.typed_config as Json).rules as Json
    assert.match(JSON.stringify(rules), /"destination_port":15090/)
  })
})

describe('shapes', () => {
  it('policy names and rule structure follow Istio', () => {
    const [f] = authzHttpFilters(
      scopeOf([
        policy('httpbin', {
          action: 'DENY',
          rules: [{ from: [{ source: { namespaces: ['foo'] } }], to: [{ operation: { methods: ['GET', 'POST'] } }] }],
        }),
      ]),
      { workloadPort: 9080, listenPort: 9080 },
    )
    const rules = (f!.typed_config as Json).rules as Json
    assert.equal(rules.action, 'DENY')
    assert.deepEqual(rules.policies, {
      'ns[default]-policy[httpbin]-rule[0]': {
        permissions: [
          {
            and_rules: {
              rules: [
                {
                  or_rules: {
                    rules: [
                      { header: { name: ':method', string_match: { exact: 'GET' } } },
                      { header: { name: ':method', string_match: { exact: 'POST' } } },
                    ],
                  },
                },
              ],
            },
          },
        ],
        principals: [
          {
            and_ids: {
              ids: [
                { or_ids: { ids: [{ authenticated: { principal_name: { safe_regex: { regex: '.*/ns/foo/.*' } } } }] } },
              ],
            },
          },
        ],
      },
    })
  })
  it('value matchers', () => {
    assert.deepEqual(stringMatcher('*'), { safe_regex: { regex: '.+' } })
    assert.deepEqual(stringMatcher('a*'), { prefix: 'a' })
    assert.deepEqual(stringMatcher('*a'), { suffix: 'a' })
    assert.deepEqual(stringMatcher('*/sa/x', 'spiffe://'), { safe_regex: { regex: 'spiffe://.*/sa/x' } })
    assert.deepEqual(pathMatcher('/a/{*}/b.{**}'), { safe_regex: { regex: '/a/[^/]+/b\\..*' } })
  })
})

/** The network filters for a TCP port of the workload, compiled as the proxy's network RBAC filter compiles them. */
function compiledTcp(resources: Resource[]) {
  const filters = authzNetworkFilters(scopeOf(resources), { workloadPort: 9000, listenPort: 9000 })
  return filters.map((f) => {
    const parsed = v.safeParse(NetworkFilter, f)
    assert.ok(parsed.success, JSON.stringify(parsed.issues?.map((i) => i.message)))
    const tc = parsed.output.typed_config as { rules?: RbacRules; stat_prefix: string }
    assert.equal(tc.stat_prefix, 'tcp.')
    const issues: ConfigIssue[] = []
    const engine = tc.rules === undefined ? null : new RbacRulesEngine(tc.rules, 'rules', issues, CONNECTION_RULES)
    assert.deepEqual(issues, [], 'no HTTP-only rule in a network filter')
    return { name: f.name as string, engine }
  })
}

/** Whether the TCP chain admits a connection (no request: the head is absent). */
function admitsConnection(resources: Resource[], r: Req): boolean {
  const input = { ...requestInput({ port: 9000, ...r }), head: null }
  for (const { engine } of compiledTcp(resources)) {
    if (engine !== null && !engine.allows(engine.matchedPolicy(input))) return false
  }
  return true
}

describe('TCP ports: network RBAC filters with Istio’s TCP semantics', () => {
  const SLEEP = 'spiffe://cluster.local/ns/default/sa/sleep'
  const fromSleep = { from: [{ source: { principals: ['cluster.local/ns/default/sa/sleep'] } }] }
  const cases: [string, Resource[], Req, boolean][] = [
    ['allow-nothing refuses every connection', [ALLOW_NOTHING], { peer: SLEEP }, false],
    ['ALLOW principals: the peer named', [policy('p', { rules: [fromSleep] })], { peer: SLEEP }, true],
    ['ALLOW principals: plain text', [policy('p', { rules: [fromSleep] })], {}, false],
    [
      'ALLOW ports and ipBlocks are TCP fields',
      [
        policy('p', {
          rules: [{ from: [{ source: { ipBlocks: ['10.0.0.0/8'] } }], to: [{ operation: { ports: ['9000'] } }] }],
        }),
      ],
      { ip: '10.1.2.3' },
      true,
    ],
    [
      'ALLOW with methods: the rule is left out, so it admits nothing on TCP',
      [policy('p', { rules: [{ ...fromSleep, to: [{ operation: { methods: ['GET'] } }] }] })],
      { peer: SLEEP },
      false,
    ],
    [
      'ALLOW with when request.headers: the rule is left out',
      [policy('p', { rules: [{ ...fromSleep, when: [{ key: 'request.headers[x]', values: ['y'] }] }] })],
      { peer: SLEEP },
      false,
    ],
    [
      'ALLOW with requestPrincipals: the rule is left out',
      [policy('p', { rules: [{ from: [{ source: { requestPrincipals: ['*'] } }] }] })],
      { peer: SLEEP },
      false,
    ],
    [
      'ALLOW: an HTTP-only rule is left out, a TCP rule of the same policy still admits',
      [policy('p', { rules: [{ to: [{ operation: { paths: ['/x'] } }] }, fromSleep] })],
      { peer: SLEEP },
      true,
    ],
    [
      'DENY methods alone: the HTTP-only values are dropped, so every connection is refused',
      [policy('d', { action: 'DENY', rules: [{ to: [{ operation: { methods: ['POST'] } }] }] })],
      {},
      false,
    ],
    [
      'DENY principals + paths: the paths are dropped, the principal is refused',
      [policy('d', { action: 'DENY', rules: [{ ...fromSleep, to: [{ operation: { paths: ['/admin'] } }] }] })],
      { peer: SLEEP },
      false,
    ],
    [
      'CUSTOM (no network ext_authz): the connections its rules match are refused',
      [policy('c', { action: 'CUSTOM', provider: { name: 'authz' }, rules: [fromSleep] })],
      { peer: SLEEP },
      false,
    ],
    [
      'CUSTOM: a connection its rules do not match is admitted',
      [policy('c', { action: 'CUSTOM', provider: { name: 'authz' }, rules: [fromSleep] })],
      { peer: 'spiffe://cluster.local/ns/default/sa/other' },
      true,
    ],
    [
      'DENY principals + paths: another peer is admitted',
      [policy('d', { action: 'DENY', rules: [{ ...fromSleep, to: [{ operation: { paths: ['/admin'] } }] }] })],
      { peer: 'spiffe://cluster.local/ns/default/sa/other' },
      true,
    ],
    [
      'DENY notHosts: dropped too (a wider deny)',
      [policy('d', { action: 'DENY', rules: [{ to: [{ operation: { notHosts: ['a.com'] } }] }] })],
      {},
      false,
    ],
    [
      'DENY when request.auth.claims: dropped, the rest of the rule applies',
      [
        policy('d', {
          action: 'DENY',
          rules: [
            {
              from: [{ source: { ipBlocks: ['192.0.2.0/24'] } }],
              when: [{ key: 'request.auth.claims[iss]', values: ['x'] }],
            },
          ],
        }),
      ],
      { ip: '10.0.0.5' },
      true,
    ],
    [
      'DENY by destination.port',
      [policy('d', { action: 'DENY', rules: [{ when: [{ key: 'destination.port', values: ['9000'] }] }] })],
      {},
      false,
    ],
    [
      'AUDIT with HTTP-only fields never refuses',
      [policy('a', { action: 'AUDIT', rules: [{ to: [{ operation: { methods: ['GET'] } }] }] })],
      {},
      true,
    ],
  ]
  for (const [name, resources, req, want] of cases) {
    it(name, () => assert.equal(admitsConnection(resources, req), want))
  }

  it('filter names and order: AUDIT, DENY, ALLOW as envoy.filters.network.rbac.<action>', () => {
    const list = [
      policy('a', { action: 'ALLOW', rules: [{}] }),
      policy('d', { action: 'DENY', rules: [{}] }),
      policy('l', { action: 'AUDIT', rules: [{}] }),
    ]
    assert.deepEqual(
      authzNetworkFilters(scopeOf(list), { workloadPort: 9000, listenPort: 9000 }).map((f) => f.name),
      ['envoy.filters.network.rbac.audit', 'envoy.filters.network.rbac.deny', 'envoy.filters.network.rbac.allow'],
    )
  })

  it('a left-out ALLOW rule leaves no policy behind; dry-run goes to shadow_rules', () => {
    const [allow] = authzNetworkFilters(
      scopeOf([
        policy('p', { rules: [{ to: [{ operation: { methods: ['GET'] } }] }] }),
        policy('dry', { rules: [fromSleep] }, 'default', { 'istio.io/dry-run': 'true' }),
      ]),
      { workloadPort: 9000, listenPort: 9000 },
    )
    const tc = allow!.typed_config as Json
    assert.deepEqual(tc.rules, { policies: {} })
    assert.deepEqual(Object.keys((tc.shadow_rules as Json).policies as Json), ['ns[default]-policy[dry]-rule[0]'])
    assert.equal(tc.shadow_rules_stat_prefix, 'istio_dry_run_allow_')
  })
})
