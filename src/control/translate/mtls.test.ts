/**
 * Istio's mutual TLS in the translator's output: PeerAuthentication's precedence on inbound listeners, automatic
 * mTLS and DestinationRule `tls` on outbound clusters. Every listener and cluster is checked with the proxy's schema.
 */
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import * as v from 'valibot'
import type { Resource } from '../../api/index.js'
import { Cluster, Listener } from '../../config/envoy.js'
import type { Service, ServiceEndpoint } from '../registry/registry.js'
import { TLS_MODE_LABEL } from './mtls.js'
import { type TranslateNode, translateResources } from './translate.js'
import type { Json } from './util.js'

const NODE: TranslateNode = {
  id: 'sidecar~10.0.0.9~reviews-v1.default~default.svc.cluster.local',
  kind: 'sidecar',
  namespace: 'default',
  labels: { app: 'reviews', version: 'v1' },
  serviceAccount: 'bookinfo-reviews',
  ip: '10.0.0.9',
  generator: 'envoy',
}

function endpoint(address: string, servicePort: number, port: number, sidecar: boolean, sa: string): ServiceEndpoint {
  const labels: Record<string, string> = { app: address === '10.0.0.9' ? 'reviews' : 'ratings', version: 'v1' }
  if (sidecar) labels[TLS_MODE_LABEL] = 'istio'
  return {
    address,
    servicePort,
    port,
    labels,
    serviceAccount: sa,
    locality: '',
    weight: 1,
    healthy: true,
    source: address === '10.0.0.9' ? 'workload/default/reviews-v1' : `workload/default/${address}`,
  }
}

function service(host: string, ports: number[], eps: ServiceEndpoint[]): Service {
  return {
    hostname: host,
    namespace: 'default',
    ports: ports.map((n) => ({ number: n, name: `http-${n}`, protocol: 'HTTP' })),
    endpoints: eps,
    resolution: 'STATIC',
    location: 'MESH_INTERNAL',
    exportTo: ['*'],
    source: 'workload',
  }
}

/** reviews (this proxy's workload) on 9080 and 9081, ratings with sidecars, legacy without */
const SERVICES: Service[] = [
  service(
    'reviews.default.svc.cluster.local',
    [9080, 9081],
    [
      endpoint('10.0.0.9', 9080, 9080, true, 'bookinfo-reviews'),
      endpoint('10.0.0.9', 9081, 9081, true, 'bookinfo-reviews'),
    ],
  ),
  service(
    'ratings.default.svc.cluster.local',
    [9080],
    [endpoint('10.0.0.5', 9080, 9080, true, 'bookinfo-ratings'), endpoint('10.0.0.6', 9080, 9080, true, 'ratings-v2')],
  ),
  service(
    'legacy.default.svc.cluster.local',
    [80],
    [endpoint('10.0.0.7', 80, 8080, false, 'default'), endpoint('10.0.0.8', 80, 8080, false, 'default')],
  ),
  service(
    'mixed.default.svc.cluster.local',
    [80],
    [endpoint('10.0.0.5', 80, 8080, true, 'bookinfo-ratings'), endpoint('10.0.0.7', 80, 8080, false, 'default')],
  ),
]

function pa(name: string, namespace: string, spec: Json, created = '2026-01-01T00:00:00Z'): Resource {
  return {
    apiVersion: 'security.istio.io/v1',
    kind: 'PeerAuthentication',
    metadata: { name, namespace, creationTimestamp: created },
    spec,
  }
}

function dr(host: string, trafficPolicy: Json, subsets?: Json[]): Resource {
  return {
    apiVersion: 'networking.istio.io/v1',
    kind: 'DestinationRule',
    metadata: { name: host.split('.')[0]!, namespace: 'default' },
    spec: { host, trafficPolicy, ...(subsets === undefined ? {} : { subsets }) },
  }
}

