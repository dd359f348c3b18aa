/**
 * Access log entries checked against the traffic that made them, between two real proxies speaking mTLS as
 * sidecars do: client → A (outbound) → mTLS → B (inbound, an RBAC DENY policy) → backend, and a TCP connection the
 * same way. Every field of an entry is compared with the request sent (method, path, status, bytes, request id,
 * trace id, upstream cluster and host, both sides' addresses), the SPIFFE identities each side saw, and the RBAC
 * decision; B's text and JSON formats are written from the same requests. Also the admin `/tap` stream of A:
 * filters, the `max` count, and the end of the stream.
 */
import assert from 'node:assert/strict'
import { mkdtempSync, readFileSync } from 'node:fs'
import * as http from 'node:http'
import * as net from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { CertificateAuthority } from '../src/control/ca/ca.js'
import { makeCsr } from '../src/control/ca/pki-fixtures.js'
import { eventually } from './helpers/control.js'
import { adminAddress, HCM, ROUTER, type RunningProxy, startProxy, TCP } from './helpers/proxy.js'
import { type Backend, startBackend } from './helpers/servers.js'

const T = 'type.googleapis.com/'
const UPSTREAM_TLS = `${T}envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext`
const DOWNSTREAM_TLS = `${T}envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext`
const SECRET = `${T}envoy.extensions.transport_sockets.tls.v3.Secret`
const RBAC = `${T}envoy.extensions.filters.http.rbac.v3.RBAC`
const FILE_LOG = `${T}envoy.extensions.access_loggers.file.v3.FileAccessLog`
const TD = 'cluster.local'
const ID_A = `spiffe://${TD}/ns/default/sa/client`
const ID_B = `spiffe://${TD}/ns/default/sa/server`
const SNI = 'outbound_.9080_._.server.default.svc.cluster.local'
const TRACE = '4bf92f3577b34da6a3ce929d0e0e4736'
const BODY = 'x'.repeat(1234)

type Entry = Record<string, unknown>

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

const meshTls = (san: unknown) => ({
  tls_certificate_sds_secret_configs: [{ name: 'default' }],
  combined_validation_context: {
    default_validation_context: { match_typed_subject_alt_names: [{ san_type: 'URI', matcher: san }] },
    validation_context_sds_secret_config: { name: 'ROOTCA' },
  },
})

const fileLog = (path: string, log_format?: unknown) => ({
  name: 'envoy.access_loggers.file',
  typed_config: { '@type': FILE_LOG, path, ...(log_format === undefined ? {} : { log_format }) },
})

function cluster(name: string, port: number, tls: boolean): unknown {
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
    ...(tls
      ? {
          transport_socket: {
            name: 'envoy.transport_sockets.tls',
            typed_config: {
              '@type': UPSTREAM_TLS,
              sni: SNI,
              common_tls_context: { ...meshTls({ exact: ID_B }), alpn_protocols: ['http/1.1'] },
            },
          },
        }
      : {}),
  }
}

const mtlsServer = {
  name: 'envoy.transport_sockets.tls',
  typed_config: {
    '@type': DOWNSTREAM_TLS,
    require_client_certificate: true,
    common_tls_context: { ...meshTls({ prefix: `spiffe://${TD}/` }), alpn_protocols: ['http/1.1'] },
  },
}

const listener = (name: string, filters: unknown[], transport?: unknown) => ({
  name,
  address: { socket_address: { address: '127.0.0.1', port_value: 0 } },
  filter_chains: [{ filters, ...(transport === undefined ? {} : { transport_socket: transport }) }],
})

const hcmFilter = (statPrefix: string, cluster: string, accessLog: unknown[], filters: unknown[] = []) => ({
  name: 'envoy.filters.network.http_connection_manager',
  typed_config: {
    '@type': HCM,
    stat_prefix: statPrefix,
    route_config: {
      virtual_hosts: [
        {
          name: 'all',
          domains: ['*'],
          routes: [{ name: `to-${cluster}`, match: { prefix: '/' }, route: { cluster } }],
        },
      ],
    },
    http_filters: [...filters, { name: 'envoy.filters.http.router', typed_config: { '@type': ROUTER } }],
    access_log: accessLog,
  },
})

const tcpFilter = (cluster: string, log: string) => ({
  name: 'envoy.filters.network.tcp_proxy',
  typed_config: { '@type': TCP, stat_prefix: cluster, cluster, access_log: [fileLog(log)] },
})

