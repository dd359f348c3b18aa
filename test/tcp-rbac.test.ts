/**
 * The network RBAC filter (envoy.filters.network.rbac) in front of a TCP proxy, in real `loom proxy` processes:
 *
 * - From a bootstrap: an ALLOW by source address, a DENY by destination port, a shadow rule counted only, and an
 *   ALLOW on the mTLS peer's principal (certificates from Loom's CA): admitted connections echo, refused ones are
 *   closed before the proxy connects upstream (the backend never sees them), counted and logged with the policy.
 * - Through `loom control`: a TCP workload's sidecar (identity from the control plane) and two client proxies with
 *   their own identities; an AuthorizationPolicy ALLOW on one client's principal admits that client and refuses the
 *   other, whose connection never reaches the backend; a DENY whose HTTP-only fields are dropped on TCP (Istio's
 *   semantics) refuses the admitted one too.
 */
import assert from 'node:assert/strict'
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import * as net from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import * as tls from 'node:tls'
import { after, before, describe, test } from 'node:test'
import { CertificateAuthority } from '../src/control/ca/ca.js'
import { makeCsr } from '../src/control/ca/pki-fixtures.js'
import { type Control, eventually, type Proc, startControl, startSidecar } from './helpers/control.js'
import { adminAddress, type RunningProxy, startProxy, stat, TCP, writeTemp } from './helpers/proxy.js'
import { freePort } from './helpers/servers.js'

const T = 'type.googleapis.com/'
const RBAC = `${T}envoy.extensions.filters.network.rbac.v3.RBAC`
const DOWNSTREAM_TLS = `${T}envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext`
const UPSTREAM_TLS = `${T}envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext`
const SECRET = `${T}envoy.extensions.transport_sockets.tls.v3.Secret`
const ADS = { ads: {}, resource_api_version: 'V3' }

/** An echo server that records every connection it accepts and the bytes it reads. */
interface Echo {
  port: number
  accepted: number
  received: Buffer[]
  close(): Promise<void>
}

