import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { X509Certificate } from 'node:crypto'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, test } from 'node:test'
import { type ConnectionOptions, connect, createServer, type PeerCertificate, type TLSSocket } from 'node:tls'
import type { Cluster, UpstreamTlsContext } from '../../config/envoy.js'
import type { ConfigIssue } from '../../core/errors.js'
import { UpstreamCluster } from './cluster.js'
import { ClusterConfigError } from './errors.js'
import { parseSubjectAltNames } from '../../core/subject-alt-names.js'
import { upstreamTlsOptions } from './tls.js'

const tlsType = 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext' as const
let dir = ''
let certFile = ''
let keyFile = ''
let otherKeyFile = ''

function makeCert(name: string, sans: string): void {
  execFileSync(
    'openssl',
    [
      'req',
      '-x509',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:P-256',
      '-nodes',
      '-keyout',
      join(dir, `${name}.key`),
      '-out',
      join(dir, `${name}.crt`),
      '-days',
      '1',
      '-subj',
      '/CN=upstream.test',
      '-addext',
      `subjectAltName=${sans}`,
    ],
    { stdio: 'ignore' },
  )
}

before(() => {
  dir = mkdtempSync(join(tmpdir(), 'loom-cluster-tls-'))
  makeCert('server', 'DNS:upstream.test,URI:spiffe://loom/ns/default/sa/api,IP:127.0.0.1,IP:::1')
  makeCert('other', 'DNS:other.test')
  certFile = join(dir, 'server.crt')
  keyFile = join(dir, 'server.key')
  otherKeyFile = join(dir, 'other.key')
})

after(() => rmSync(dir, { recursive: true, force: true }))

function tlsCluster(ctx: Omit<UpstreamTlsContext, '@type'>, extra: Partial<Cluster> = {}): UpstreamCluster {
  return new UpstreamCluster({
    name: 'secure',
    load_assignment: {
      cluster_name: 'secure',
      endpoints: [
        { lb_endpoints: [{ endpoint: { address: { socket_address: { address: '127.0.0.1', port_value: 443 } } } }] },
      ],
    },
    transport_socket: { name: 'envoy.transport_sockets.tls', typed_config: { '@type': tlsType, ...ctx } },
    ...extra,
  })
}

function build(
  ctx: Omit<UpstreamTlsContext, '@type'>,
  http2 = false,
): { options: ConnectionOptions | null; issues: ConfigIssue[] } {
  const issues: ConfigIssue[] = []
  const options = upstreamTlsOptions({ '@type': tlsType, ...ctx }, http2, 'ctx', issues)
  return { options, issues }
}

test('TLS options from files: certificate, key, CA, SNI, ALPN and versions', () => {
  const c = tlsCluster({
    sni: 'upstream.test',
    common_tls_context: {
      tls_certificates: [{ certificate_chain: { filename: certFile }, private_key: { filename: keyFile } }],
      validation_context: { trusted_ca: { filename: certFile } },
      tls_params: { tls_minimum_protocol_version: 'TLSv1_2', tls_maximum_protocol_version: 'TLSv1_3' },
    },
  })
  const o = c.tls!
  assert.deepEqual(o.cert, readFileSync(certFile))
  assert.deepEqual(o.key, readFileSync(keyFile))
  assert.deepEqual(o.ca, readFileSync(certFile))
  assert.equal(o.servername, 'upstream.test')
  assert.deepEqual(o.ALPNProtocols, ['http/1.1'])
  assert.equal(o.minVersion, 'TLSv1.2')
  assert.equal(o.maxVersion, 'TLSv1.3')
  assert.equal(o.rejectUnauthorized, true)
  assert.ok(o.secureContext !== undefined)
  assert.equal(typeof o.checkServerIdentity, 'function')
})

test("TLS defaults: ALPN by protocol, Envoy's client versions, no SNI, no verification without trusted_ca", () => {
  const h2 = tlsCluster({}, { http2_protocol_options: {} }).tls!
  assert.deepEqual(h2.ALPNProtocols, ['h2'])
  assert.equal(h2.minVersion, 'TLSv1.2')
  assert.equal(h2.maxVersion, 'TLSv1.2')
  assert.equal(h2.servername, undefined)
  assert.equal(h2.rejectUnauthorized, false)
  const alpn = build({ common_tls_context: { alpn_protocols: ['h2', 'http/1.1'] } }).options!
  assert.deepEqual(alpn.ALPNProtocols, ['h2', 'http/1.1'])
  const v13 = build({ common_tls_context: { tls_params: { tls_minimum_protocol_version: 'TLSv1_3' } } }).options!
  assert.equal(v13.maxVersion, 'TLSv1.3')
})