const DENY_ADMIN = {
  name: 'envoy.filters.http.rbac',
  typed_config: {
    '@type': RBAC,
    rules: {
      action: 'DENY',
      policies: {
        'ns[default]-policy[deny-admin]-rule[0]': {
          permissions: [{ url_path: { path: { prefix: '/admin' } } }],
          principals: [{ any: true }],
        },
      },
    },
  },
}

function request(
  port: number,
  method: string,
  path: string,
  headers: Record<string, string> = {},
  body = '',
): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, method, path, headers, agent: false }, (res) => {
      let text = ''
      res.setEncoding('utf8')
      res.on('data', (c: string) => (text += c))
      res.on('end', () => resolve({ status: res.statusCode!, body: text }))
    })
    req.on('error', reject)
    req.end(body)
  })
}

function entries(file: string): Entry[] {
  let text = ''
  try {
    text = readFileSync(file, 'utf8')
  } catch {
    return []
  }
  return text
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => JSON.parse(l) as Entry)
}

/** The entry of `file` for which `pick` holds, once it is written. */
async function entryOf(file: string, pick: (e: Entry) => boolean, what: string): Promise<Entry> {
  let found: Entry | undefined
  await eventually(async () => (found = entries(file).find(pick)) !== undefined, 5000, what)
  return found!
}