function translated(resources: Resource[]) {
  const r = translateResources({ resources, services: SERVICES }, NODE)
  for (const l of r.listeners) {
    const res = v.safeParse(Listener, l)
    assert.ok(res.success, `${l.name}: ${JSON.stringify(res.issues?.map((i) => i.message))}`)
  }
  for (const c of r.clusters) {
    const res = v.safeParse(Cluster, c)
    assert.ok(res.success, `${c.name}: ${JSON.stringify(res.issues?.map((i) => i.message))}`)
  }
  return r
}

function lbEndpoints(cla: Json): Json[] {
  return (cla.endpoints as Json[]).flatMap((g) => g.lb_endpoints as Json[])
}

/** The inbound listener's mode, read back from its filter chains. */
function inboundMode(listeners: Json[], port: number): string {
  const l = listeners.find((x) => x.name === `inbound|${port}`)!
  const chains = l.filter_chains as Json[]
  const protocols = chains.map((c) => (c.filter_chain_match as Json | undefined)?.transport_protocol ?? 'any')
  const tls = chains.find((c) => c.transport_socket !== undefined)
  if (tls !== undefined) {
    const ctx = (tls.transport_socket as Json).typed_config as Json
    assert.equal(ctx.require_client_certificate, true)
    assert.deepEqual((ctx.common_tls_context as Json).validation_context_sds_secret_config, {
      name: 'ROOTCA',
      sds_config: { ads: {}, resource_api_version: 'V3' },
    })
    assert.deepEqual(l.listener_filters, [
      {
        name: 'envoy.filters.listener.tls_inspector',
        typed_config: {
          '@type': 'type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector',
        },
      },
    ])
  }
  for (const c of chains) {
    const hcm = ((c.filters as Json[])[0]!.typed_config ?? {}) as Json
    assert.equal(hcm.forward_client_cert_details, 'APPEND_FORWARD')
    assert.deepEqual(hcm.set_current_client_cert_details, { uri: true })
  }
  const key = protocols.join(',')
  if (key === 'tls') return 'STRICT'
  if (key === 'tls,raw_buffer') return 'PERMISSIVE'
  if (key === 'any' && tls === undefined) return 'DISABLE'
  throw new Error(`unexpected chains ${key}`)
}

const MESH = (mode: string) => pa('default', 'istio-system', { mtls: { mode } })
const NAMESPACE = (mode: string) => pa('default', 'default', { mtls: { mode } })
const WORKLOAD = (mode: string, ports?: Json) =>
  pa('reviews', 'default', {
    selector: { matchLabels: { app: 'reviews' } },
    ...(mode === '' ? {} : { mtls: { mode } }),
    ...(ports === undefined ? {} : { portLevelMtls: ports }),
  })

