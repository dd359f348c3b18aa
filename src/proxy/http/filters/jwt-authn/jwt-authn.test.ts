/**
 * The JWT filter on its own, driven through its FilterCallbacks contract: what a verified token leaves for later
 * filters (istio_authn and payload_in_metadata), what each kind of bad token gets, and the JWKS key rotation
 * against a real local HTTP JWKS server.
 */
import assert from 'node:assert/strict'
import * as http from 'node:http'
import type { AddressInfo } from 'node:net'
import { after, before, describe, test } from 'node:test'
import * as jose from 'jose'
import * as v from 'valibot'
import { JwtAuthentication } from '../../../../config/envoy.js'
import type { ConfigIssue } from '../../../../core/errors.js'
import { HttpConnManagerStats } from '../../../stats/stats.js'
import { Headers } from '../../headers.js'
import type { RequestHead } from '../../types.js'
import { CONTINUE, type FilterCallbacks, STOP } from '../filter.js'
import { JwtAuthnFilterFactory } from './jwt-authn.js'

const TYPE = 'type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication'
const ISS = 'testing@secure.istio.io'

/** One stream's side of the contract: records what the filter did. */
class Stream implements FilterCallbacks {
  readonly head: RequestHead
  readonly route = null
  readonly sourceIp = '127.0.0.1'
  readonly downstreamSocket = null
  meta = new Map<string, Record<string, unknown>>()
  reply: { status: number; reason: string; text: string | null; headers: Headers | undefined } | null = null
  private settle!: () => void
  readonly settled = new Promise<void>((r) => (this.settle = r))
  continued = false

  constructor(path: string, headers: string[] = []) {
    this.head = {
      method: 'GET',
      authority: 'httpbin.foo',
      path,
      scheme: 'http',
      headers: new Headers(headers),
      upgrade: null,
      protocol: 'HTTP/1.1',
    }
  }
  setMetadata(ns: string, key: string, value: unknown): void {
    if (!this.meta.has(ns)) this.meta.set(ns, {})
    this.meta.get(ns)![key] = value
  }
  metadata(ns: string) {
    return this.meta.get(ns)
  }
  continueDecoding(): void {
    this.continued = true
    this.settle()
  }
  sendLocalReply(status: number, _flag: string, reason: string, text: string | null, headers?: Headers): void {
    this.reply = { status, reason, text, headers }
    this.settle()
  }
  addFlag(): void {}
}

function factory(cfg: unknown): JwtAuthnFilterFactory {
  const parsed = v.parse(JwtAuthentication, cfg)
  const issues: ConfigIssue[] = []
  const f = new JwtAuthnFilterFactory(
    'envoy.filters.http.jwt_authn',
    parsed,
    'f',
    issues,
    new HttpConnManagerStats('test'),
  )
  assert.deepEqual(issues, [])
  return f
}

/** Runs a request through the filter: 'continue' (synchronously), 'continued' (after verification) or the reply. */
async function run(f: JwtAuthnFilterFactory, s: Stream) {
  const filter = f.create(s, undefined)
  if (filter === null) return 'not-checked'
  const status = filter.decodeHeaders!(s.head, true)
  if (status === CONTINUE) return 'continue'
  assert.equal(status, STOP)
  await s.settled
  return s.continued ? 'continued' : s.reply!.status
}

const now = () => Math.floor(Date.now() / 1000)