async function startEcho(): Promise<Echo> {
  const sockets = new Set<net.Socket>()
  const e = { port: 0, accepted: 0, received: [] as Buffer[] } as Echo
  const server = net.createServer((s) => {
    e.accepted++
    sockets.add(s)
    s.on('close', () => sockets.delete(s))
    s.on('error', () => {})
    s.on('data', (d: Buffer) => e.received.push(d))
    s.pipe(s)
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  e.port = (server.address() as net.AddressInfo).port
  e.close = () =>
    new Promise((r) => {
      for (const s of sockets) s.destroy()
      server.close(() => r())
    })
  return e
}

/**
 * Connects (plain, or TLS with `svid`), sends `text` once connected and resolves with what came back before the
 * connection closed: the echo for an admitted connection, '' for a refused one. `from`: the local address.
 */
function exchange(port: number, text: string, opts: { from?: string; svid?: Svid } = {}): Promise<string> {
  return new Promise((resolve, reject) => {
    let got = ''
    const base = { host: '127.0.0.1', port, ...(opts.from !== undefined ? { localAddress: opts.from } : {}) }
    const s: net.Socket =
      opts.svid === undefined
        ? net.connect(base)
        : tls.connect({
            ...base,
            cert: opts.svid.cert,
            key: opts.svid.key,
            ca: opts.svid.bundle,
            checkServerIdentity: () => undefined,
          })
    s.setEncoding('utf8')
    s.on(opts.svid === undefined ? 'connect' : 'secureConnect', () => s.write(text))
    s.on('data', (d: string) => {
      got += d
      if (got.length >= text.length) s.end()
    })
    s.on('error', () => {})
    s.on('close', () => resolve(got))
    s.setTimeout(10000, () => {
      s.destroy()
      reject(new Error('no answer and no close in 10 s'))
    })
  })
}

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

const cidr = (ip: string) => ({ address_prefix: ip, prefix_len: 32 })
const rbacFilter = (cfg: Record<string, unknown>) => ({
  name: 'envoy.filters.network.rbac',
  typed_config: { '@type': RBAC, ...cfg },
})
const tcpProxy = (prefix: string, accessLog?: string) => ({
  name: 'envoy.filters.network.tcp_proxy',
  typed_config: {
    '@type': TCP,
    stat_prefix: prefix,
    cluster: 'echo',
    ...(accessLog === undefined
      ? {}
      : {
          access_log: [
            {
              name: 'envoy.access_loggers.file',
              typed_config: { '@type': `${T}envoy.extensions.access_loggers.file.v3.FileAccessLog`, path: accessLog },
            },
          ],
        }),
  },
})
const tcpListener = (name: string, port: number, filters: unknown[], extra: Record<string, unknown> = {}) => ({
  name,
  address: { socket_address: { address: '127.0.0.1', port_value: port } },
  filter_chains: [{ filters, ...extra }],
})
const staticCluster = (name: string, port: number, extra: Record<string, unknown> = {}) => ({
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
})

describe('network RBAC from a bootstrap', () => {
  let echo: Echo
  let proxy: RunningProxy
  let ca: CertificateAuthority
  let client: Svid
  let other: Svid
  let denyPort: number
  let accessLog: string

  before(async () => {
    echo = await startEcho()
    ca = await CertificateAuthority.open({
      dir: join(mkdtempSync(join(tmpdir(), 'loom-ca-')), 'ca'),
      trustDomain: 'cluster.local',
    })
    const server = await issue(ca, 'server')
    client = await issue(ca, 'client')
    other = await issue(ca, 'other')
    denyPort = await freePort()
    accessLog = join(mkdtempSync(join(tmpdir(), 'loom-tcp-rbac-')), 'access.log')
    const byPort = rbacFilter({
      stat_prefix: 'by_port.',
      rules: {
        action: 'DENY',
        policies: { 'deny-port': { permissions: [{ destination_port: denyPort }], principals: [{ any: true }] } },
      },
      // counted, never enforced: would refuse everything
      shadow_rules: { policies: {} },
      shadow_rules_stat_prefix: 'dry_',
    })
    proxy = await startProxy({
      admin: { address: adminAddress() },
      static_resources: {
        secrets: [
          {
            '@type': SECRET,
            name: 'default',
            tls_certificate: {
              certificate_chain: { inline_string: server.cert },
              private_key: { inline_string: server.key },
            },
          },
          { '@type': SECRET, name: 'ROOTCA', validation_context: { trusted_ca: { inline_string: server.bundle } } },
        ],
        listeners: [
          tcpListener('by-ip', 0, [
            rbacFilter({
              stat_prefix: 'by_ip.',
              rules: {
                policies: {
                  loopback: { permissions: [{ any: true }], principals: [{ source_ip: cidr('127.0.0.1') }] },
                },
              },
            }),
            tcpProxy('by_ip', accessLog),
          ]),
          tcpListener('deny-port', denyPort, [byPort, tcpProxy('deny_port')]),
          tcpListener('other-port', 0, [byPort, tcpProxy('other_port')]),
          tcpListener(
            'mtls',
            0,
            [
              rbacFilter({
                stat_prefix: 'mtls.',
                enforcement_type: 'CONTINUOUS',
                rules: {
                  policies: {
                    client: {
                      permissions: [{ any: true }],
                      principals: [
                        { authenticated: { principal_name: { exact: 'spiffe://cluster.local/ns/default/sa/client' } } },
                      ],
                    },
                  },
                },
              }),
              tcpProxy('mtls'),
            ],
            {
              transport_socket: {
                name: 'envoy.transport_sockets.tls',
                typed_config: {
                  '@type': DOWNSTREAM_TLS,
                  require_client_certificate: true,
                  common_tls_context: {
                    tls_certificate_sds_secret_configs: [{ name: 'default' }],
                    validation_context_sds_secret_config: { name: 'ROOTCA' },
                  },
                },
              },
            },
          ),
        ],
        clusters: [staticCluster('echo', echo.port)],
      },
    })
  })
  after(async () => {
    await proxy?.stop()
    await echo?.close()
  })

  test('an ALLOW by source address admits 127.0.0.1 and closes 127.0.0.2 before the upstream connect', async () => {
    assert.equal(await exchange(proxy.ports['by-ip']!, 'hello'), 'hello')
    const seen = echo.accepted
    assert.equal(await exchange(proxy.ports['by-ip']!, 'let me in', { from: '127.0.0.2' }), '')
    assert.equal(echo.accepted, seen, 'the refused connection never reached the backend')
    assert.ok(!Buffer.concat(echo.received).toString().includes('let me in'))
    assert.equal(await stat(proxy.admin, 'by_ip.rbac.allowed'), 1)
    assert.equal(await stat(proxy.admin, 'by_ip.rbac.denied'), 1)
    await eventually(async () => proxy.stderr().includes('"msg":"connection denied"'), 5000, 'the denial logged')
    const line = proxy
      .stderr()
      .split('\n')
      .find((l) => l.includes('"msg":"connection denied"'))!
    const logged = JSON.parse(line) as Record<string, string>
    assert.equal(logged.listener, 'by-ip')
    assert.equal(logged.reason, 'rbac_access_denied_matched_policy[none]')
    assert.match(logged.downstream_remote_address!, /^127\.0\.0\.2:/)
    await eventually(
      async () => readFileSync(accessLog, 'utf8').includes('rbac_access_denied_matched_policy[none]'),
      5000,
      'the access log entry',
    )
    const entries = readFileSync(accessLog, 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Record<string, unknown>)
    const refused = entries.find((e) => typeof e.connection_termination_details === 'string')!
    assert.equal(refused.upstream_host, null)
    assert.equal(refused.downstream_remote_address, '127.0.0.2')
  })

  test('a DENY by destination port refuses its port and admits another; shadow rules only count', async () => {
    const seen = echo.accepted
    assert.equal(await exchange(denyPort, 'x'), '')
    assert.equal(echo.accepted, seen)
    assert.equal(await exchange(proxy.ports['other-port']!, 'through'), 'through')
    assert.equal(await stat(proxy.admin, 'by_port.rbac.denied'), 1)
    assert.equal(await stat(proxy.admin, 'by_port.rbac.allowed'), 1)
    // the shadow ALLOW with no policies would have refused both
    assert.equal(await stat(proxy.admin, 'by_port.rbac.dry_shadow_denied'), 2)
    assert.equal(await stat(proxy.admin, 'by_port.rbac.dry_shadow_allowed'), 0)
    const prom = await (await fetch(`http://${proxy.admin}/stats/prometheus`)).text()
    assert.match(prom, /^envoy_by_port_rbac_denied\{\} 1$/m)
  })

  test('an ALLOW on the mTLS principal admits the client certificate it names and closes another', async () => {
    const port = proxy.ports.mtls!
    assert.equal(await exchange(port, 'from client', { svid: client }), 'from client')
    const seen = echo.accepted
    assert.equal(await exchange(port, 'from other', { svid: other }), '')
    assert.equal(echo.accepted, seen, 'the refused peer never reached the backend')
    assert.equal(await stat(proxy.admin, 'mtls.rbac.allowed'), 1)
    assert.equal(await stat(proxy.admin, 'mtls.rbac.denied'), 1)
    assert.match(
      proxy.stderr(),
      /"msg":"connection denied".*"listener":"mtls".*"reason":"rbac_access_denied_matched_policy\[none\]"/,
    )
  })

  test('a rule that reads HTTP requests is refused in the network filter, with its field path', async () => {
    const bad = writeTemp(
      'bad.json',
      JSON.stringify({
        static_resources: {
          listeners: [
            tcpListener('bad', 0, [
              rbacFilter({
                stat_prefix: 'bad.',
                rules: {
                  policies: {
                    get: { permissions: [{ url_path: { path: { exact: '/' } } }], principals: [{ any: true }] },
                  },
                },
              }),
              tcpProxy('bad'),
            ]),
          ],
          clusters: [staticCluster('echo', echo.port)],
        },
      }),
    )
    const { runLoom } = await import('./helpers/proxy.js')
    const r = await runLoom(['validate', '-c', bad])
    assert.equal(r.code, 1)
    assert.match(
      r.stderr,
      /static_resources\.listeners\[0\]\.filter_chains\[0\]\.filters\[0\]\.typed_config\.rules\.policies\["get"\]\.permissions\[0\]\.url_path: url_path matches an HTTP request/,
    )
  })
})

describe('AuthorizationPolicy on a TCP port through loom control', () => {
  const procs: (Proc | RunningProxy)[] = []
  let echo: Echo
  let cp: Control
  let inbound: number
  const clients: Record<string, RunningProxy> = {}

  const apply = async (yaml: string) => {
    const r = await cp.loom(['apply', '-f', writeTemp('policy.yaml', yaml)])
    assert.equal(r.code, 0, r.stderr)
  }

  /** A client proxy with the identity of `sa`: its listener `out` sends every connection over mTLS to the sidecar. */
  async function clientProxy(sa: string): Promise<RunningProxy> {
    const tok = await cp.loom(['token', 'create', '--namespace', 'default', '--service-account', sa])
    assert.equal(tok.code, 0, tok.stderr)
    const file = join(mkdtempSync(join(tmpdir(), 'loom-token-')), 'token')
    writeFileSync(file, tok.stdout.trim(), { mode: 0o600 })
    const p = await startProxy(
      {
        admin: { address: adminAddress() },
        static_resources: {
          listeners: [tcpListener('out', 0, [tcpProxy(`out_${sa}`)])],
          clusters: [
            staticCluster('echo', inbound, {
              transport_socket: {
                name: 'envoy.transport_sockets.tls',
                typed_config: {
                  '@type': UPSTREAM_TLS,
                  common_tls_context: {
                    tls_certificate_sds_secret_configs: [{ name: 'default', sds_config: ADS }],
                    combined_validation_context: {
                      default_validation_context: {
                        match_typed_subject_alt_names: [
                          { san_type: 'URI', matcher: { exact: 'spiffe://cluster.local/ns/default/sa/tcp-echo' } },
                        ],
                      },
                      validation_context_sds_secret_config: { name: 'ROOTCA', sds_config: ADS },
                    },
                  },
                },
              },
            }),
          ],
        },
      },
      [
        '--xds',
        cp.xds,
        '--identity-token-file',
        file,
        '--service-account',
        sa,
        '--labels',
        `app=${sa}`,
        '--metadata',
        `OUTBOUND_PORT=${await freePort()}`,
      ],
    )
    procs.push(p)
    return p
  }

  before(async () => {
    echo = await startEcho()
    cp = await startControl()
    procs.push(cp)
    inbound = await freePort()
    const res = await fetch(`http://${cp.api}/api/v1/workloads`, {
      method: 'POST',
      body: JSON.stringify({
        name: 'tcp-echo-v1',
        namespace: 'default',
        address: '127.0.0.1',
        ports: [{ name: 'tcp', number: inbound, servicePort: 9000 }],
        labels: { app: 'tcp-echo' },
        ttlSeconds: 600,
      }),
    })
    assert.equal(res.status, 200, await res.text())
    const tok = await cp.loom(['token', 'create', '--namespace', 'default', '--service-account', 'tcp-echo'])
    assert.equal(tok.code, 0, tok.stderr)
    const file = join(mkdtempSync(join(tmpdir(), 'loom-token-')), 'token')
    writeFileSync(file, tok.stdout.trim(), { mode: 0o600 })
    const sidecar = await startSidecar(cp.xds, { app: 'tcp-echo' }, await freePort(), [
      '--metadata',
      `APP_PORTS=9000:${echo.port}`,
      '--identity-token-file',
      file,
      '--service-account',
      'tcp-echo',
    ])
    procs.push(sidecar)
    clients.sleep = await clientProxy('sleep')
    clients.intruder = await clientProxy('intruder')
    // no policy yet: both clients get through (their identities and the sidecar's listener are in place)
    for (const c of Object.values(clients)) {
      await eventually(async () => (await exchange(c.ports.out!, 'ping')) === 'ping', 20000, 'a first echo')
    }
  })
  after(async () => {
    for (const p of procs.reverse()) await p.stop()
    await echo?.close()
  })

  test('an ALLOW on a principal admits its client sidecar and closes the other before any byte reaches the backend', async () => {
    await apply(`apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: tcp-echo-sleep, namespace: default}
spec:
  selector: {matchLabels: {app: tcp-echo}}
  rules: [{from: [{source: {principals: [cluster.local/ns/default/sa/sleep]}}], to: [{operation: {ports: ['9000']}}]}]
`)
    await eventually(async () => (await exchange(clients.intruder!.ports.out!, 'ping')) === '', 15000, 'the policy')
    const seen = echo.accepted
    const bytes = Buffer.concat(echo.received).length
    assert.equal(await exchange(clients.intruder!.ports.out!, 'secret payload'), '')
    assert.equal(echo.accepted, seen, 'no connection from the refused client reached the backend')
    assert.equal(Buffer.concat(echo.received).length, bytes, 'no byte from the refused client reached the backend')
    assert.equal(await exchange(clients.sleep!.ports.out!, 'hello tcp'), 'hello tcp')
    assert.equal(echo.accepted, seen + 1)
  })

  test('a DENY whose only operation field is HTTP-only (methods) applies to every connection on TCP', async () => {
    await apply(`apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: tcp-echo-no-post, namespace: default}
spec:
  selector: {matchLabels: {app: tcp-echo}}
  action: DENY
  rules: [{from: [{source: {principals: [cluster.local/ns/default/sa/sleep]}}], to: [{operation: {methods: [POST]}}]}]
`)
    await eventually(async () => (await exchange(clients.sleep!.ports.out!, 'ping')) === '', 15000, 'the DENY')
    const r = await cp.loom(['delete', 'AuthorizationPolicy', 'tcp-echo-no-post'])
    assert.equal(r.code, 0, r.stderr)
    await eventually(async () => (await exchange(clients.sleep!.ports.out!, 'ping')) === 'ping', 15000, 'open again')
  })
})
