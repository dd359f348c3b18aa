/**
 * Istio's TCP metadata exchange between two real proxies: client → proxy A (outbound tcp_proxy, the cluster's
 * `istio.metadata_exchange`) → mTLS with ALPN `istio-peer-exchange` → proxy B (inbound chain's
 * `istio.metadata_exchange`, istio.stats, tcp_proxy) → a TCP backend. Both proxies' Istio TCP metrics must name the
 * other side's workload and count exactly the application's bytes; peers that do not speak the exchange (a TLS
 * client or server without the ALPN) still work, with `unknown` labels; a prefix that is not Istio's closes the
 * connection, counted, and the proxy goes on serving.
 */
import assert from 'node:assert/strict'
import { once } from 'node:events'
import { mkdtempSync } from 'node:fs'
import * as net from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import * as tls from 'node:tls'
import { CertificateAuthority } from '../src/control/ca/ca.js'
import { makeCsr } from '../src/control/ca/pki-fixtures.js'
import { eventually } from './helpers/control.js'
import { SA, type Sample, scrape, sum } from './helpers/istio-metrics.js'
import { adminAddress, type RunningProxy, startProxy, stat, TCP } from './helpers/proxy.js'

const T = 'type.googleapis.com/'
const UPSTREAM_TLS = `${T}envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext`
const DOWNSTREAM_TLS = `${T}envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext`
const TLS_INSPECTOR = `${T}envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector`
const SECRET = `${T}envoy.extensions.transport_sockets.tls.v3.Secret`
const STATS = { name: 'istio.stats', typed_config: { '@type': `${T}stats.PluginConfig` } }
const MX = {
  name: 'istio.metadata_exchange',
  typed_config: { '@type': `${T}envoy.tcp.metadataexchange.config.MetadataExchange`, protocol: 'istio-peer-exchange' },
}
const ECHO_CLUSTER = 'outbound|9000||tcp-echo.default.svc.cluster.local'
const BANNER_CLUSTER = 'outbound|9025||banner.default.svc.cluster.local'
const LEGACY_CLUSTER = 'outbound|9443||legacy.default.svc.cluster.local'

interface Svid {
  cert: string
  key: string
  bundle: string
}

async function issue(ca: CertificateAuthority, sa: string): Promise<Svid> {
  const csr = await makeCsr()
  const out = await ca.sign(csr.pem, { namespace: 'default', serviceAccount: sa })
  return { cert: out.certificatePem + out.chainPem.join(''), key: csr.keyPem, bundle: out.trustBundlePem.join('') }
}

const secrets = (s: Svid) => [
  {
    '@type': SECRET,
    name: 'default',
    tls_certificate: { certificate_chain: { inline_string: s.cert }, private_key: { inline_string: s.key } },
  },
  { '@type': SECRET, name: 'ROOTCA', validation_context: { trusted_ca: { inline_string: s.bundle } } },
]

const node = (workload: string, app: string, sa: string) => ({
  id: `sidecar~127.0.0.1~${workload}.default~default.svc.cluster.local`,
  metadata: { WORKLOAD_NAME: workload, NAMESPACE: 'default', LABELS: { app, version: 'v1' }, SERVICE_ACCOUNT: sa },
})

const tcpProxy = (cluster: string) => ({
  name: 'envoy.filters.network.tcp_proxy',
  typed_config: { '@type': TCP, stat_prefix: cluster, cluster },
})

function staticCluster(name: string, port: number, extra: Record<string, unknown> = {}) {
  return {
    name,
    type: 'STATIC',
    connect_timeout: '2s',
    load_assignment: {
      cluster_name: name,
      endpoints: [
        { lb_endpoints: [{ endpoint: { address: { socket_address: { address: '127.0.0.1', port_value: port } } } }] },
      ],
    },
    ...extra,
  }
}

/** B's inbound port as Istio's pilot builds a TCP port's: PERMISSIVE, the exchange first on both chains. */
function inbound(name: string, cluster: string) {
  const filters = [MX, STATS, tcpProxy(cluster)]
  return {
    name,
    address: { socket_address: { address: '127.0.0.1', port_value: 0 } },
    traffic_direction: 'INBOUND',
    listener_filters: [{ name: 'envoy.filters.listener.tls_inspector', typed_config: { '@type': TLS_INSPECTOR } }],
    filter_chains: [
      {
        filter_chain_match: { transport_protocol: 'tls' },
        filters,
        transport_socket: {
          name: 'envoy.transport_sockets.tls',
          typed_config: {
            '@type': DOWNSTREAM_TLS,
            require_client_certificate: true,
            common_tls_context: {
              tls_certificate_sds_secret_configs: [{ name: 'default' }],
              validation_context_sds_secret_config: { name: 'ROOTCA' },
              alpn_protocols: ['istio-peer-exchange', 'h2', 'http/1.1'],
            },
          },
        },
      },
      { filter_chain_match: { transport_protocol: 'raw_buffer' }, filters },
    ],
  }
}

