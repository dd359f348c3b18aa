/**
 * The RBAC engine: each permission and principal, the combinators, the policy order and the actions, and the
 * peer principal read from a real mutual-TLS connection (certificates from the CA, a node:tls server and client).
 */
import assert from 'node:assert/strict'
import { mkdtempSync, rmSync } from 'node:fs'
import type { Socket } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import * as tls from 'node:tls'
import * as v from 'valibot'
import { type RbacPermission, type RbacPrincipal, Rbac, TypeUrls } from '../../../../config/envoy.js'
import type { ConfigIssue } from '../../../../core/errors.js'
import { CertificateAuthority } from '../../../../control/ca/ca.js'
import { makeCsr } from '../../../../control/ca/pki-fixtures.js'
import { Headers } from '../../headers.js'
import type { RequestHead } from '../../types.js'
import { compilePermission, compilePrincipal, parseSubjectAltName, RbacEngine, type RbacInput } from './matcher.js'
import { connectionPeer } from '../../../identity/connection-peer.js'

function head(path: string, headers: string[] = [], method = 'GET', authority = 'example.com'): RequestHead {
  return { method, authority, path, scheme: 'http', headers: new Headers(headers), upgrade: null, protocol: 'HTTP/1.1' }
}

interface In {
  path?: string
  headers?: string[]
  method?: string
  authority?: string
  socket?: Partial<Socket> | null
  sourceIp?: string
  metadata?: Record<string, Record<string, unknown>>
}

function input(o: In = {}): RbacInput {
  const socket = (
    o.socket === undefined ? { remoteAddress: '10.0.0.1', localAddress: '10.0.0.9', localPort: 9080 } : o.socket
  ) as Socket | null
  return {
    head: head(o.path ?? '/', o.headers, o.method, o.authority),
    downstreamSocket: socket,
    sourceIp: o.sourceIp ?? socket?.remoteAddress ?? '',
    metadata: (ns) => o.metadata?.[ns],
  }
}

function perm(p: RbacPermission): (r: RbacInput) => boolean {
  const issues: ConfigIssue[] = []
  const t = compilePermission(p, 'p', issues)
  assert.deepEqual(issues, [])
  return t
}

function prin(p: RbacPrincipal): (r: RbacInput) => boolean {
  const issues: ConfigIssue[] = []
  const t = compilePrincipal(p, 'p', issues)
  assert.deepEqual(issues, [])
  return t
}