describe('PeerAuthentication on inbound listeners', () => {
  const cases: [string, Resource[], { 9080: string; 9081: string }][] = [
    ['no policy: PERMISSIVE, as Istio', [], { 9080: 'PERMISSIVE', 9081: 'PERMISSIVE' }],
    ['mesh STRICT', [MESH('STRICT')], { 9080: 'STRICT', 9081: 'STRICT' }],
    [
      'mesh STRICT, namespace PERMISSIVE',
      [MESH('STRICT'), NAMESPACE('PERMISSIVE')],
      { 9080: 'PERMISSIVE', 9081: 'PERMISSIVE' },
    ],
    [
      'mesh STRICT, namespace PERMISSIVE, workload DISABLE',
      [MESH('STRICT'), NAMESPACE('PERMISSIVE'), WORKLOAD('DISABLE')],
      { 9080: 'DISABLE', 9081: 'DISABLE' },
    ],
    [
      'mesh STRICT, namespace PERMISSIVE, workload DISABLE, port 9081 STRICT',
      [MESH('STRICT'), NAMESPACE('PERMISSIVE'), WORKLOAD('DISABLE', { '9081': { mode: 'STRICT' } })],
      { 9080: 'DISABLE', 9081: 'STRICT' },
    ],
    [
      'UNSET inherits: namespace UNSET takes the mesh, workload UNSET the namespace',
      [MESH('STRICT'), NAMESPACE('UNSET'), WORKLOAD('UNSET', { '9081': { mode: 'UNSET' } })],
      { 9080: 'STRICT', 9081: 'STRICT' },
    ],
    [
      'workload without mtls, port DISABLE: the other port inherits the namespace',
      [NAMESPACE('STRICT'), WORKLOAD('', { '9080': { mode: 'DISABLE' } })],
      { 9080: 'DISABLE', 9081: 'STRICT' },
    ],
    [
      'a workload policy selecting another workload does not apply',
      [
        NAMESPACE('STRICT'),
        pa('ratings', 'default', { selector: { matchLabels: { app: 'ratings' } }, mtls: { mode: 'DISABLE' } }),
      ],
      { 9080: 'STRICT', 9081: 'STRICT' },
    ],
    [
      "another namespace's policy does not apply",
      [pa('default', 'other', { mtls: { mode: 'STRICT' } })],
      { 9080: 'PERMISSIVE', 9081: 'PERMISSIVE' },
    ],
    [
      'two namespace policies: the oldest wins',
      [
        pa('b', 'default', { mtls: { mode: 'DISABLE' } }, '2026-02-01T00:00:00Z'),
        pa('a', 'default', { mtls: { mode: 'STRICT' } }, '2026-01-01T00:00:00Z'),
      ],
      { 9080: 'STRICT', 9081: 'STRICT' },
    ],
  ]
  for (const [name, resources, want] of cases) {
    it(name, () => {
      const { listeners } = translated(resources)
      assert.deepEqual({ 9080: inboundMode(listeners, 9080), 9081: inboundMode(listeners, 9081) }, want)
    })
  }

  it('a node whose id names no workload finds its endpoints by labels, the sidecar mark aside', () => {
    const node = { ...NODE, id: 'sidecar~10.0.0.9~x~default.svc.cluster.local' }
    const r = translateResources({ resources: [MESH('STRICT')], services: SERVICES }, node)
    assert.deepEqual(
      r.listeners.filter((l) => (l.name as string).startsWith('inbound|')).map((l) => l.name),
      ['inbound|9080', 'inbound|9081'],
    )
  })

  it("portLevelMtls names the workload port: the endpoint's targetPort where its registered port is the sidecar's", () => {
    const services = SERVICES.map((svc) =>
      svc.hostname.startsWith('reviews.')
        ? { ...svc, endpoints: svc.endpoints.map((e) => ({ ...e, targetPort: e.servicePort === 9080 ? 80 : 81 })) }
        : svc,
    )
    const modes = (resources: Resource[]) => {
      const r = translateResources({ resources, services }, NODE)
      return { 9080: inboundMode(r.listeners, 9080), 9081: inboundMode(r.listeners, 9081) }
    }
    assert.deepEqual(modes([WORKLOAD('STRICT', { '80': { mode: 'DISABLE' } })]), { 9080: 'DISABLE', 9081: 'STRICT' })
    assert.deepEqual(modes([WORKLOAD('STRICT', { '81': { mode: 'DISABLE' } })]), { 9080: 'STRICT', 9081: 'DISABLE' })
  })

  it('the TLS chain presents the default certificate over ADS', () => {
    const { listeners } = translated([MESH('STRICT')])
    const chain = (listeners.find((l) => l.name === 'inbound|9080')!.filter_chains as Json[])[0]!
    const ctx = ((chain.transport_socket as Json).typed_config as Json).common_tls_context as Json
    assert.deepEqual(ctx.tls_certificate_sds_secret_configs, [
      { name: 'default', sds_config: { ads: {}, resource_api_version: 'V3' } },
    ])
  })
})