/** A's cluster to a TLS server: Istio's mTLS context (ALPN istio-peer-exchange, istio) and the exchange filter. */
function meshCluster(name: string, port: number, expect: string) {
  return staticCluster(name, port, {
    transport_socket: {
      name: 'envoy.transport_sockets.tls',
      typed_config: {
        '@type': UPSTREAM_TLS,
        sni: `outbound_.${name.split('|')[1]}_._.${name.split('|')[3]}`,
        common_tls_context: {
          tls_certificate_sds_secret_configs: [{ name: 'default' }],
          combined_validation_context: {
            default_validation_context: {
              match_typed_subject_alt_names: [{ san_type: 'URI', matcher: { exact: expect } }],
            },
            validation_context_sds_secret_config: { name: 'ROOTCA' },
          },
          alpn_protocols: ['istio-peer-exchange', 'istio'],
        },
      },
    },
    filters: [MX],
  })
}

const outbound = (name: string, cluster: string) => ({
  name,
  address: { socket_address: { address: '127.0.0.1', port_value: 0 } },
  traffic_direction: 'OUTBOUND',
  filter_chains: [{ filters: [STATS, tcpProxy(cluster)] }],
})

/**
 * Writes `send` on a new connection (`connect`), half-closes, and resolves with everything the other side sent
 * until it closed.
 */
function exchange(send: Buffer, connect: () => net.Socket, reset = false): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const c = connect()
    const got: Buffer[] = []
    c.on('data', (d: Buffer) => got.push(d))
    // `reset`: the other side may close without reading all (a reset here)
    c.on('error', reset ? () => {} : reject)
    c.on('close', () => resolve(Buffer.concat(got)))
    c.end(send)
  })
}

const plain = (port: number) => () => net.connect(port, '127.0.0.1')

/** The TCP series of `labels` on a proxy, as numbers. */
function tcpSeries(m: Sample[], labels: Record<string, string>) {
  return {
    opened: sum(m, 'istio_tcp_connections_opened_total', labels),
    closed: sum(m, 'istio_tcp_connections_closed_total', labels),
    received: sum(m, 'istio_tcp_received_bytes_total', labels),
    sent: sum(m, 'istio_tcp_sent_bytes_total', labels),
  }
}