describe('JWT filter', () => {
  let rsa: CryptoKeyPair
  let ec: CryptoKeyPair
  let cfg: unknown

  before(async () => {
    rsa = (await jose.generateKeyPair('RS256', { extractable: true })) as CryptoKeyPair
    ec = (await jose.generateKeyPair('ES256', { extractable: true })) as CryptoKeyPair
    const keys = [
      { ...(await jose.exportJWK(rsa.publicKey)), kid: 'rsa-1', alg: 'RS256', use: 'sig' },
      { ...(await jose.exportJWK(ec.publicKey)), kid: 'ec-1' },
    ]
    cfg = {
      '@type': TYPE,
      providers: {
        'origins-0': {
          issuer: ISS,
          audiences: ['httpbin'],
          local_jwks: { inline_string: JSON.stringify({ keys }) },
          payload_in_metadata: ISS,
        },
      },
      rules: [
        {
          match: { prefix: '/' },
          requires: { requires_any: { requirements: [{ provider_name: 'origins-0' }, { allow_missing: {} }] } },
        },
      ],
    }
  })

  const sign = (key: CryptoKey, alg: string, kid: string, claims: jose.JWTPayload) =>
    new jose.SignJWT(claims).setProtectedHeader({ alg, kid }).sign(key)
  const good = { iss: ISS, sub: 'alice', aud: 'httpbin', azp: 'frontend', exp: now() + 600, groups: ['a', 'b'] }

  test('a valid RS256 token passes and sets istio_authn and the payload_in_metadata entry', async () => {
    const token = await sign(rsa.privateKey, 'RS256', 'rsa-1', good)
    const s = new Stream('/headers', ['authorization', `Bearer ${token}`])
    assert.equal(await run(factory(cfg), s), 'continued')
    const authn = s.meta.get('istio_authn')!
    assert.equal(authn['request.auth.principal'], `${ISS}/alice`)
    assert.deepEqual(authn['request.auth.audiences'], ['httpbin'])
    assert.equal(authn['request.auth.presenter'], 'frontend')
    assert.deepEqual(authn['request.auth.claims'], good)
    assert.deepEqual(s.meta.get('envoy.filters.http.jwt_authn')![ISS], good)
    assert.equal(s.head.headers.get('authorization'), undefined, 'the token header is removed (forward unset)')
  })

  test('a valid ES256 token passes and sets the metadata', async () => {
    const token = await sign(ec.privateKey, 'ES256', 'ec-1', { ...good, aud: ['other', 'httpbin'] })
    const s = new Stream('/headers', ['authorization', `Bearer ${token}`])
    assert.equal(await run(factory(cfg), s), 'continued')
    assert.deepEqual(s.meta.get('istio_authn')!['request.auth.audiences'], ['other', 'httpbin'])
  })

  test('a missing token passes with allow_missing and sets nothing', async () => {
    const s = new Stream('/headers')
    assert.equal(await run(factory(cfg), s), 'continue')
    assert.equal(s.meta.size, 0)
  })

  test('an ES256 token is not verified with a key of another curve or type (alg bound to key type)', async () => {
    const p384 = await jose.generateKeyPair('ES384', { extractable: true })
    // the token claims ES256 with the RSA key's kid: the kid's key is RSA, so no key fits
    const token = await sign(ec.privateKey, 'ES256', 'rsa-1', good)
    const s = new Stream('/', ['authorization', `Bearer ${token}`])
    assert.equal(await run(factory(cfg), s), 401)
    assert.equal(s.reply!.text, "Jwks doesn't have key to match kid or alg from Jwt")
    const t2 = await sign(p384.privateKey, 'ES384', 'ec-1', good)
    const s2 = new Stream('/', ['authorization', `Bearer ${t2}`])
    assert.equal(await run(factory(cfg), s2), 401)
  })

  test('a rule requiring a token without allow_missing answers 401 Jwt is missing', async () => {
    const c = structuredClone(cfg) as { rules: unknown[] }
    c.rules = [{ match: { path: '/private' }, requires: { provider_name: 'origins-0' } }]
    const f = factory(c)
    const s = new Stream('/private?x=1')
    assert.equal(await run(f, s), 401)
    assert.equal(s.reply!.text, 'Jwt is missing')
    assert.equal(s.reply!.headers!.get('www-authenticate'), 'Bearer realm="http://httpbin.foo/private"')
    assert.equal(await run(f, new Stream('/public')), 'not-checked', 'no rule matches: not checked')
  })

  test('EdDSA with an OKP Ed25519 key, the token from a cookie', async () => {
    const ed = (await jose.generateKeyPair('EdDSA', { extractable: true })) as CryptoKeyPair
    const jwk = { ...(await jose.exportJWK(ed.publicKey)), kid: 'ed' }
    const f = factory({
      '@type': TYPE,
      providers: {
        p: { issuer: ISS, local_jwks: { inline_string: JSON.stringify({ keys: [jwk] }) }, from_cookies: ['session'] },
      },
      rules: [{ match: { prefix: '/' }, requires: { provider_name: 'p' } }],
    })
    const token = await sign(ed.privateKey, 'EdDSA', 'ed', good)
    assert.equal(await run(f, new Stream('/', ['cookie', `a=b; session=${token}`])), 'continued')
    const rs = await sign(rsa.privateKey, 'RS256', 'ed', good)
    const s = new Stream('/', ['cookie', `session=${rs}`])
    assert.equal(await run(f, s), 401, 'an RS256 token never verifies with an OKP key')
  })

  test('a rule naming an unknown provider or requirement is a config error with its path', () => {
    const issues: ConfigIssue[] = []
    const bad = v.parse(JwtAuthentication, {
      '@type': TYPE,
      providers: { p: { local_jwks: { inline_string: 'nope' } } },
      rules: [
        { match: { prefix: '/' }, requires: { provider_name: 'q' } },
        { match: { prefix: '/' }, requirement_name: 'r' },
      ],
    })
    new JwtAuthnFilterFactory('j', bad, 'f', issues, new HttpConnManagerStats('test'))
    assert.deepEqual(
      issues.map((i) => i.path),
      ['f.providers.p.local_jwks', 'f.rules[0].requires.provider_name', 'f.rules[1].requirement_name'],
    )
  })

  describe('remote JWKS', () => {
    let server: http.Server
    let uri: string
    let jwks: string
    let fetches = 0
    let second: CryptoKeyPair

    before(async () => {
      second = (await jose.generateKeyPair('RS256', { extractable: true })) as CryptoKeyPair
      jwks = JSON.stringify({ keys: [{ ...(await jose.exportJWK(rsa.publicKey)), kid: 'k1' }] })
      server = http.createServer((_req, res) => {
        fetches++
        res.setHeader('content-type', 'application/json')
        res.end(jwks)
      })
      await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
      uri = `http://127.0.0.1:${(server.address() as AddressInfo).port}/jwks.json`
    })
    after(() => new Promise<void>((r) => server.close(() => r())))

    const remoteCfg = () => ({
      '@type': TYPE,
      providers: {
        p: {
          issuer: ISS,
          remote_jwks: { http_uri: { uri, cluster: 'jwks', timeout: '2s' }, cache_duration: '600s' },
        },
      },
      rules: [{ match: { prefix: '/' }, requires: { provider_name: 'p' } }],
    })

    test('jwks key rotation: a token with a new kid makes the proxy refetch the set, at most once per interval', async () => {
      const f = factory(remoteCfg())
      const t1 = await sign(rsa.privateKey, 'RS256', 'k1', good)
      assert.equal(await run(f, new Stream('/', ['authorization', `Bearer ${t1}`])), 'continued')
      assert.equal(await run(f, new Stream('/', ['authorization', `Bearer ${t1}`])), 'continued')
      assert.equal(fetches, 1, 'the set is cached')
      // the issuer rotates: k2 is published, k1 is gone
      jwks = JSON.stringify({ keys: [{ ...(await jose.exportJWK(second.publicKey)), kid: 'k2' }] })
      const t2 = await sign(second.privateKey, 'RS256', 'k2', good)
      assert.equal(await run(f, new Stream('/', ['authorization', `Bearer ${t2}`])), 'continued')
      assert.equal(fetches, 2, 'an unknown kid refetched the set')
      const t3 = await sign(second.privateKey, 'RS256', 'k3', good)
      const s3 = new Stream('/', ['authorization', `Bearer ${t3}`])
      assert.equal(await run(f, s3), 401)
      assert.equal(s3.reply!.text, "Jwks doesn't have key to match kid or alg from Jwt")
      assert.equal(fetches, 2, 'a second unknown kid within the interval does not refetch')
    })

    test('a JWKS that cannot be fetched fails closed', async () => {
      const c = remoteCfg()
      c.providers.p.remote_jwks.http_uri.uri = 'http://127.0.0.1:1/jwks.json'
      const t = await sign(rsa.privateKey, 'RS256', 'k1', good)
      const s = new Stream('/', ['authorization', `Bearer ${t}`])
      assert.equal(await run(factory(c), s), 401)
      assert.equal(s.reply!.text, 'Jwks remote fetch is failed')
    })
  })
})