describe('inbound TCP ports', () => {
  const tcpServices: Service[] = [
    {
      ...SERVICES[0]!,
      ports: [
        { number: 9080, name: 'http-9080', protocol: 'HTTP' },
        { number: 9081, name: 'tcp-9081', protocol: 'TCP' },
      ],
    },
  ]
  const ap: Resource = {
    apiVersion: 'security.istio.io/v1',
    kind: 'AuthorizationPolicy',
    metadata: { name: 'p', namespace: 'default' },
    spec: { rules: [{ from: [{ source: { principals: ['cluster.local/ns/default/sa/a'] } }] }] },
  }
  it('a TCP port gets a tcp_proxy to its inbound cluster, the network RBAC filters first, the mTLS chains of its mode', () => {
    const r = translateResources(
      { resources: [pa('m', 'istio-system', { mtls: { mode: 'STRICT' } }), ap], services: tcpServices },
      NODE,
    )
    const l = r.listeners.find((x) => x.name === 'inbound|9081')!
    assert.ok(v.safeParse(Listener, l).success)
    // STRICT: one TLS chain requiring client certificates
    const chains = l.filter_chains as Json[]
    assert.deepEqual(
      chains.map((c) => (c.filter_chain_match as Json).transport_protocol),
      ['tls'],
    )
    const tlsContext = (chains[0]!.transport_socket as Json).typed_config as Json
    assert.equal(tlsContext.require_client_certificate, true)
    // Istio's ALPNDownstreamWithMxc: a client offering istio-peer-exchange gets the metadata exchange
    assert.deepEqual((tlsContext.common_tls_context as Json).alpn_protocols, ['istio-peer-exchange', 'h2', 'http/1.1'])
    const filters = (l.filter_chains as Json[])[0]!.filters as Json[]
    // Istio's inbound order: the metadata exchange first (its peer is known to what follows), then authorization
    assert.deepEqual(
      filters.map((f) => f.name),
      ['istio.metadata_exchange', 'envoy.filters.network.rbac.allow', 'istio.stats', 'envoy.filters.network.tcp_proxy'],
    )
    assert.deepEqual(filters[0]!.typed_config, {
      '@type': 'type.googleapis.com/envoy.tcp.metadataexchange.config.MetadataExchange',
      protocol: 'istio-peer-exchange',
    })
    assert.deepEqual(filters[3]!.typed_config, {
      '@type': 'type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy',
      stat_prefix: 'inbound|9081||',
      cluster: 'inbound|9081||',
    })
    assert.ok(r.clusters.some((c) => c.name === 'inbound|9081||'))
    // the HTTP port keeps its connection manager with the RBAC HTTP filter, and its codecs' ALPN
    const httpChain = (r.listeners.find((x) => x.name === 'inbound|9080')!.filter_chains as Json[])[0]!
    assert.deepEqual(
      (httpChain.filters as Json[]).map((f) => f.name),
      ['envoy.filters.network.http_connection_manager'],
    )
    const httpTls = (httpChain.transport_socket as Json).typed_config as Json
    assert.equal((httpTls.common_tls_context as Json).alpn_protocols, undefined)
  })

  it("a TCP port's outbound clusters run the metadata exchange (pilot's TCPClusterMx); an HTTP port's do not", () => {
    const r = translateResources({ resources: [], services: tcpServices }, NODE)
    const tcp = r.clusters.find((c) => c.name === `outbound|9081||${tcpServices[0]!.hostname}`)!
    assert.deepEqual(tcp.filters, [
      {
        name: 'istio.metadata_exchange',
        typed_config: {
          '@type': 'type.googleapis.com/envoy.tcp.metadataexchange.config.MetadataExchange',
          protocol: 'istio-peer-exchange',
        },
      },
    ])
    assert.ok(v.safeParse(Cluster, tcp).success)
    const http = r.clusters.find((c) => c.name === `outbound|9080||${tcpServices[0]!.hostname}`)!
    assert.equal(http.filters, undefined)
  })
})

function clusterTls(clusters: Json[], name: string): Json | undefined {
  return (clusters.find((c) => c.name === name)!.transport_socket as Json | undefined)?.typed_config as Json | undefined
}