describe('permissions', () => {
  test('url_path matches the path without its query; header sees the whole :path', () => {
    const t = perm({ url_path: { path: { exact: '/productpage' } } })
    assert.equal(t(input({ path: '/productpage?u=1' })), true)
    assert.equal(t(input({ path: '/productpage/x' })), false)
    const h = perm({ header: { name: ':path', string_match: { exact: '/productpage?u=1' } } })
    assert.equal(h(input({ path: '/productpage?u=1' })), true)
    assert.equal(h(input({ path: '/productpage' })), false)
  })

  test('header matchers: :method, :authority, several values joined with a comma', () => {
    assert.equal(perm({ header: { name: ':method', exact_match: 'GET' } })(input({ method: 'POST' })), false)
    const host = perm({ header: { name: ':authority', safe_regex_match: { regex: '(?i)bookinfo\\.com(:[0-9]+)?' } } })
    assert.equal(host(input({ authority: 'BOOKINFO.com:80' })), true)
    assert.equal(host(input({ authority: 'evil.com' })), false)
    const joined = perm({ header: { name: 'x-a', exact_match: '1,2' } })
    assert.equal(joined(input({ headers: ['x-a', '1', 'x-a', '2'] })), true)
  })

  test('and_rules, or_rules, not_rule, any', () => {
    const get = { header: { name: ':method', exact_match: 'GET' } }
    const admin = { url_path: { path: { prefix: '/admin' } } }
    const and = perm({ and_rules: { rules: [get, admin] } })
    const or = perm({ or_rules: { rules: [get, admin] } })
    const not = perm({ not_rule: { or_rules: { rules: [get, admin] } } })
    const r = (method: string, path: string) => input({ method, path })
    assert.deepEqual(
      [and(r('GET', '/admin')), and(r('GET', '/')), or(r('POST', '/admin')), or(r('POST', '/'))],
      [true, false, true, false],
    )
    assert.deepEqual([not(r('POST', '/')), not(r('GET', '/'))], [true, false])
    assert.equal(perm({ any: true })(r('DELETE', '/x')), true)
  })

  test('destination_ip, destination_port, requested_server_name read the connection', () => {
    const socket = {
      remoteAddress: '::ffff:10.1.0.5',
      localAddress: '::ffff:10.0.0.9',
      localPort: 9080,
      servername: 'reviews.local',
    }
    assert.equal(perm({ destination_port: 9080 })(input({ socket })), true)
    assert.equal(perm({ destination_port: 9081 })(input({ socket })), false)
    assert.equal(perm({ destination_ip: { address_prefix: '10.0.0.0', prefix_len: 24 } })(input({ socket })), true)
    assert.equal(perm({ destination_ip: { address_prefix: '10.0.1.0', prefix_len: 24 } })(input({ socket })), false)
    assert.equal(perm({ requested_server_name: { suffix: '.local' } })(input({ socket })), true)
    // plain text: the SNI is empty
    assert.equal(perm({ requested_server_name: { exact: '' } })(input()), true)
    assert.equal(perm({ destination_port: 9080 })(input({ socket: null })), false)
  })
})

describe('principals', () => {
  test('direct_remote_ip is the peer, remote_ip the trusted client address', () => {
    const socket = { remoteAddress: '::ffff:10.1.0.5', localAddress: '10.0.0.9', localPort: 9080 }
    const direct = prin({ direct_remote_ip: { address_prefix: '10.1.0.0', prefix_len: 16 } })
    const remote = prin({ remote_ip: { address_prefix: '192.0.2.7', prefix_len: 32 } })
    const source = prin({ source_ip: { address_prefix: '10.1.0.5' } })
    assert.equal(direct(input({ socket, sourceIp: '192.0.2.7' })), true)
    assert.equal(remote(input({ socket, sourceIp: '192.0.2.7' })), true)
    assert.equal(remote(input({ socket })), false)
    // prefix_len unset is 0: every IPv4 address
    assert.equal(source(input({ socket: { remoteAddress: '8.8.8.8' } })), true)
    const v6 = prin({ direct_remote_ip: { address_prefix: '2001:db8::', prefix_len: 32 } })
    assert.equal(v6(input({ socket: { remoteAddress: '2001:db8::1' } })), true)
    assert.equal(v6(input({ socket: { remoteAddress: '10.1.0.5' } })), false)
  })

  test('metadata: the request principal, audiences and nested claims under istio_authn', () => {
    const md = {
      istio_authn: {
        'request.auth.principal': 'https://issuer.example/alice',
        'request.auth.audiences': ['bookinfo', 'ratings'],
        'request.auth.presenter': 'web',
        'request.auth.claims': { iss: 'https://issuer.example', groups: ['dev', 'ops'], org: { team: 'blue' } },
      },
    }
    const key = (k: string) => [{ key: k }]
    const principal = prin({
      metadata: {
        filter: 'istio_authn',
        path: key('request.auth.principal'),
        value: { string_match: { prefix: 'https://issuer.example/' } },
      },
    })
    assert.equal(principal(input({ metadata: md })), true)
    assert.equal(principal(input()), false)
    const aud = prin({
      metadata: {
        filter: 'istio_authn',
        path: key('request.auth.audiences'),
        value: { list_match: { one_of: { string_match: { exact: 'ratings' } } } },
      },
    })
    assert.equal(aud(input({ metadata: md })), true)
    const claim = (path: string[], exact: string) =>
      prin({
        metadata: {
          filter: 'istio_authn',
          path: ['request.auth.claims', ...path].map((k) => ({ key: k })),
          value: { list_match: { one_of: { string_match: { exact } } } },
        },
      })(input({ metadata: md }))
    assert.deepEqual(
      [
        claim(['groups'], 'ops'),
        claim(['groups'], 'qa'),
        claim(['iss'], 'https://issuer.example'),
        claim(['org', 'team'], 'blue'),
        claim(['org', 'x'], 'blue'),
      ],
      [true, false, true, true, false],
    )
    const inverted = prin({
      metadata: {
        filter: 'istio_authn',
        path: key('request.auth.presenter'),
        value: { string_match: { exact: 'web' } },
        invert: true,
      },
    })
    assert.equal(inverted(input({ metadata: md })), false)
    assert.equal(inverted(input()), true)
    const present = prin({
      metadata: { filter: 'istio_authn', path: key('request.auth.principal'), value: { present_match: true } },
    })
    assert.deepEqual([present(input({ metadata: md })), present(input())], [true, false])
  })

  test('authenticated never matches plain text; not_id of it always does', () => {
    const authn = prin({ authenticated: { principal_name: { safe_regex: { regex: '.+' } } } })
    const anyPeer = prin({ authenticated: {} })
    const not = prin({ not_id: { authenticated: { principal_name: { exact: 'spiffe://cluster.local/ns/a/sa/b' } } } })
    const plain = input()
    assert.deepEqual([authn(plain), anyPeer(plain), not(plain)], [false, false, true])
  })

  test('parseSubjectAltName: Node’s format, quoted values included', () => {
    assert.deepEqual(parseSubjectAltName('URI:spiffe://td/ns/a/sa/b, DNS:x.example, DNS:"a, b"'), [
      ['URI', 'spiffe://td/ns/a/sa/b'],
      ['DNS', 'x.example'],
      ['DNS', 'a, b'],
    ])
    assert.deepEqual(parseSubjectAltName(''), [])
  })
})

