/**
 * Envoy's RBAC HTTP filter through a real `loom proxy` process (static bootstrap) and a real backend: a DENY
 * filter then an ALLOW filter (Istio's order), shadow rules that only count, a LOG filter, the 403 reply with its
 * flag and reason in the access log, the stats, and a bootstrap with a bad RBAC regex refused at its path. Then a
 * mutual-TLS listener (certificates from the CA): principal rules match the client certificate's SPIFFE ID, over
 * HTTP/1.1 and HTTP/2.
 */
import assert from 'node:assert/strict'
import { mkdtempSync, rmSync } from 'node:fs'
import * as http from 'node:http'
import * as https from 'node:https'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { CertificateAuthority } from '../src/control/ca/ca.js'
import { makeCsr } from '../src/control/ca/pki-fixtures.js'
import { filterBootstrap, type RunningProxy, runLoom, stat, startProxy, writeTemp } from './helpers/proxy.js'
import { type Backend, startBackend } from './helpers/servers.js'

const RBAC = 'type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC'

function request(port: number, method: string, path: string, headers: Record<string, string> = {}) {
  return new Promise<{ status: number; body: string; headers: http.IncomingHttpHeaders }>((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, method, path, headers }, (res) => {
      let body = ''
      res.setEncoding('latin1')
      res.on('data', (c: string) => (body += c))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body, headers: res.headers }))
    })
    req.on('error', reject)
    req.end()
  })
}

const anyone = [{ any: true }]
const filters = [
  {
    name: 'audit',
    typed_config: {
      '@type': RBAC,
      rules: {
        action: 'LOG',
        policies: {
          'log-posts': { permissions: [{ header: { name: ':method', exact_match: 'POST' } }], principals: anyone },
        },
      },
    },
  },
  {
    name: 'deny',
    typed_config: {
      '@type': RBAC,
      rules: {
        action: 'DENY',
        policies: {
          'no-admin': {
            permissions: [{ url_path: { path: { prefix: '/admin' } } }],
            principals: [{ not_id: { remote_ip: { address_prefix: '10.0.0.0', prefix_len: 8 } } }],
          },
        },
      },
      // would deny everything from loopback: counted only
      shadow_rules: {
        action: 'DENY',
        policies: {
          'shadow-loopback': {
            permissions: [{ any: true }],
            principals: [{ direct_remote_ip: { address_prefix: '127.0.0.0', prefix_len: 8 } }],
          },
        },
      },
      shadow_rules_stat_prefix: 'istio_dry_run_deny_',
    },
  },
  {
    name: 'allow',
    typed_config: {
      '@type': RBAC,
      rules: {
        policies: {
          'get-only': {
            permissions: [{ and_rules: { rules: [{ header: { name: ':method', string_match: { exact: 'GET' } } }] } }],
            principals: anyone,
          },
          'post-with-token': {
            permissions: [{ header: { name: ':method', exact_match: 'POST' } }],
            principals: [{ header: { name: 'x-token', exact_match: 'ok' } }],
          },
        },
      },
      rules_stat_prefix: 'allow_',
    },
  },
]

describe('RBAC filter in loom proxy', () => {
  let backend: Backend
  let proxy: RunningProxy
  let port = 0

  before(async () => {
    backend = await startBackend()
    const b = filterBootstrap(
      backend.port,
      [{ name: 'all', domains: ['*'], routes: [{ match: { prefix: '/' }, route: { cluster: 'be' } }] }],
      filters,
    ) as {
      static_resources: { listeners: { filter_chains: { filters: { typed_config: Record<string, unknown> }[] }[] }[] }
    }
    b.static_resources.listeners[0]!.filter_chains[0]!.filters[0]!.typed_config.access_log = [
      {
        name: 'envoy.access_loggers.stdout',
        typed_config: { '@type': 'type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog' },
      },
    ]
    proxy = await startProxy(b)
    port = proxy.ports.http!
  })
  after(async () => {
    await proxy?.stop()
    await backend?.close()
  })

  test('GET passes both filters; the shadow denial is only counted', async () => {
    const r = await request(port, 'GET', '/items')
    assert.equal(r.status, 200)
    assert.equal(await stat(proxy.admin, 'http.ingress.rbac.istio_dry_run_deny_shadow_denied'), 1)
    assert.equal(await stat(proxy.admin, 'http.ingress.rbac.allow_allowed'), 1)
  })

  test('DENY matched: 403 RBAC: access denied, flag RBAC, the policy in the reason and the access log', async () => {
    const seen = backend.requests.length
    const r = await request(port, 'GET', '/admin/users')
    assert.equal(r.status, 403)
    assert.equal(r.body, 'RBAC: access denied')
    assert.equal(r.headers['x-loom-reason'], 'rbac_access_denied_matched_policy[no-admin]')
    assert.equal(backend.requests.length, seen)
    assert.equal(await stat(proxy.admin, 'http.ingress.rbac.denied'), 1)
    const line = proxy
      .stdout()
      .split('\n')
      .filter((l) => l.includes('/admin/users'))
      .at(-1)
    assert.ok(line !== undefined, proxy.stdout())
    const entry = JSON.parse(line) as Record<string, unknown>
    assert.equal(entry.response_code, 403)
    assert.equal(entry.response_flags, 'RBAC')
  })

  test('ALLOW matched nothing: 403 with [none]; a POST with the token passes and is logged by the LOG filter', async () => {
    const r = await request(port, 'DELETE', '/items')
    assert.equal(r.status, 403)
    assert.equal(r.headers['x-loom-reason'], 'rbac_access_denied_matched_policy[none]')
    assert.equal(await stat(proxy.admin, 'http.ingress.rbac.allow_denied'), 1)
    assert.equal((await request(port, 'POST', '/items')).status, 403)
    assert.equal((await request(port, 'POST', '/items', { 'x-token': 'ok' })).status, 200)
    assert.equal(await stat(proxy.admin, 'http.ingress.rbac.logged'), 2)
    assert.equal(await stat(proxy.admin, 'http.ingress.rbac.not_logged'), 3)
  })

  test('loom validate names a bad regex in an RBAC policy', async () => {
    const bad = structuredClone(filters.slice(2))
    ;(bad[0]!.typed_config.rules.policies as unknown as Record<string, { permissions: unknown[] }>)[
      'get-only'
    ]!.permissions = [{ url_path: { path: { safe_regex: { regex: '(unclosed' } } } }]
    const file = writeTemp(
      'rbac-bad.json',
      JSON.stringify(filterBootstrap(1, [{ name: 'all', domains: ['*'], routes: [] }], bad)),
    )
    const r = await runLoom(['validate', '-c', file])
    assert.notEqual(r.code, 0)
    assert.match(
      r.stderr,
      /http_filters\[0\]\.typed_config\.rules\.policies\["get-only"\]\.permissions\[0\]\.url_path\.path\.safe_regex\.regex/,
    )
  })
})