describe('outbound TLS', () => {
  it('automatic mTLS to endpoints with sidecars: SDS secrets, SNI, ALPN, expected SPIFFE IDs', () => {
    const { clusters } = translated([])
    const tls = clusterTls(clusters, 'outbound|9080||ratings.default.svc.cluster.local')!
    assert.deepEqual(tls, {
      '@type': 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext',
      common_tls_context: {
        tls_certificate_sds_secret_configs: [{ name: 'default', sds_config: { ads: {}, resource_api_version: 'V3' } }],
        combined_validation_context: {
          default_validation_context: {
            match_typed_subject_alt_names: [
              { san_type: 'URI', matcher: { exact: 'spiffe://cluster.local/ns/default/sa/bookinfo-ratings' } },
              { san_type: 'URI', matcher: { exact: 'spiffe://cluster.local/ns/default/sa/ratings-v2' } },
            ],
          },
          validation_context_sds_secret_config: { name: 'ROOTCA', sds_config: { ads: {}, resource_api_version: 'V3' } },
        },
        alpn_protocols: ['istio-peer-exchange', 'istio'],
      },
      sni: 'outbound_.9080_._.ratings.default.svc.cluster.local',
    })
  })

  it('the trust domain comes from the mesh config', () => {
    const r = translateResources(
      { resources: [], services: SERVICES, meshConfig: { trustDomain: 'example.org' } },
      NODE,
    )
    const tls = clusterTls(r.clusters, 'outbound|9080||ratings.default.svc.cluster.local')!
    const sans = ((tls.common_tls_context as Json).combined_validation_context as Json)
      .default_validation_context as Json
    assert.match(JSON.stringify(sans), /spiffe:\/\/example\.org\/ns\/default\/sa\/bookinfo-ratings/)
  })

  it('endpoints without a sidecar stay plain text', () => {
    const { clusters, endpoints } = translated([])
    const legacy = clusters.find((c) => c.name === 'outbound|80||legacy.default.svc.cluster.local')!
    assert.equal(legacy.transport_socket, undefined)
    assert.equal(legacy.transport_socket_matches, undefined)
    const cla = endpoints.find((e) => e.cluster_name === legacy.name)!
    assert.ok(lbEndpoints(cla).every((e) => e.metadata === undefined))
  })

  it('a cluster mixing endpoints with and without sidecars switches per endpoint, as Istio', () => {
    const { clusters, endpoints } = translated([])
    const mixed = clusters.find((c) => c.name === 'outbound|80||mixed.default.svc.cluster.local')!
    assert.equal(mixed.transport_socket, undefined)
    const matches = mixed.transport_socket_matches as Json[]
    assert.deepEqual(
      matches.map((m) => [m.name, m.match]),
      [
        ['tlsMode-istio', { tlsMode: 'istio' }],
        ['tlsMode-disabled', {}],
      ],
    )
    const istio = (matches[0]!.transport_socket as Json).typed_config as Json
    assert.equal(istio.sni, 'outbound_.80_._.mixed.default.svc.cluster.local')
    assert.match(JSON.stringify(istio), /"name":"ROOTCA"/)
    assert.deepEqual(matches[1]!.transport_socket, {
      name: 'envoy.transport_sockets.raw_buffer',
      typed_config: { '@type': 'type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer' },
    })
    const cla = endpoints.find((e) => e.cluster_name === mixed.name)!
    const byAddress = Object.fromEntries(
      lbEndpoints(cla).map((e) => [
        (((e.endpoint as Json).address as Json).socket_address as Json).address as string,
        e.metadata,
      ]),
    )
    assert.deepEqual(byAddress, {
      '10.0.0.5': { filter_metadata: { 'envoy.transport_socket_match': { tlsMode: 'istio' } } },
      '10.0.0.7': undefined,
    })
  })

  it('a subset of a mixed service whose endpoints all have sidecars gets one transport socket', () => {
    const { clusters } = translated([
      dr('mixed.default.svc.cluster.local', {}, [
        { name: 'meshed', labels: { app: 'ratings', [TLS_MODE_LABEL]: 'istio' } },
      ]),
    ])
    const subset = clusters.find((c) => c.name === 'outbound|80|meshed|mixed.default.svc.cluster.local')!
    assert.equal(subset.transport_socket_matches, undefined)
    assert.ok(subset.transport_socket)
    const all = clusters.find((c) => c.name === 'outbound|80||mixed.default.svc.cluster.local')!
    assert.equal((all.transport_socket_matches as Json[]).length, 2)
  })

  it('ISTIO_MUTUAL with subjectAltNames: the rule’s names replace the service accounts', () => {
    const { clusters } = translated([
      dr('ratings.default.svc.cluster.local', {
        tls: { mode: 'ISTIO_MUTUAL', subjectAltNames: ['spiffe://cluster.local/ns/default/sa/only-this'] },
      }),
    ])
    const tls = clusterTls(clusters, 'outbound|9080||ratings.default.svc.cluster.local')!
    const ctx = (tls.common_tls_context as Json).combined_validation_context as Json
    assert.deepEqual((ctx.default_validation_context as Json).match_typed_subject_alt_names, [
      { san_type: 'URI', matcher: { exact: 'spiffe://cluster.local/ns/default/sa/only-this' } },
    ])
  })

  it("automatic mTLS sends plain text to endpoints whose own PeerAuthentication DISABLEs the port (Istio's mTLS checker)", () => {
    const RATINGS = 'outbound|9080||ratings.default.svc.cluster.local'
    const ratingsPa = (spec: Json) =>
      pa('ratings', 'default', { selector: { matchLabels: { app: 'ratings' } }, ...spec })
    assert.equal(clusterTls(translated([ratingsPa({ mtls: { mode: 'DISABLE' } })]).clusters, RATINGS), undefined)
    assert.equal(
      clusterTls(
        translated([ratingsPa({ mtls: { mode: 'STRICT' }, portLevelMtls: { '9080': { mode: 'DISABLE' } } })]).clusters,
        RATINGS,
      ),
      undefined,
    )
    assert.equal(
      clusterTls(translated([pa('default', 'default', { mtls: { mode: 'DISABLE' } })]).clusters, RATINGS),
      undefined,
    )
    // another port DISABLEd, a STRICT policy, another workload's policy: still mTLS
    assert.ok(clusterTls(translated([ratingsPa({ portLevelMtls: { '9999': { mode: 'DISABLE' } } })]).clusters, RATINGS))
    assert.ok(clusterTls(translated([MESH('STRICT')]).clusters, RATINGS))
    assert.ok(clusterTls(translated([WORKLOAD('DISABLE')]).clusters, RATINGS))
    // a DestinationRule's ISTIO_MUTUAL is what the user asked for
    const both = [
      ratingsPa({ mtls: { mode: 'DISABLE' } }),
      dr('ratings.default.svc.cluster.local', { tls: { mode: 'ISTIO_MUTUAL' } }),
    ]
    assert.ok(clusterTls(translated(both).clusters, RATINGS))
  })

  it('ISTIO_MUTUAL: mTLS whatever the endpoints; subsets get their own SNI and IDs', () => {
    const { clusters } = translated([
      dr('legacy.default.svc.cluster.local', { tls: { mode: 'ISTIO_MUTUAL' } }),
      dr('ratings.default.svc.cluster.local', {}, [{ name: 'v2', labels: { app: 'ratings' } }]),
    ])
    const legacy = clusterTls(clusters, 'outbound|80||legacy.default.svc.cluster.local')!
    assert.equal(legacy.sni, 'outbound_.80_._.legacy.default.svc.cluster.local')
    assert.match(JSON.stringify(legacy), /spiffe:\/\/cluster.local\/ns\/default\/sa\/default/)
    const v2 = clusterTls(clusters, 'outbound|9080|v2|ratings.default.svc.cluster.local')!
    assert.equal(v2.sni, 'outbound_.9080_.v2_.ratings.default.svc.cluster.local')
  })

  it('DISABLE: plain text to endpoints with sidecars', () => {
    const { clusters } = translated([dr('ratings.default.svc.cluster.local', { tls: { mode: 'DISABLE' } })])
    assert.equal(clusterTls(clusters, 'outbound|9080||ratings.default.svc.cluster.local'), undefined)
  })

  it('port-level DISABLE overrides the rule', () => {
    const { clusters } = translated([
      dr('reviews.default.svc.cluster.local', {
        tls: { mode: 'ISTIO_MUTUAL' },
        portLevelSettings: [{ port: { number: 9081 }, tls: { mode: 'DISABLE' } }],
      }),
    ])
    assert.ok(clusterTls(clusters, 'outbound|9080||reviews.default.svc.cluster.local'))
    assert.equal(clusterTls(clusters, 'outbound|9081||reviews.default.svc.cluster.local'), undefined)
  })

  it('SIMPLE: origination with the rule’s SNI, CA file and subject alt names', () => {
    const { clusters } = translated([
      dr('legacy.default.svc.cluster.local', {
        tls: {
          mode: 'SIMPLE',
          sni: 'legacy.example.com',
          caCertificates: '/etc/certs/ca.pem',
          subjectAltNames: ['legacy.example.com', 'spiffe://other/ns/a/sa/b'],
        },
      }),
    ])
    assert.deepEqual(clusterTls(clusters, 'outbound|80||legacy.default.svc.cluster.local'), {
      '@type': 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext',
      common_tls_context: {
        validation_context: {
          trusted_ca: { filename: '/etc/certs/ca.pem' },
          match_typed_subject_alt_names: [
            { san_type: 'DNS', matcher: { exact: 'legacy.example.com' } },
            { san_type: 'URI', matcher: { exact: 'spiffe://other/ns/a/sa/b' } },
          ],
        },
      },
      sni: 'legacy.example.com',
    })
  })

  it('MUTUAL: origination with the client certificate files', () => {
    const { clusters } = translated([
      dr('legacy.default.svc.cluster.local', {
        tls: { mode: 'MUTUAL', clientCertificate: '/c.pem', privateKey: '/k.pem', caCertificates: '/ca.pem' },
      }),
    ])
    const ctx = clusterTls(clusters, 'outbound|80||legacy.default.svc.cluster.local')!.common_tls_context as Json
    assert.deepEqual(ctx.tls_certificates, [
      { certificate_chain: { filename: '/c.pem' }, private_key: { filename: '/k.pem' } },
    ])
    assert.deepEqual(ctx.validation_context, { trusted_ca: { filename: '/ca.pem' } })
  })

  it('SIMPLE with credentialName cannot be honoured: plain text (analyze warns)', () => {
    const { clusters } = translated([
      dr('legacy.default.svc.cluster.local', { tls: { mode: 'SIMPLE', credentialName: 'legacy-ca' } }),
    ])
    assert.equal(clusterTls(clusters, 'outbound|80||legacy.default.svc.cluster.local'), undefined)
  })

  it('ServiceEntry subjectAltNames join the endpoints’ service accounts in automatic mTLS', () => {
    const se: Service = {
      ...service(
        'db.example.com',
        [5432],
        [endpoint('10.0.1.1', 5432, 5432, true, 'db'), endpoint('10.0.1.2', 5432, 5432, true, 'db')],
      ),
      source: 'ServiceEntry/default/db',
      subjectAltNames: ['spiffe://cluster.local/ns/data/sa/db-admin'],
    }
    const r = translateResources({ resources: [], services: [...SERVICES, se] }, NODE)
    const tls = clusterTls(r.clusters, 'outbound|5432||db.example.com')!
    const ctx = (tls.common_tls_context as Json).combined_validation_context as Json
    assert.deepEqual((ctx.default_validation_context as Json).match_typed_subject_alt_names, [
      { san_type: 'URI', matcher: { exact: 'spiffe://cluster.local/ns/data/sa/db-admin' } },
      { san_type: 'URI', matcher: { exact: 'spiffe://cluster.local/ns/default/sa/db' } },
    ])
  })

  it('ServiceEntry subjectAltNames are what SIMPLE accepts when the rule names none', () => {
    const se: Service = {
      ...service('api.example.com', [443], [endpoint('10.0.2.1', 443, 443, false, '')]),
      location: 'MESH_EXTERNAL',
      source: 'ServiceEntry/default/api',
      subjectAltNames: ['api.example.com'],
    }
    const rule = (tls: Json) => dr('api.example.com', { tls: { mode: 'SIMPLE', caCertificates: '/ca.pem', ...tls } })
    const sansOf = (tls: Json) => {
      const r = translateResources({ resources: [rule(tls)], services: [...SERVICES, se] }, NODE)
      const ctx = clusterTls(r.clusters, 'outbound|443||api.example.com')!.common_tls_context as Json
      return (ctx.validation_context as Json).match_typed_subject_alt_names
    }
    assert.deepEqual(sansOf({}), [{ san_type: 'DNS', matcher: { exact: 'api.example.com' } }])
    assert.deepEqual(sansOf({ subjectAltNames: ['other.example.com'] }), [
      { san_type: 'DNS', matcher: { exact: 'other.example.com' } },
    ])
  })

  it('a gateway originates TLS with a credentialName: client certificate and CA over SDS, as Istio’s egress', () => {
    const gateway: TranslateNode = {
      ...NODE,
      id: 'router~10.0.0.20~egress.default~default.svc.cluster.local',
      kind: 'gateway',
      labels: { istio: 'egressgateway' },
    }
    const rules = (mode: string) => [
      dr('legacy.default.svc.cluster.local', {
        tls: {
          mode,
          credentialName: 'legacy-client',
          sni: 'legacy.example.com',
          subjectAltNames: ['legacy.example.com'],
        },
      }),
    ]
    const sds = (name: string) => ({ name, sds_config: { ads: {}, resource_api_version: 'V3' } })
    const credentials = new Map([['legacy-client', { cert: 'C', key: 'K', ca: 'CA' }]])
    const run = (mode: string) =>
      translateResources({ resources: rules(mode), services: SERVICES, credentials }, gateway)
    const mutual = run('MUTUAL')
    const ctx = clusterTls(mutual.clusters, 'outbound|80||legacy.default.svc.cluster.local')!
    assert.equal(ctx.sni, 'legacy.example.com')
    assert.deepEqual(ctx.common_tls_context, {
      tls_certificate_sds_secret_configs: [sds('kubernetes://legacy-client')],
      combined_validation_context: {
        default_validation_context: {
          match_typed_subject_alt_names: [{ san_type: 'DNS', matcher: { exact: 'legacy.example.com' } }],
        },
        validation_context_sds_secret_config: sds('kubernetes://legacy-client-cacert'),
      },
    })
    assert.deepEqual(
      mutual.secrets.map((x) => x.name),
      ['kubernetes://legacy-client', 'kubernetes://legacy-client-cacert'],
    )
    const simple = run('SIMPLE')
    const sctx = clusterTls(simple.clusters, 'outbound|80||legacy.default.svc.cluster.local')!
    assert.equal((sctx.common_tls_context as Json).tls_certificate_sds_secret_configs, undefined)
    assert.deepEqual(
      simple.secrets.map((x) => x.name),
      ['kubernetes://legacy-client-cacert'],
    )
    for (const c of mutual.clusters) assert.ok(v.safeParse(Cluster, c).success, c.name as string)
  })

  it('proxyless gRPC clusters carry no transport socket', () => {
    const r = translateResources({ resources: [], services: SERVICES }, { ...NODE, generator: 'grpc' })
    assert.ok(r.clusters.every((c) => c.transport_socket === undefined))
  })
})