describe('the peer principal over mutual TLS', () => {
  let dir: string
  let server: tls.Server
  let port = 0
  let ca: CertificateAuthority
  const accepted: tls.TLSSocket[] = []
  const clients: tls.TLSSocket[] = []

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'loom-rbac-'))
    ca = await CertificateAuthority.open({ dir: join(dir, 'ca') })
    const s = await makeCsr()
    const issued = await ca.sign(s.pem, { namespace: 'default', serviceAccount: 'productpage' })
    server = tls.createServer({
      cert: issued.certificatePem,
      key: s.keyPem,
      ca: issued.trustBundlePem,
      requestCert: true,
      rejectUnauthorized: false,
    })
    server.on('secureConnection', (sock) => accepted.push(sock))
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    port = (server.address() as { port: number }).port
  })
  after(async () => {
    for (const c of clients) c.destroy()
    for (const s of accepted) s.destroy()
    await new Promise((r) => server.close(r))
    rmSync(dir, { recursive: true, force: true })
  })

  async function connect(opts: tls.ConnectionOptions): Promise<tls.TLSSocket> {
    const n = accepted.length
    const c = tls.connect({ port, host: '127.0.0.1', rejectUnauthorized: false, ...opts })
    clients.push(c)
    await new Promise<void>((resolve, reject) => {
      c.once('secureConnect', () => resolve())
      c.once('error', reject)
    })
    while (accepted.length === n) await new Promise((r) => setImmediate(r))
    return accepted[accepted.length - 1]!
  }

  test('the URI SAN of the verified client certificate, read once per connection', async () => {
    const c = await makeCsr()
    const issued = await ca.sign(c.pem, { namespace: 'foo', serviceAccount: 'sleep' })
    const sock = await connect({ cert: issued.certificatePem, key: c.keyPem })
    assert.equal(sock.authorized, true)
    const r: RbacInput = { head: head('/'), downstreamSocket: sock, sourceIp: '127.0.0.1', metadata: () => undefined }
    const exact = prin({ authenticated: { principal_name: { exact: 'spiffe://cluster.local/ns/foo/sa/sleep' } } })
    const ns = prin({ authenticated: { principal_name: { safe_regex: { regex: '.*/ns/foo/.*' } } } })
    const other = prin({ authenticated: { principal_name: { exact: 'spiffe://cluster.local/ns/bar/sa/sleep' } } })
    assert.deepEqual([exact(r), ns(r), other(r)], [true, true, false])
    assert.equal(connectionPeer(sock), connectionPeer(sock))
    assert.deepEqual(connectionPeer(sock)?.uris, ['spiffe://cluster.local/ns/foo/sa/sleep'])
  })

  test('a TLS client without a certificate has no principal', async () => {
    const sock = await connect({})
    const r: RbacInput = { head: head('/'), downstreamSocket: sock, sourceIp: '127.0.0.1', metadata: () => undefined }
    assert.equal(prin({ authenticated: {} })(r), false)
    assert.equal(connectionPeer(sock), null)
  })
})