test('TLS material inline (inline_string and base64 inline_bytes)', () => {
  const cert = readFileSync(certFile, 'utf8')
  const { options, issues } = build({
    common_tls_context: {
      tls_certificates: [
        {
          certificate_chain: { inline_string: cert },
          private_key: { inline_bytes: readFileSync(keyFile).toString('base64') },
        },
      ],
    },
  })
  assert.deepEqual(issues, [])
  assert.deepEqual(options!.cert, Buffer.from(cert))
  assert.deepEqual(options!.key, readFileSync(keyFile))
})

test('TLS config errors: unreadable file, key not matching certificate, SAN matching without a CA, bad regex', () => {
  const unreadable = build({
    common_tls_context: { validation_context: { trusted_ca: { filename: join(dir, 'missing.pem') } } },
  })
  assert.equal(unreadable.options, null)
  assert.deepEqual(
    unreadable.issues.map((i) => i.path),
    ['ctx.common_tls_context.validation_context.trusted_ca.filename'],
  )

  const mismatch = build({
    common_tls_context: {
      tls_certificates: [{ certificate_chain: { filename: certFile }, private_key: { filename: otherKeyFile } }],
    },
  })
  assert.deepEqual(
    mismatch.issues.map((i) => i.path),
    ['ctx.common_tls_context'],
  )
  assert.match(mismatch.issues[0]!.message, /invalid TLS material/)

  const noCa = build({
    common_tls_context: {
      validation_context: {
        match_typed_subject_alt_names: [{ san_type: 'DNS', matcher: { safe_regex: { regex: '(' } } }],
      },
    },
  })
  assert.deepEqual(
    noCa.issues.map((i) => i.path),
    [
      'ctx.common_tls_context.validation_context.match_typed_subject_alt_names',
      'ctx.common_tls_context.validation_context.match_typed_subject_alt_names[0].matcher.safe_regex.regex',
    ],
  )

  assert.throws(
    () =>
      tlsCluster({
        common_tls_context: { validation_context: { trusted_ca: { filename: join(dir, 'missing.pem') } } },
      }),
    (err) =>
      err instanceof ClusterConfigError &&
      err.issues[0]!.path ===
        '.transport_socket.typed_config.common_tls_context.validation_context.trusted_ca.filename',
  )
})

function sanCheck(matchers: NonNullable<NonNullable<UpstreamTlsContext['common_tls_context']>['validation_context']>) {
  const { options, issues } = build({
    common_tls_context: { validation_context: { trusted_ca: { filename: certFile }, ...matchers } },
  })
  assert.deepEqual(issues, [])
  return options!.checkServerIdentity!
}

test('match_typed_subject_alt_names checks the SANs of the real certificate', () => {
  const peer = new X509Certificate(readFileSync(certFile)).toLegacyObject() as PeerCertificate
  const ok = (m: Parameters<typeof sanCheck>[0]) => sanCheck(m)('whatever', peer) === undefined
  assert.ok(ok({ match_typed_subject_alt_names: [{ san_type: 'DNS', matcher: { exact: 'upstream.test' } }] }))
  assert.ok(
    ok({ match_typed_subject_alt_names: [{ san_type: 'URI', matcher: { prefix: 'spiffe://loom/ns/default/' } }] }),
  )
  assert.ok(
    ok({
      match_typed_subject_alt_names: [
        { san_type: 'URI', matcher: { safe_regex: { regex: 'spiffe://loom/ns/[^/]+/sa/api' } } },
      ],
    }),
  )
  assert.ok(ok({ match_typed_subject_alt_names: [{ san_type: 'IP_ADDRESS', matcher: { exact: '127.0.0.1' } }] }))
  assert.ok(ok({ match_typed_subject_alt_names: [{ san_type: 'IP_ADDRESS', matcher: { exact: '::1' } }] }))
  assert.ok(
    ok({
      match_typed_subject_alt_names: [{ san_type: 'DNS', matcher: { exact: 'UPSTREAM.test', ignore_case: true } }],
    }),
  )
  // Any one matcher suffices.
  assert.ok(
    ok({
      match_typed_subject_alt_names: [
        { san_type: 'DNS', matcher: { exact: 'nope.test' } },
        { san_type: 'URI', matcher: { suffix: '/sa/api' } },
      ],
    }),
  )
  // Wrong value, wrong type, partial regex match.
  assert.ok(!ok({ match_typed_subject_alt_names: [{ san_type: 'DNS', matcher: { exact: 'other.test' } }] }))
  assert.ok(!ok({ match_typed_subject_alt_names: [{ san_type: 'DNS', matcher: { exact: '127.0.0.1' } }] }))
  assert.ok(
    !ok({ match_typed_subject_alt_names: [{ san_type: 'URI', matcher: { safe_regex: { regex: 'spiffe://loom' } } }] }),
  )
  const err = sanCheck({ match_typed_subject_alt_names: [{ san_type: 'EMAIL', matcher: { contains: '@' } }] })(
    'h',
    peer,
  )
  assert.equal((err as NodeJS.ErrnoException).code, 'ERR_TLS_CERT_ALTNAME_INVALID')
})