describe('Istio TCP metadata exchange between two proxies', { timeout: 60_000 }, () => {
  let ca: CertificateAuthority
  let svidA: Svid
  let svidB: Svid
  let a: RunningProxy
  let b: RunningProxy
  const servers: net.Server[] = []
  /** what the TLS server without the exchange received, per connection */
  const legacyReceived: number[] = []

  before(async () => {
    ca = await CertificateAuthority.open({
      dir: join(mkdtempSync(join(tmpdir(), 'loom-tcp-exchange-')), 'ca'),
      trustDomain: 'cluster.local',
    })
    svidA = await issue(ca, 'client')
    svidB = await issue(ca, 'tcp-echo')
    const listen = async (s: net.Server) => {
      servers.push(s)
      s.listen(0, '127.0.0.1')
      await once(s, 'listening')
      return (s.address() as net.AddressInfo).port
    }
    const echo = await listen(net.createServer({ allowHalfOpen: true }, (c) => c.pipe(c)))
    // a server that speaks first: a banner before the client has sent anything, then one reply and goodbye
    const banner = await listen(
      net.createServer((c) => {
        c.write('220 ready\r\n')
        c.once('data', () => c.end('221 bye\r\n'))
      }),
    )
    // a TLS server that does not speak the exchange (no ALPN at all), with B's certificate
    const legacy = await listen(
      tls.createServer({ cert: svidB.cert, key: svidB.key, allowHalfOpen: true }, (c) => {
        let n = 0
        c.on('data', (d: Buffer) => (n += d.length))
        c.on('end', () => {
          legacyReceived.push(n)
          c.end(Buffer.alloc(n, 'y'))
        })
      }),
    )
    b = await startProxy({
      node: node('tcp-echo-v1', 'tcp-echo', 'tcp-echo'),
      admin: { address: adminAddress() },
      static_resources: {
        secrets: secrets(svidB),
        listeners: [inbound('inbound|9000', 'inbound|9000||'), inbound('inbound|9025', 'inbound|9025||')],
        clusters: [staticCluster('inbound|9000||', echo), staticCluster('inbound|9025||', banner)],
      },
    })
    a = await startProxy({
      node: node('client-v1', 'client', 'client'),
      admin: { address: adminAddress() },
      static_resources: {
        secrets: secrets(svidA),
        listeners: [
          outbound('echo', ECHO_CLUSTER),
          outbound('banner', BANNER_CLUSTER),
          outbound('legacy', LEGACY_CLUSTER),
        ],
        clusters: [
          meshCluster(ECHO_CLUSTER, b.ports['inbound|9000']!, SA('tcp-echo')),
          meshCluster(BANNER_CLUSTER, b.ports['inbound|9025']!, SA('tcp-echo')),
          meshCluster(LEGACY_CLUSTER, legacy, SA('tcp-echo')),
        ],
      },
    })
  })
  after(async () => {
    await Promise.all([a?.stop(), b?.stop()])
    for (const s of servers) s.close()
  })

  const source = {
    reporter: 'source',
    source_workload: 'client-v1',
    source_app: 'client',
    source_version: 'v1',
    source_principal: SA('client'),
    request_protocol: 'tcp',
    connection_security_policy: 'unknown',
  }
  const echoDestination = {
    destination_workload: 'tcp-echo-v1',
    destination_workload_namespace: 'default',
    destination_app: 'tcp-echo',
    destination_version: 'v1',
    destination_canonical_service: 'tcp-echo',
    destination_principal: SA('tcp-echo'),
  }
  const clientSource = {
    source_workload: 'client-v1',
    source_workload_namespace: 'default',
    source_app: 'client',
    source_version: 'v1',
    source_canonical_service: 'client',
    source_principal: SA('client'),
  }

  test("both reporters name the other side's workload and count exactly the application's bytes", async () => {
    const payload = Buffer.alloc(5000, 'x')
    const echoed = await exchange(payload, plain(a.ports.echo!))
    assert.equal(echoed.length, payload.length)
    assert.ok(echoed.equals(payload), 'no prefix byte reached either application')
    const src = { ...source, ...echoDestination, destination_service: 'tcp-echo.default.svc.cluster.local' }
    const dst = {
      reporter: 'destination',
      ...clientSource,
      destination_workload: 'tcp-echo-v1',
      destination_principal: SA('tcp-echo'),
      connection_security_policy: 'mutual_tls',
    }
    await eventually(async () => tcpSeries(await scrape(a.admin), src).closed === 1, 10_000, 'A counts it closed')
    await eventually(async () => tcpSeries(await scrape(b.admin), dst).closed === 1, 10_000, 'B counts it closed')
    assert.deepEqual(tcpSeries(await scrape(a.admin), src), { opened: 1, closed: 1, received: 5000, sent: 5000 })
    assert.deepEqual(tcpSeries(await scrape(b.admin), dst), { opened: 1, closed: 1, received: 5000, sent: 5000 })
    for (const p of [a, b]) {
      assert.equal(await stat(p.admin, 'metadata_exchange.alpn_protocol_found'), 1)
      assert.equal(await stat(p.admin, 'metadata_exchange.metadata_added'), 1)
      assert.equal(await stat(p.admin, 'metadata_exchange.header_not_found'), 0)
    }
    // the TCP proxies' own byte counts leave the prefixes out too (B's downstream is the mTLS connection)
    assert.equal(await stat(b.admin, 'tcp.inbound|9000||.downstream_cx_rx_bytes_total'), 5000)
    assert.equal(await stat(b.admin, 'tcp.inbound|9000||.downstream_cx_tx_bytes_total'), 5000)
  })

  test('a server that speaks first: each side writes its prefix at once, so nobody waits for the other', async () => {
    const got = await new Promise<string>((resolve, reject) => {
      const c = net.connect(a.ports.banner!, '127.0.0.1')
      let text = ''
      c.setEncoding('utf8')
      c.on('data', (d: string) => {
        text += d
        // the banner came before the client sent a byte
        if (text === '220 ready\r\n') c.write('QUIT\r\n')
      })
      c.on('error', reject)
      c.on('close', () => resolve(text))
    })
    assert.equal(got, '220 ready\r\n221 bye\r\n')
    const src = {
      ...source,
      destination_workload: 'tcp-echo-v1',
      destination_service: 'banner.default.svc.cluster.local',
    }
    await eventually(async () => tcpSeries(await scrape(a.admin), src).closed === 1, 10_000, 'A counts it closed')
    assert.deepEqual(tcpSeries(await scrape(a.admin), src), { opened: 1, closed: 1, received: 6, sent: 20 })
  })

  test('a client that does not offer the ALPN still gets through, its workload unknown', async () => {
    const before = await scrape(b.admin)
    const notFound = await stat(b.admin, 'metadata_exchange.alpn_protocol_not_found')
    const labels = {
      reporter: 'destination',
      source_workload: 'unknown',
      source_app: 'unknown',
      source_version: 'unknown',
      source_principal: SA('client'),
      destination_workload: 'tcp-echo-v1',
      connection_security_policy: 'mutual_tls',
    }
    const connect = () =>
      tls.connect({
        port: b.ports['inbound|9000']!,
        host: '127.0.0.1',
        cert: svidA.cert,
        key: svidA.key,
        ca: svidA.bundle,
        // Istio's in-mesh ALPN without the exchange (a client with DisableMxALPN, or an older one)
        ALPNProtocols: ['istio'],
        checkServerIdentity: () => undefined,
      })
    const echoed = await exchange(Buffer.alloc(1234, 'z'), connect)
    assert.equal(echoed.toString(), 'z'.repeat(1234))
    await eventually(
      async () => tcpSeries(await scrape(b.admin), labels).closed - tcpSeries(before, labels).closed === 1,
      10_000,
      'B counts it closed',
    )
    const now = tcpSeries(await scrape(b.admin), labels)
    const was = tcpSeries(before, labels)
    assert.deepEqual(
      { opened: now.opened - was.opened, received: now.received - was.received, sent: now.sent - was.sent },
      { opened: 1, received: 1234, sent: 1234 },
    )
    assert.equal(await stat(b.admin, 'metadata_exchange.alpn_protocol_not_found'), notFound + 1)
  })

  test('a server that does not speak the exchange gets only the application bytes; its workload is unknown', async () => {
    const echoed = await exchange(Buffer.alloc(777, 'q'), plain(a.ports.legacy!))
    assert.equal(echoed.toString(), 'y'.repeat(777))
    assert.deepEqual(legacyReceived, [777])
    const src = {
      ...source,
      destination_workload: 'unknown',
      destination_app: 'unknown',
      destination_principal: SA('tcp-echo'),
      destination_service: 'legacy.default.svc.cluster.local',
    }
    await eventually(async () => tcpSeries(await scrape(a.admin), src).closed === 1, 10_000, 'A counts it closed')
    assert.deepEqual(tcpSeries(await scrape(a.admin), src), { opened: 1, closed: 1, received: 777, sent: 777 })
  })

  test("a prefix that is not Istio's closes the connection, logged and counted, and the proxy serves on", async () => {
    const mtls = () =>
      tls.connect({
        port: b.ports['inbound|9000']!,
        host: '127.0.0.1',
        cert: svidA.cert,
        key: svidA.key,
        ca: svidA.bundle,
        ALPNProtocols: ['istio-peer-exchange', 'istio'],
        checkServerIdentity: () => undefined,
      })
    // the application's bytes where the prefix belongs: at most B's own prefix comes back, nothing of the
    // backend's, then the close
    const wrongMagic = await exchange(Buffer.from('hello, no prefix here'), mtls, true)
    if (wrongMagic.length > 0) {
      assert.deepEqual([...wrongMagic.subarray(0, 4)], [0x3d, 0x23, 0x04, 0x67])
      assert.ok(wrongMagic.length <= 8 + wrongMagic.readUInt32BE(4), 'nothing of the backend came back')
    }
    assert.equal(await stat(b.admin, 'metadata_exchange.initial_header_not_found'), 1)
    const huge = Buffer.from([0x3d, 0x23, 0x04, 0x67, 0x00, 0x10, 0x00, 0x00])
    await exchange(huge, mtls, true)
    assert.equal(await stat(b.admin, 'metadata_exchange.header_not_found'), 1)
    assert.match(b.stderr(), /"scope":"metadata_exchange".*"reason":"magic"/)
    assert.match(b.stderr(), /"reason":"oversized","detail":"a payload of 1048576 bytes, over the 65536 bytes read"/)
    // still serving
    const echoed = await exchange(Buffer.from('after'), plain(a.ports.echo!))
    assert.equal(echoed.toString(), 'after')
  })
})