describe('engines', () => {
  const parse = (cfg: unknown) => v.parse(Rbac, { '@type': TypeUrls.rbac, ...(cfg as object) })
  const get = { header: { name: ':method', exact_match: 'GET' } }
  const admin = { url_path: { path: { prefix: '/admin' } } }

  test('ALLOW: the first matching policy; nothing matched is a denial', () => {
    const cfg = parse({
      rules: {
        policies: {
          'ns[default]-policy[a]-rule[0]': { permissions: [get], principals: [{ any: true }] },
          'ns[default]-policy[b]-rule[0]': { permissions: [{ any: true }], principals: [{ any: true }] },
        },
      },
    })
    const issues: ConfigIssue[] = []
    const e = new RbacEngine(cfg.rules!, 'rules', issues)
    assert.deepEqual(issues, [])
    assert.equal(e.matchedPolicy(input({ method: 'GET' })), 'ns[default]-policy[a]-rule[0]')
    assert.equal(e.matchedPolicy(input({ method: 'POST' })), 'ns[default]-policy[b]-rule[0]')
    const none = new RbacEngine(parse({ rules: {} }).rules!, 'rules', issues)
    assert.equal(none.allows(none.matchedPolicy(input())), false)
  })

  test('DENY denies what matches; LOG allows everything', () => {
    const issues: ConfigIssue[] = []
    const policies = { deny: { permissions: [admin], principals: [{ any: true }] } }
    const deny = new RbacEngine(parse({ rules: { action: 'DENY', policies } }).rules!, 'rules', issues)
    assert.equal(deny.allows(deny.matchedPolicy(input({ path: '/admin/x' }))), false)
    assert.equal(deny.allows(deny.matchedPolicy(input({ path: '/' }))), true)
    const log = new RbacEngine(parse({ rules: { action: 'LOG', policies } }).rules!, 'rules', issues)
    assert.equal(log.matchedPolicy(input({ path: '/admin' })), 'deny')
    assert.equal(log.allows('deny'), true)
  })

  test('schema and compile errors name the field', () => {
    const bad = v.safeParse(Rbac, {
      '@type': TypeUrls.rbac,
      rules: { policies: { p: { permissions: [{ any: true, destination_port: 1 }], principals: [{ any: true }] } } },
    })
    assert.equal(bad.success, false)
    const issues: ConfigIssue[] = []
    compilePermission(
      { url_path: { path: { safe_regex: { regex: '(a' } } } },
      'rules.policies["p"].permissions[0]',
      issues,
    )
    assert.equal(issues[0]?.path, 'rules.policies["p"].permissions[0].url_path.path.safe_regex.regex')
  })
})
