/**
 * Envoy's JWT authentication filter through a real `loom proxy` process and a real backend: Istio's shape (any of
 * the providers, or no token), each kind of bad token refused with Envoy's reply, tokens from a custom header with a
 * prefix and from a query parameter, the payload and claims copied to request headers, and the filter's stats.
 */
import assert from 'node:assert/strict'
import * as http from 'node:http'
import { after, before, describe, test } from 'node:test'
import * as jose from 'jose'
import { filterBootstrap, type RunningProxy, startProxy, stat } from './helpers/proxy.js'
import { type Backend, startBackend } from './helpers/servers.js'

const TYPE = 'type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication'
const ISS = 'testing@secure.istio.io'
const agent = new http.Agent({ keepAlive: true, maxSockets: 4 })

interface Reply {
  status: number
  headers: http.IncomingHttpHeaders
  body: string
}

function get(port: number, path: string, headers: Record<string, string> = {}): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path, headers, agent }, (res) => {
      let text = ''
      res.setEncoding('utf8')
      res.on('data', (c: string) => (text += c))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: text }))
    })
    req.on('error', reject)
    req.end()
  })
}

const now = () => Math.floor(Date.now() / 1000)

describe('JWT authentication filter', () => {
  let be: Backend
  let proxy: RunningProxy
  let port: number
  let rsa: jose.GenerateKeyPairResult
  let ec: jose.GenerateKeyPairResult
  let rsaPublicPem: string

  before(async () => {
    rsa = await jose.generateKeyPair('RS256', { extractable: true })
    ec = await jose.generateKeyPair('ES256', { extractable: true })
    rsaPublicPem = await jose.exportSPKI(rsa.publicKey)
    const keys = [
      { ...(await jose.exportJWK(rsa.publicKey)), kid: 'rsa', alg: 'RS256' },
      { ...(await jose.exportJWK(ec.publicKey)), kid: 'ec' },
    ]
    const jwks = { inline_string: JSON.stringify({ keys }) }
    be = await startBackend()
    const filter = {
      name: 'envoy.filters.http.jwt_authn',
      typed_config: {
        '@type': TYPE,
        providers: {
          'origins-0': {
            issuer: ISS,
            audiences: ['httpbin.foo'],
            local_jwks: jwks,
            payload_in_metadata: ISS,
            forward_payload_header: 'x-jwt-payload',
            claim_to_headers: [
              { header_name: 'x-jwt-sub', claim_name: 'sub' },
              { header_name: 'x-jwt-team', claim_name: 'org.team' },
            ],
          },
          custom: {
            issuer: 'custom-issuer',
            local_jwks: jwks,
            from_headers: [{ name: 'x-token', value_prefix: 'Token ' }],
            from_params: ['jwt'],
            forward: true,
          },
        },
        rules: [
          {
            match: { prefix: '/' },
            requires: {
              requires_any: {
                requirements: [{ provider_name: 'origins-0' }, { provider_name: 'custom' }, { allow_missing: {} }],
              },
            },
          },
        ],
        bypass_cors_preflight: true,
      },
    }
    proxy = await startProxy(
      filterBootstrap(
        be.port,
        [{ name: 'all', domains: ['*'], routes: [{ match: { prefix: '/' }, route: { cluster: 'be' } }] }],
        [filter],
      ),
    )
    port = proxy.ports.http!
  })
  after(async () => {
    agent.destroy()
    await proxy?.stop()
    await be?.close()
  })

  const claims = (extra: jose.JWTPayload = {}): jose.JWTPayload => ({
    iss: ISS,
    sub: 'alice',
    aud: 'httpbin.foo',
    exp: now() + 600,
    org: { team: 'payments' },
    ...extra,
  })
  const rs256 = (c: jose.JWTPayload) =>
    new jose.SignJWT(c).setProtectedHeader({ alg: 'RS256', kid: 'rsa' }).sign(rsa.privateKey)
  const bearer = (t: string) => ({ authorization: `Bearer ${t}` })
  const backendSaw = () => be.requests.at(-1)!

  async function refused(token: string, status: number, body: string): Promise<void> {
    const before = be.requests.length
    const r = await get(port, '/headers', bearer(token))
    assert.equal(r.status, status, r.body)
    assert.equal(r.body.trim(), body)
    assert.match(
      String(r.headers['www-authenticate']),
      /^Bearer realm="http:\/\/127\.0\.0\.1:\d+\/headers", error="invalid_token"$/,
    )
    assert.equal(be.requests.length, before, 'the backend never sees the request')
  }

  test('a valid RS256 token passes: token header removed, payload and claims in headers', async () => {
    const c = claims()
    const r = await get(port, '/headers', bearer(await rs256(c)))
    assert.equal(r.status, 200, r.body)
    const seen = backendSaw().headers
    assert.equal(seen.authorization, undefined)
    assert.equal(seen['x-jwt-sub'], 'alice')
    assert.equal(seen['x-jwt-team'], 'payments', 'outputClaimToHeaders: a nested claim by dotted path')
    assert.deepEqual(
      JSON.parse(Buffer.from(String(seen['x-jwt-payload']), 'base64url').toString()),
      c,
      'outputPayloadToHeader',
    )
  })

  test('a valid ES256 token passes', async () => {
    const token = await new jose.SignJWT(claims()).setProtectedHeader({ alg: 'ES256', kid: 'ec' }).sign(ec.privateKey)
    assert.equal((await get(port, '/', bearer(token))).status, 200)
  })

  test('a missing token passes (allow_missing)', async () => {
    const r = await get(port, '/open')
    assert.equal(r.status, 200)
    assert.equal(backendSaw().url, '/open')
  })

  test('an expired token is rejected', async () => {
    await refused(await rs256(claims({ exp: now() - 120 })), 401, 'Jwt is expired')
  })

  test('a token within the clock skew is still accepted', async () => {
    assert.equal((await get(port, '/', bearer(await rs256(claims({ exp: now() - 20 }))))).status, 200)
  })

  test('a token not yet valid is rejected', async () => {
    await refused(await rs256(claims({ nbf: now() + 300 })), 401, 'Jwt not yet valid')
  })

  test('a token of the wrong audience is rejected (403, as Envoy)', async () => {
    await refused(await rs256(claims({ aud: 'someone-else' })), 403, 'Audiences in Jwt are not allowed')
  })

  test('a token of the wrong issuer is rejected', async () => {
    await refused(await rs256(claims({ iss: 'evil@example.com' })), 401, 'Jwt issuer is not configured')
  })

  test('an alg: none token is rejected', async () => {
    const unsecured = new jose.UnsecuredJWT(claims()).encode()
    await refused(unsecured, 401, 'Jwt header [alg] is not supported')
  })

  test('an HS256 token signed with the RSA public key is rejected', async () => {
    const secret = new TextEncoder().encode(rsaPublicPem)
    const token = await new jose.SignJWT(claims()).setProtectedHeader({ alg: 'HS256', kid: 'rsa' }).sign(secret)
    await refused(token, 401, "Jwks doesn't have key to match kid or alg from Jwt")
  })

  test('a token with a forged signature is rejected', async () => {
    const token = await rs256(claims())
    const [h, , s] = token.split('.')
    const forged = `${h}.${Buffer.from(JSON.stringify(claims({ sub: 'admin' }))).toString('base64url')}.${s}`
    await refused(forged, 401, 'Jwt verification fails')
  })

  test('a malformed token is rejected', async () => {
    await refused('not-a-jwt', 401, 'Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections')
  })

  test('fromHeaders with a prefix: the token after the prefix, the header kept with forward', async () => {
    const token = await rs256(claims({ iss: 'custom-issuer', aud: 'any' }))
    const r = await get(port, '/custom', { 'x-token': `Token ${token}` })
    assert.equal(r.status, 200, r.body)
    assert.equal(backendSaw().headers['x-token'], `Token ${token}`, 'forward: the token stays')
    // the custom provider's header is not where origins-0 looks: its token there is one of an unknown issuer
    const r2 = await get(port, '/custom', { 'x-token': `Token ${await rs256(claims())}` })
    assert.equal(r2.status, 401)
    assert.equal(r2.body.trim(), 'Jwt issuer is not configured')
  })

  test('fromParams: the token from a query parameter', async () => {
    const token = await rs256(claims({ iss: 'custom-issuer' }))
    assert.equal((await get(port, `/q?a=1&jwt=${token}`)).status, 200)
    const bad = await rs256(claims({ iss: 'custom-issuer', exp: now() - 3600 }))
    const r = await get(port, `/q?jwt=${bad}`)
    assert.equal(r.status, 401)
    assert.equal(r.body.trim(), 'Jwt is expired')
  })

  test('a CORS preflight is not checked (bypass_cors_preflight)', async () => {
    const r = await new Promise<number>((resolve, reject) => {
      const req = http.request(
        {
          host: '127.0.0.1',
          port,
          path: '/',
          method: 'OPTIONS',
          headers: { origin: 'https://a.example', 'access-control-request-method': 'GET', authorization: 'Bearer x' },
          agent,
        },
        (res) => {
          res.resume()
          res.on('end', () => resolve(res.statusCode ?? 0))
        },
      )
      req.on('error', reject)
      req.end()
    })
    assert.equal(r, 200)
  })

  test('stats: jwt_authn.allowed and jwt_authn.denied', async () => {
    const allowed = await stat(proxy.admin, 'http.ingress.jwt_authn.allowed')
    const denied = await stat(proxy.admin, 'http.ingress.jwt_authn.denied')
    assert.ok(allowed >= 6, `allowed ${allowed}`)
    assert.ok(denied >= 8, `denied ${denied}`)
  })
})