describe('RBAC principals on a mutual-TLS listener', () => {
  let dir: string
  let backend: Backend
  let proxy: RunningProxy
  let port = 0
  let ca: CertificateAuthority
  let trust: string[]

  async function identity(namespace: string, serviceAccount: string) {
    const csr = await makeCsr()
    const issued = await ca.sign(csr.pem, { namespace, serviceAccount })
    return { cert: issued.certificatePem, key: csr.keyPem }
  }

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'loom-rbac-mtls-'))
    ca = await CertificateAuthority.open({ dir: join(dir, 'ca') })
    const server = await identity('default', 'productpage')
    const first = await ca.sign((await makeCsr()).pem, { namespace: 'default', serviceAccount: 'x' })
    trust = first.trustBundlePem
    backend = await startBackend()
    const rbac = {
      name: 'envoy.filters.http.rbac',
      typed_config: {
        '@type': RBAC,
        rules: {
          policies: {
            'ns[default]-policy[sleep]-rule[0]': {
              permissions: [{ any: true }],
              principals: [{ authenticated: { principal_name: { exact: 'spiffe://cluster.local/ns/foo/sa/sleep' } } }],
            },
          },
        },
      },
    }
    const b = filterBootstrap(
      backend.port,
      [{ name: 'all', domains: ['*'], routes: [{ match: { prefix: '/' }, route: { cluster: 'be' } }] }],
      [rbac],
    ) as { static_resources: { listeners: { filter_chains: Record<string, unknown>[] }[] } }
    b.static_resources.listeners[0]!.filter_chains[0]!.transport_socket = {
      name: 'envoy.transport_sockets.tls',
      typed_config: {
        '@type': 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext',
        common_tls_context: {
          tls_certificates: [
            { certificate_chain: { inline_string: server.cert }, private_key: { inline_string: server.key } },
          ],
          validation_context: { trusted_ca: { inline_string: trust.join('') } },
          alpn_protocols: ['h2', 'http/1.1'],
        },
        require_client_certificate: true,
      },
    }
    proxy = await startProxy(b)
    port = proxy.ports.http!
  })
  after(async () => {
    await proxy?.stop()
    await backend?.close()
    rmSync(dir, { recursive: true, force: true })
  })

  function get(client: { cert: string; key: string }): Promise<{ status: number; body: string }> {
    return new Promise((resolve, reject) => {
      const req = https.request(
        {
          host: '127.0.0.1',
          port,
          path: '/reviews',
          ...client,
          ca: trust,
          checkServerIdentity: () => undefined,
          agent: false,
        },
        (res) => {
          let body = ''
          res.on('data', (c: Buffer) => (body += c))
          res.on('end', () => resolve({ status: res.statusCode ?? 0, body }))
        },
      )
      req.on('error', reject)
      req.end()
    })
  }

  test('the allowed SPIFFE ID passes; another service account is refused', async () => {
    assert.equal((await get(await identity('foo', 'sleep'))).status, 200)
    const other = await get(await identity('foo', 'other'))
    assert.equal(other.status, 403)
    assert.equal(other.body, 'RBAC: access denied')
  })

  test('over HTTP/2 too', async () => {
    const http2 = await import('node:http2')
    const id = await identity('foo', 'sleep')
    const session = http2.connect(`https://127.0.0.1:${port}`, {
      ...id,
      ca: trust,
      checkServerIdentity: () => undefined,
    })
    try {
      const status = (path: string) =>
        new Promise<number>((resolve, reject) => {
          const s = session.request({ ':path': path })
          s.on('response', (h) => resolve(Number(h[':status'])))
          s.on('error', reject)
          s.resume()
          s.end()
        })
      assert.deepEqual([await status('/a'), await status('/b')], [200, 200])
    } finally {
      session.close()
    }
    const denied = await stat(proxy.admin, 'http.ingress.rbac.denied')
    const allowed = await stat(proxy.admin, 'http.ingress.rbac.allowed')
    assert.deepEqual([denied, allowed], [1, 3])
  })
})
