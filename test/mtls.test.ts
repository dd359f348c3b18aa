/**
 * Mutual TLS between two real proxies, as Istio's sidecars make it: client → proxy A (plain text) → mTLS → proxy B
 * → backend. A's certificates come from its bootstrap (`static_resources.secrets`), B's over ADS (SDS) from an xDS
 * server in the test, which also rotates B's certificate under load. The certificates are real X.509-SVIDs from
 * Loom's CA.
 */
import assert from 'node:assert/strict'
import { createHash, X509Certificate } from 'node:crypto'
import { mkdtempSync } from 'node:fs'
import * as http from 'node:http'
import * as https from 'node:https'
import * as net from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type * as tls from 'node:tls'
import { after, before, describe, test } from 'node:test'
import { CertificateAuthority } from '../src/control/ca/ca.js'
import { makeCsr } from '../src/control/ca/pki-fixtures.js'
import { makeSnapshot } from '../src/xds/cache.js'
import { XdsServer } from '../src/xds/server.js'
import { TYPE_URL } from '../src/xds/snapshot.js'
import { eventually } from './helpers/control.js'
import { adminAddress, HCM, ROUTER, type RunningProxy, startProxy } from './helpers/proxy.js'
import { type Backend, startBackend } from './helpers/servers.js'
import { type Relay, startRelay, tlsRecords } from './helpers/wire.js'

const T = 'type.googleapis.com/'
const UPSTREAM_TLS = `${T}envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext`
const DOWNSTREAM_TLS = `${T}envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext`
const TLS_INSPECTOR = `${T}envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector`
const SECRET = `${T}envoy.extensions.transport_sockets.tls.v3.Secret`
const NODE_B = 'mtls-proxy-b'
const TD = 'cluster.local'
const ID_A = `spiffe://${TD}/ns/default/sa/client`
const ID_B = `spiffe://${TD}/ns/default/sa/server`
const ADS = { ads: {}, resource_api_version: 'V3' }

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

const certSecret = (name: string, s: Svid) => ({
  '@type': SECRET,
  name,
  tls_certificate: { certificate_chain: { inline_string: s.cert }, private_key: { inline_string: s.key } },
})
const rootSecret = (s: Svid) => ({
  '@type': SECRET,
  name: 'ROOTCA',
  validation_context: { trusted_ca: { inline_string: s.bundle } },
})

/** Istio's mesh TLS context: own certificate `default`, roots `ROOTCA`, the peer's SAN checked as given. */
function meshTls(sans: unknown[], sds: boolean): Record<string, unknown> {
  const cfg = sds ? { sds_config: ADS } : {}
  return {
    tls_certificate_sds_secret_configs: [{ name: 'default', ...cfg }],
    combined_validation_context: {
      default_validation_context: { match_typed_subject_alt_names: sans },
      validation_context_sds_secret_config: { name: 'ROOTCA', ...cfg },
    },
  }
}

const routerFilters = [{ name: 'envoy.filters.http.router', typed_config: { '@type': ROUTER } }]
const toCluster = (cluster: string, prefix = '/') => ({
  name: 'all',
  domains: ['*'],
  routes: [{ match: { prefix }, route: { cluster } }],
})

/** B's inbound HCM: Istio's XFCC settings. */
const inboundHcm = {
  name: 'envoy.filters.network.http_connection_manager',
  typed_config: {
    '@type': HCM,
    stat_prefix: 'inbound',
    route_config: { virtual_hosts: [toCluster('backend')] },
    http_filters: routerFilters,
    forward_client_cert_details: 'APPEND_FORWARD',
    set_current_client_cert_details: { subject: true, dns: true, uri: true },
  },
}
const mtlsChain = {
  filter_chain_match: { transport_protocol: 'tls' },
  filters: [inboundHcm],
  transport_socket: {
    name: 'envoy.transport_sockets.tls',
    typed_config: {
      '@type': DOWNSTREAM_TLS,
      require_client_certificate: true,
      common_tls_context: {
        ...meshTls([{ san_type: 'URI', matcher: { prefix: `spiffe://${TD}/` } }], true),
        alpn_protocols: ['h2', 'http/1.1'],
        tls_params: { tls_minimum_protocol_version: 'TLSv1_2', tls_maximum_protocol_version: 'TLSv1_3' },
      },
    },
  },
}
const inboundListener = (name: string, chains: unknown[]) => ({
  name,
  address: { socket_address: { address: '127.0.0.1', port_value: 0 } },
  listener_filters: [{ name: 'envoy.filters.listener.tls_inspector', typed_config: { '@type': TLS_INSPECTOR } }],
  filter_chains: chains,
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

/** A's outbound mTLS cluster to B, as Istio's ISTIO_MUTUAL: SNI, ALPN, the expected SPIFFE ID. */
function mtlsCluster(name: string, port: number, expect: string, alpn: string[], extra: Record<string, unknown> = {}) {
  return staticCluster(name, port, {
    transport_socket: {
      name: 'envoy.transport_sockets.tls',
      typed_config: {
        '@type': UPSTREAM_TLS,
        sni: 'outbound_.80_._.server.default.svc.cluster.local',
        common_tls_context: {
          ...meshTls([{ san_type: 'URI', matcher: { exact: expect } }], false),
          alpn_protocols: alpn,
          tls_params: { tls_minimum_protocol_version: 'TLSv1_2', tls_maximum_protocol_version: 'TLSv1_3' },
        },
      },
    },
    ...extra,
  })
}

function get(
  port: number,
  path: string,
  headers: Record<string, string> = {},
): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path, headers, agent: false }, (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (c: string) => (body += c))
      res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body }))
    })
    req.on('error', reject)
  })
}