test('a wildcard DNS SAN matches an exact matcher one label deep', () => {
  const check = sanCheck({
    match_typed_subject_alt_names: [{ san_type: 'DNS', matcher: { exact: 'api.svc.test' } }],
  })
  const peer = (subjectaltname: string) => ({ subjectaltname }) as PeerCertificate
  assert.equal(check('x', peer('DNS:*.svc.test')), undefined)
  assert.ok(check('x', peer('DNS:*.test')) instanceof Error)
  assert.ok(check('x', peer('DNS:*.other.test')) instanceof Error)
})

test('parseSubjectAltNames reads quoted values', () => {
  assert.deepEqual(parseSubjectAltNames('DNS:a.test, URI:"spiffe://x/a,b", IP Address:10.0.0.1'), [
    { type: 'DNS', value: 'a.test' },
    { type: 'URI', value: 'spiffe://x/a,b' },
    { type: 'IP Address', value: '10.0.0.1' },
  ])
  assert.deepEqual(parseSubjectAltNames(''), [])
})

function handshake(options: ConnectionOptions): Promise<TLSSocket> {
  return new Promise((resolve, reject) => {
    const server = createServer({
      cert: readFileSync(certFile),
      key: readFileSync(keyFile),
      ALPNProtocols: ['h2', 'http/1.1'],
    })
    server.on('secureConnection', (s) => s.end())
    server.listen(0, '127.0.0.1', () => {
      const port = (server.address() as { port: number }).port
      const socket = connect({ ...options, host: '127.0.0.1', port })
      socket.on('secureConnect', () => {
        server.close()
        socket.destroy()
        resolve(socket)
      })
      socket.on('error', (err) => {
        server.close()
        reject(err)
      })
    })
  })
}

test('the options complete a real handshake: verified chain, SAN check and ALPN', async () => {
  const good = tlsCluster(
    {
      common_tls_context: {
        validation_context: {
          trusted_ca: { filename: certFile },
          match_typed_subject_alt_names: [{ san_type: 'URI', matcher: { exact: 'spiffe://loom/ns/default/sa/api' } }],
        },
      },
    },
    { http2_protocol_options: {} },
  ).tls!
  const socket = await handshake(good)
  assert.equal(socket.authorized, true)
  assert.equal(socket.alpnProtocol, 'h2')

  const wrongSan = tlsCluster({
    common_tls_context: {
      validation_context: {
        trusted_ca: { filename: certFile },
        match_typed_subject_alt_names: [{ san_type: 'DNS', matcher: { exact: 'other.test' } }],
      },
    },
  }).tls!
  await assert.rejects(handshake(wrongSan), { code: 'ERR_TLS_CERT_ALTNAME_INVALID' })

  const wrongCa = tlsCluster({
    common_tls_context: { validation_context: { trusted_ca: { filename: join(dir, 'other.crt') } } },
  }).tls!
  await assert.rejects(handshake(wrongCa))

  // No trusted_ca: Envoy does not verify the peer.
  const unverified = await handshake(tlsCluster({}).tls!)
  assert.equal(unverified.alpnProtocol, 'http/1.1')
})