describe('access logs and tap between two mTLS proxies', { timeout: 60_000 }, () => {
  let backend: Backend
  let echo: net.Server
  let a: RunningProxy
  let b: RunningProxy
  const dir = mkdtempSync(join(tmpdir(), 'loom-access-log-'))
  const logA = join(dir, 'a.log')
  const logB = join(dir, 'b.log')
  const textB = join(dir, 'b.txt')
  const jsonB = join(dir, 'b-format.log')
  const tcpA = join(dir, 'a-tcp.log')
  const tcpB = join(dir, 'b-tcp.log')

  before(async () => {
    const ca = await CertificateAuthority.open({ dir: join(dir, 'ca'), trustDomain: TD })
    const svidA = await issue(ca, 'client')
    const svidB = await issue(ca, 'server')
    backend = await startBackend((_req, res) => res.end(BODY))
    echo = net.createServer((s) => s.pipe(s))
    await new Promise<void>((r) => echo.listen(0, '127.0.0.1', r))
    const echoPort = (echo.address() as net.AddressInfo).port
    b = await startProxy({
      admin: { address: adminAddress() },
      static_resources: {
        secrets: secrets(svidB),
        listeners: [
          listener(
            'inbound-http',
            [
              hcmFilter(
                'inbound_0.0.0.0_9080',
                'backend',
                [
                  fileLog(logB),
                  fileLog(textB, {
                    text_format_source: {
                      inline_string:
                        '%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %RESPONSE_CODE% %RESPONSE_FLAGS% %DOWNSTREAM_PEER_URI_SAN% %DYNAMIC_METADATA(envoy.filters.http.rbac:enforced_effective_policy_id)% %REQ(X-REQUEST-ID):4%\n',
                    },
                  }),
                  fileLog(jsonB, {
                    json_format: {
                      code: '%RESPONSE_CODE%',
                      who: '%DOWNSTREAM_PEER_URI_SAN%',
                      at: 'b',
                      ua: '%REQ(USER-AGENT)%',
                    },
                  }),
                ],
                [DENY_ADMIN],
              ),
            ],
            mtlsServer,
          ),
          listener('inbound-tcp', [tcpFilter('inbound|9000||', tcpB)], mtlsServer),
        ],
        clusters: [cluster('backend', backend.port, false), cluster('inbound|9000||', echoPort, false)],
      },
    })
    a = await startProxy({
      admin: { address: adminAddress() },
      static_resources: {
        secrets: secrets(svidA),
        listeners: [
          listener('outbound', [hcmFilter('outbound_http', 'to-b', [fileLog(logA)])]),
          listener('outbound-tcp', [tcpFilter('to-b-tcp', tcpA)]),
        ],
        clusters: [cluster('to-b', b.ports['inbound-http']!, true), cluster('to-b-tcp', b.ports['inbound-tcp']!, true)],
      },
    })
  })

  after(async () => {
    await a?.stop()
    await b?.stop()
    await backend?.close()
    echo?.close()
  })

  test("a request's entries on both sides: what was sent, who called whom, addresses, timings", async () => {
    const r = await request(
      a.ports.outbound!,
      'POST',
      '/items?color=blue',
      {
        'x-request-id': 'rid-1-abc',
        'user-agent': 'access-log-test/1',
        traceparent: `00-${TRACE}-00f067aa0ba902b7-01`,
        'content-type': 'text/plain',
      },
      'abcdef',
    )
    assert.equal(r.status, 200)
    assert.equal(r.body, BODY)
    const ea = await entryOf(logA, (e) => e.request_id === 'rid-1-abc', "A's entry")
    const eb = await entryOf(logB, (e) => e.request_id === 'rid-1-abc', "B's entry")
    const bPort = b.ports['inbound-http']!
    assert.match(String(ea.start_time), /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/)
    assert.deepEqual(
      {
        method: ea.method,
        path: ea.path,
        protocol: ea.protocol,
        response_code: ea.response_code,
        response_flags: ea.response_flags,
        response_code_details: ea.response_code_details,
        bytes_received: ea.bytes_received,
        bytes_sent: ea.bytes_sent,
        user_agent: ea.user_agent,
        authority: ea.authority,
        upstream_cluster: ea.upstream_cluster,
        upstream_host: ea.upstream_host,
        route_name: ea.route_name,
        trace_id: ea.trace_id,
        upstream_request_attempt_count: ea.upstream_request_attempt_count,
        // A's client spoke plain text; A verified B's certificate
        downstream_peer_principal: ea.downstream_peer_principal,
        upstream_peer_principal: ea.upstream_peer_principal,
        downstream_local_address: ea.downstream_local_address,
        downstream_direct_remote_address: ea.downstream_direct_remote_address,
        rbac_result: ea.rbac_result,
      },
      {
        method: 'POST',
        path: '/items?color=blue',
        protocol: 'HTTP/1.1',
        response_code: 200,
        response_flags: '-',
        response_code_details: 'via_upstream',
        bytes_received: 6,
        bytes_sent: BODY.length,
        user_agent: 'access-log-test/1',
        authority: `127.0.0.1:${a.ports.outbound}`,
        upstream_cluster: 'to-b',
        upstream_host: `127.0.0.1:${bPort}`,
        route_name: 'to-to-b',
        trace_id: TRACE,
        upstream_request_attempt_count: 1,
        downstream_peer_principal: null,
        upstream_peer_principal: ID_B,
        downstream_local_address: `127.0.0.1:${a.ports.outbound}`,
        downstream_direct_remote_address: '127.0.0.1',
        rbac_result: null,
      },
    )
    assert.match(String(ea.upstream_local_address), /^127\.0\.0\.1:\d+$/)
    assert.equal(typeof ea.duration, 'number')
    assert.equal(typeof ea.upstream_service_time, 'number')
    assert.ok((ea.upstream_service_time as number) <= (ea.duration as number) + 1)
    // B saw A's certificate, the SNI A sent, and the request as A forwarded it
    assert.deepEqual(
      {
        method: eb.method,
        path: eb.path,
        response_code: eb.response_code,
        bytes_received: eb.bytes_received,
        bytes_sent: eb.bytes_sent,
        downstream_peer_principal: eb.downstream_peer_principal,
        upstream_peer_principal: eb.upstream_peer_principal,
        requested_server_name: eb.requested_server_name,
        downstream_local_address: eb.downstream_local_address,
        upstream_cluster: eb.upstream_cluster,
        upstream_host: eb.upstream_host,
        trace_id: eb.trace_id,
        rbac_result: eb.rbac_result,
        rbac_policy: eb.rbac_policy,
      },
      {
        method: 'POST',
        path: '/items?color=blue',
        response_code: 200,
        bytes_received: 6,
        bytes_sent: BODY.length,
        downstream_peer_principal: ID_A,
        upstream_peer_principal: null,
        requested_server_name: SNI,
        downstream_local_address: `127.0.0.1:${bPort}`,
        upstream_cluster: 'backend',
        upstream_host: `127.0.0.1:${backend.port}`,
        trace_id: TRACE,
        rbac_result: 'allowed',
        rbac_policy: null,
      },
    )
    const text = readFileSync(textB, 'utf8').split('\n')
    assert.ok(text.includes(`POST /items?color=blue 200 - ${ID_A} - rid-`), text.join('\n'))
    const formatted = entries(jsonB).find((e) => e.ua === 'access-log-test/1')
    assert.deepEqual(formatted, { code: 200, who: ID_A, at: 'b', ua: 'access-log-test/1' })
  })

  test("an RBAC denial: B's entry names the policy, A's shows the 403 it was answered", async () => {
    const r = await request(a.ports.outbound!, 'GET', '/admin/users', { 'x-request-id': 'rid-denied' })
    assert.equal(r.status, 403)
    const eb = await entryOf(logB, (e) => e.request_id === 'rid-denied', "B's entry")
    const policy = 'ns[default]-policy[deny-admin]-rule[0]'
    assert.equal(eb.response_code, 403)
    assert.equal(eb.response_flags, 'RBAC')
    assert.equal(eb.response_code_details, `rbac_access_denied_matched_policy[${policy}]`)
    assert.equal(eb.rbac_result, 'denied')
    assert.equal(eb.rbac_policy, policy)
    assert.equal(eb.upstream_host, null)
    assert.equal(eb.downstream_peer_principal, ID_A)
    const ea = await entryOf(logA, (e) => e.request_id === 'rid-denied', "A's entry")
    assert.equal(ea.response_code, 403)
    assert.equal(ea.response_code_details, 'via_upstream')
    await eventually(
      async () => readFileSync(textB, 'utf8').includes(`GET /admin/users 403 RBAC ${ID_A} ${policy} rid-`),
      5000,
      'the text line',
    )
  })

  test("a TCP connection's entries: bytes both ways, the identities, the upstream", async () => {
    const got = await new Promise<string>((resolve, reject) => {
      const s = net.connect(a.ports['outbound-tcp']!, '127.0.0.1', () => s.end('ping-1234'))
      let data = ''
      s.setEncoding('utf8')
      s.on('data', (d: string) => (data += d))
      s.on('close', () => resolve(data))
      s.on('error', reject)
    })
    assert.equal(got, 'ping-1234')
    const ea = await entryOf(tcpA, (e) => e.protocol === 'TCP', "A's TCP entry")
    const eb = await entryOf(tcpB, (e) => e.protocol === 'TCP', "B's TCP entry")
    assert.deepEqual(
      [ea.bytes_received, ea.bytes_sent, ea.upstream_cluster, ea.upstream_host, ea.upstream_peer_principal],
      [9, 9, 'to-b-tcp', `127.0.0.1:${b.ports['inbound-tcp']}`, ID_B],
    )
    assert.equal(ea.response_flags, '-')
    assert.equal(ea.downstream_local_address, `127.0.0.1:${a.ports['outbound-tcp']}`)
    assert.match(String(ea.upstream_local_address), /^127\.0\.0\.1:\d+$/)
    assert.deepEqual(
      [eb.bytes_received, eb.bytes_sent, eb.downstream_peer_principal, eb.requested_server_name, eb.upstream_cluster],
      [9, 9, ID_A, SNI, 'inbound|9000||'],
    )
  })

  test('admin /tap: the requests that pass the filters, as JSON lines, until max', async () => {
    const lines: Entry[] = []
    let ended = false
    const started = new Promise<void>((resolve, reject) => {
      http
        .get(`http://${a.admin}/tap?path=/tap-me&method=GET&max=2`, (res) => {
          assert.equal(res.statusCode, 200)
          assert.equal(res.headers['content-type'], 'application/x-ndjson')
          resolve()
          let partial = ''
          res.setEncoding('utf8')
          res.on('data', (c: string) => {
            const parts = (partial + c).split('\n')
            partial = parts.pop()!
            for (const l of parts) lines.push(JSON.parse(l) as Entry)
          })
          res.on('end', () => (ended = true))
        })
        .on('error', reject)
    })
    await started
    await request(a.ports.outbound!, 'GET', '/tap-me/1', { 'x-request-id': 'tap-1' })
    await request(a.ports.outbound!, 'GET', '/other', { 'x-request-id': 'tap-x' })
    await request(a.ports.outbound!, 'POST', '/tap-me/post', { 'x-request-id': 'tap-y' })
    await request(a.ports.outbound!, 'GET', '/tap-me/2?q=1', { 'x-request-id': 'tap-2' })
    await eventually(async () => ended, 5000, 'the tap ends after max lines')
    assert.deepEqual(
      lines.map((l) => [l.type, l.direction, l.method, l.path, l.response_code, l.request_id, l.destination]),
      [
        ['request', 'outbound', 'GET', '/tap-me/1', 200, 'tap-1', ID_B],
        ['request', 'outbound', 'GET', '/tap-me/2?q=1', 200, 'tap-2', ID_B],
      ],
    )
    // a bad filter is refused with the parameter
    const bad = await fetch(`http://${a.admin}/tap?max=lots`)
    assert.equal(bad.status, 400)
    assert.match(await bad.text(), /max must be a whole number/)
  })
})