/** A request straight to B over mTLS with `svid`, on a new connection; resolves with the body and B's certificate. */
function mtlsGet(
  port: number,
  svid: Svid,
  path = '/',
  headers: Record<string, string> = {},
): Promise<{ status: number; body: string; serverSerial: string }> {
  return new Promise((resolve, reject) => {
    const req = https.get(
      {
        host: '127.0.0.1',
        port,
        path,
        headers,
        agent: false,
        ca: svid.bundle,
        // an empty certificate: a TLS client that presents none
        ...(svid.cert === '' ? {} : { cert: svid.cert, key: svid.key }),
        servername: 'server.default.svc',
        // an X.509-SVID has no DNS name; the SPIFFE ID is checked below
        checkServerIdentity: () => undefined,
      },
      (res) => {
        const peer = (res.socket as tls.TLSSocket).getPeerCertificate()
        let body = ''
        res.setEncoding('utf8')
        res.on('data', (c: string) => (body += c))
        res.on('end', () => resolve({ status: res.statusCode!, body, serverSerial: peer.serialNumber }))
      },
    )
    req.on('error', reject)
  })
}

const serialOf = (pem: string) => new X509Certificate(pem).serialNumber

describe('mutual TLS between two proxies (SDS, SPIFFE peer checks, XFCC, PERMISSIVE)', { timeout: 90_000 }, () => {
  let ca: CertificateAuthority
  let svidA: Svid
  let svidB: Svid
  let backend: Backend
  let xds: XdsServer
  let b: RunningProxy
  let a: RunningProxy
  let relay: Relay
  const secretsB = (s: Svid) =>
    makeSnapshot({ [TYPE_URL.secret]: [certSecret('default', s), rootSecret(s)] as Record<string, unknown>[] })

  before(async () => {
    ca = await CertificateAuthority.open({
      dir: join(mkdtempSync(join(tmpdir(), 'loom-mtls-')), 'ca'),
      trustDomain: TD,
    })
    svidA = await issue(ca, 'client')
    svidB = await issue(ca, 'server')
    backend = await startBackend((req, res) => {
      res.setHeader('content-type', 'application/json')
      res.end(JSON.stringify({ path: req.url, xfcc: req.headers['x-forwarded-client-cert'] ?? null }))
    })
    xds = new XdsServer({ pushDebounceMs: 10, log: () => {} })
    const xdsPort = await xds.listen('127.0.0.1', 0)
    xds.setSnapshot(NODE_B, secretsB(svidB))
    b = await startProxy(
      {
        admin: { address: adminAddress() },
        static_resources: {
          listeners: [
            inboundListener('strict', [mtlsChain]),
            inboundListener('permissive', [
              mtlsChain,
              { ...mtlsChain, filter_chain_match: { transport_protocol: 'raw_buffer' }, transport_socket: undefined },
            ]),
          ],
          clusters: [staticCluster('backend', backend.port)],
        },
      },
      ['--xds', `127.0.0.1:${xdsPort}`, '--node', NODE_B],
    )
    // B's secrets arrive over ADS: until then its TLS chains refuse handshakes
    await eventually(
      async () => (await mtlsGet(b.ports.strict!, svidA).catch(() => ({ status: 0 }))).status === 200,
      20_000,
      'B serves mTLS with its SDS certificate',
    )
    relay = await startRelay(b.ports.strict!)
    const alpn = ['istio-peer-exchange', 'istio']
    a = await startProxy({
      admin: { address: adminAddress() },
      static_resources: {
        secrets: [certSecret('default', svidA), rootSecret(svidA)],
        listeners: [
          {
            name: 'outbound',
            address: { socket_address: { address: '127.0.0.1', port_value: 0 } },
            filter_chains: [
              {
                filters: [
                  {
                    name: 'envoy.filters.network.http_connection_manager',
                    typed_config: {
                      '@type': HCM,
                      stat_prefix: 'outbound',
                      route_config: {
                        virtual_hosts: [
                          {
                            name: 'all',
                            domains: ['*'],
                            routes: [
                              { match: { prefix: '/wrong' }, route: { cluster: 'b-wrong-san' } },
                              { match: { prefix: '/h2' }, route: { cluster: 'b-h2' } },
                              { match: { prefix: '/' }, route: { cluster: 'b-relay' } },
                            ],
                          },
                        ],
                      },
                      http_filters: routerFilters,
                    },
                  },
                ],
              },
            ],
          },
        ],
        clusters: [
          mtlsCluster('b-relay', relay.port, ID_B, alpn),
          mtlsCluster('b-wrong-san', b.ports.strict!, `spiffe://${TD}/ns/default/sa/other`, alpn),
          mtlsCluster('b-h2', b.ports.strict!, ID_B, [...alpn, 'h2'], {
            typed_extension_protocol_options: {
              'envoy.extensions.upstreams.http.v3.HttpProtocolOptions': {
                '@type': `${T}envoy.extensions.upstreams.http.v3.HttpProtocolOptions`,
                explicit_http_config: { http2_protocol_options: {} },
              },
            },
          }),
        ],
      },
    })
  })

  after(async () => {
    await a?.stop()
    await b?.stop()
    await relay?.close()
    await xds?.close()
    await backend?.close()
  })

  test('client → A → mTLS → B → backend: the backend sees XFCC with both SPIFFE IDs; a client-sent XFCC is stripped', async () => {
    const r = await get(a.ports.outbound!, '/hello', {
      'x-forwarded-client-cert': 'By=spiffe://evil/x;URI=spiffe://evil/y',
    })
    assert.equal(r.status, 200, r.body)
    const seen = JSON.parse(r.body) as { xfcc: string | null }
    const leafA = new X509Certificate(svidA.cert)
    const hash = createHash('sha256').update(leafA.raw).digest('hex')
    assert.equal(seen.xfcc, `By=${ID_B};Hash=${hash};Subject="";URI=${ID_A}`)
  })

  test('the bytes between A and B are TLS records, never plain-text HTTP', async () => {
    const r = await get(a.ports.outbound!, '/secret-path-marker')
    assert.equal(r.status, 200)
    const up = Buffer.concat(relay.up)
    const down = Buffer.concat(relay.down)
    for (const [dir, bytes] of [
      ['A → B', up],
      ['B → A', down],
    ] as const) {
      const rec = tlsRecords(bytes)
      assert.ok(rec.ok && rec.appData > 0, `${dir}: whole TLS records with application data (${JSON.stringify(rec)})`)
      const text = bytes.toString('latin1')
      for (const plain of ['secret-path-marker', 'HTTP/1.1', 'x-forwarded-client-cert', ID_A])
        assert.ok(!text.includes(plain), `${dir}: "${plain}" not in the clear`)
    }
    assert.equal(up[0], 0x16, 'A opens with a TLS handshake record')
  })

  test('B refuses a plain-text client where only the TLS chain exists, and a TLS client without a certificate', async () => {
    const plain = await new Promise<string>((resolve) => {
      const s = net.connect(b.ports.strict!, '127.0.0.1', () => s.write('GET / HTTP/1.1\r\nhost: b\r\n\r\n'))
      let got = ''
      s.on('data', (d: Buffer) => (got += d.toString()))
      s.on('close', () => resolve(got))
      s.on('error', () => {})
    })
    assert.equal(plain, '', 'closed without a response')
    const noCert = await mtlsGet(b.ports.strict!, { ...svidA, cert: '', key: '' } as Svid).then(
      () => 'answered',
      (e: Error) => e.message,
    )
    assert.notEqual(noCert, 'answered')
    // the same client with its certificate is served: the refusals above are about the client, not the port
    assert.equal((await mtlsGet(b.ports.strict!, svidA)).status, 200)
    const stats = await (await fetch(`http://${b.admin}/stats`)).text()
    assert.match(stats, /^listener\.127\.0\.0\.1_\d+\.no_filter_chain_match: [1-9]/m)
  })

  test('PERMISSIVE: one port serves plain text and mTLS; plain text gets no XFCC, even one the client sent', async () => {
    const plain = await get(b.ports.permissive!, '/p', { 'x-forwarded-client-cert': `By=${ID_B};URI=${ID_A}` })
    assert.equal(plain.status, 200)
    assert.equal((JSON.parse(plain.body) as { xfcc: string | null }).xfcc, null)
    const m = await mtlsGet(b.ports.permissive!, svidA, '/m')
    assert.equal(m.status, 200)
    assert.match(
      (JSON.parse(m.body) as { xfcc: string }).xfcc,
      new RegExp(`^By=${ID_B};Hash=[0-9a-f]{64};Subject="";URI=${ID_A}$`),
    )
  })

  test('config dumps show the secrets, never a private key', async () => {
    const dumpA = await (await fetch(`http://${a.admin}/config_dump`)).text()
    const dumpB = await (await fetch(`http://${b.admin}/config_dump`)).text()
    const keyBody = (k: string) => k.split('\n')[1]!
    assert.ok(!dumpA.includes(keyBody(svidA.key)), "A's bootstrap key is redacted")
    assert.ok(dumpA.includes('SecretsConfigDump') && dumpA.includes('[redacted]'))
    const secrets = (
      JSON.parse(dumpB) as { configs: { '@type': string; dynamic_active_secrets?: { name: string }[] }[] }
    ).configs.find((c) => c['@type'].endsWith('SecretsConfigDump'))!
    assert.deepEqual(secrets.dynamic_active_secrets!.map((s) => s.name).sort(), ['ROOTCA', 'default'])
    assert.ok(!dumpB.includes(keyBody(svidB.key)), "B's SDS key is redacted")
  })

  test("wrong SAN: A's local reply is 503 UF naming the reason", async () => {
    const r = await get(a.ports.outbound!, '/wrong')
    assert.equal(r.status, 503)
    assert.equal(r.headers['x-loom-reason'], 'tls_peer: wrong SAN')
    assert.match(r.body, new RegExp(`the peer is ${ID_B}, expected spiffe://${TD}/ns/default/sa/other`))
  })

  test('HTTP/2 over mTLS when ALPN picks h2: many requests, one connection', async () => {
    const rs = await Promise.all(Array.from({ length: 20 }, (_, i) => get(a.ports.outbound!, `/h2/${i}`)))
    for (const r of rs) assert.equal(r.status, 200, r.body)
    const stats = await (await fetch(`http://${a.admin}/stats`)).text()
    assert.match(stats, /^cluster\.b-h2\.upstream_cx_total: 1$/m)
    const statsB = await (await fetch(`http://${b.admin}/stats`)).text()
    assert.match(statsB, /^http\.inbound\.downstream_cx_http2_total: [1-9]/m)
  })

  test('certificate rotation over SDS under steady load: no request fails, new connections get the new certificate', async (t) => {
    const oldSerial = serialOf(svidB.cert)
    const first = await mtlsGet(b.ports.strict!, svidA)
    assert.equal(first.serverSerial, oldSerial)
    const rotated = await issue(ca, 'server')
    let failures = 0
    let done = 0
    let stop = false
    const errors: string[] = []
    const loop = async (fn: () => Promise<number>) => {
      while (!stop) {
        const status = await fn().catch((e: Error) => {
          errors.push(e.message)
          return 0
        })
        if (status !== 200) failures++
        done++
      }
    }
    const workers = [
      loop(async () => (await get(a.ports.outbound!, '/load')).status),
      loop(async () => (await get(a.ports.outbound!, '/h2/load')).status),
      loop(async () => (await mtlsGet(b.ports.strict!, svidA)).status),
    ]
    while (done < 60) await new Promise((r) => setImmediate(r))
    xds.setSnapshot(NODE_B, secretsB(rotated))
    await eventually(
      async () => (await mtlsGet(b.ports.strict!, svidA)).serverSerial === serialOf(rotated.cert),
      15_000,
      'a new connection gets the rotated certificate',
    )
    const after = done
    while (done < after + 60) await new Promise((r) => setImmediate(r))
    stop = true
    await Promise.all(workers)
    t.diagnostic(`rotation under load: ${done} requests, ${failures} failed`)
    assert.equal(failures, 0, errors.slice(0, 3).join('; '))
    // the HTTP/2 connection A opened to B before the rotation is still the one carrying requests: not dropped
    const stats = await (await fetch(`http://${a.admin}/stats`)).text()
    assert.match(stats, /^cluster\.b-h2\.upstream_cx_total: 1$/m)
    // A's pooled connections made before the rotation keep working; a new one through A verifies the new cert too
    const r = await get(a.ports.outbound!, '/after')
    assert.equal(r.status, 200)
  })
})
