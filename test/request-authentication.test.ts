/**
 * RequestAuthentication end to end, in the shape of Istio's JWT task: `loom control`, a real `loom proxy` sidecar
 * for httpbin in namespace foo (inbound listener in front of a real backend) and the project's fixture applied with
 * a JWKS generated here. A valid token gets through (200), an invalid one is refused by the sidecar (401), a request
 * without a token gets through (200).
 */
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import * as http from 'node:http'
import { after, before, describe, test } from 'node:test'
import * as jose from 'jose'
import yaml from 'js-yaml'
import { type Control, eventually, type Proc, startControl, startSidecar } from './helpers/control.js'
import { ROOT, writeTemp } from './helpers/proxy.js'
import { type Backend, freePort, startBackend } from './helpers/servers.js'

const ISS = 'testing@secure.istio.io'

function get(port: number, path: string, headers: Record<string, string> = {}) {
  return new Promise<{ status: number; body: string }>((resolve, reject) => {
    const req = http.request(
      { host: '127.0.0.1', port, path, headers: { host: 'httpbin.foo:8000', ...headers } },
      (res) => {
        let body = ''
        res.setEncoding('utf8')
        res.on('data', (c: string) => (body += c))
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }))
      },
    )
    req.on('error', reject)
    req.end()
  })
}

describe('RequestAuthentication through loom control and a sidecar', () => {
  let cp: Control
  let sidecar: Proc & { admin: string }
  let httpbin: Backend
  let inbound: number
  let keys: jose.GenerateKeyPairResult
  const token = (claims: jose.JWTPayload = {}) =>
    new jose.SignJWT({ iss: ISS, sub: ISS, exp: Math.floor(Date.now() / 1000) + 600, ...claims })
      .setProtectedHeader({ alg: 'RS256', kid: 'test' })
      .sign(keys.privateKey)

  before(async () => {
    keys = await jose.generateKeyPair('RS256', { extractable: true })
    const jwks = JSON.stringify({ keys: [{ ...(await jose.exportJWK(keys.publicKey)), kid: 'test', alg: 'RS256' }] })
    cp = await startControl()
    httpbin = await startBackend((req, res) => res.end(`httpbin saw ${req.headers.authorization ?? 'no token'}`))
    inbound = await freePort()
    const reg = await fetch(`http://${cp.api}/api/v1/workloads`, {
      method: 'POST',
      body: JSON.stringify({
        name: 'httpbin',
        namespace: 'foo',
        address: '127.0.0.1',
        ports: [{ name: 'http', number: inbound, servicePort: 8000 }],
        labels: { app: 'httpbin' },
        ttlSeconds: 600,
      }),
    })
    assert.equal(reg.status, 200, await reg.text())
    // the project's fixture, with this test's key set in place of its placeholder
    const fixture = yaml.load(
      readFileSync(`${ROOT}/test/fixtures/istio/request-authentication-httpbin-jwt.yaml`, 'utf8'),
    ) as { spec: { jwtRules: { jwks: string }[] } }
    fixture.spec.jwtRules[0]!.jwks = jwks
    const applied = await cp.loom(['apply', '-f', writeTemp('ra.json', JSON.stringify(fixture))])
    assert.equal(applied.code, 0, applied.stderr)
    sidecar = await startSidecar(cp.xds, { app: 'httpbin' }, await freePort(), [
      '--namespace',
      'foo',
      '--metadata',
      `APP_PORTS=8000:${httpbin.port}`,
    ])
    // the inbound listener is up with the JWT filter once a bad token is refused
    await eventually(
      async () => (await get(inbound, '/headers', { authorization: 'Bearer x.y.z' })).status === 401,
      15000,
      'the sidecar to enforce the RequestAuthentication',
    )
  })
  after(async () => {
    await sidecar?.stop()
    await cp?.stop()
    await httpbin?.close()
  })

  test('a valid token: 200, the token removed before the application', async () => {
    const r = await get(inbound, '/headers', { authorization: `Bearer ${await token()}` })
    assert.equal(r.status, 200, r.body)
    assert.equal(r.body, 'httpbin saw no token')
  })

  test('an invalid token: 401 from the sidecar', async () => {
    const good = await token()
    const tampered = `${good.slice(0, good.lastIndexOf('.') + 1)}${'A'.repeat(342)}`
    const r = await get(inbound, '/headers', { authorization: `Bearer ${tampered}` })
    assert.equal(r.status, 401)
    assert.equal(r.body.trim(), 'Jwt verification fails')
    const other = await get(inbound, '/headers', { authorization: `Bearer ${await token({ iss: 'someone@else' })}` })
    assert.equal(other.status, 401)
    assert.equal(other.body.trim(), 'Jwt issuer is not configured')
  })

  test('no token: 200', async () => {
    const r = await get(inbound, '/headers')
    assert.equal(r.status, 200)
    assert.equal(r.body, 'httpbin saw no token')
  })

  test('the sidecar counts what it allowed and denied', async () => {
    const text = await (await fetch(`http://${sidecar.admin}/stats`)).text()
    const line = (name: string) => Number(text.match(new RegExp(`\\.jwt_authn\\.${name}: (\\d+)`))?.[1] ?? Number.NaN)
    assert.ok(line('allowed') >= 2, text)
    assert.ok(line('denied') >= 3, text)
  })
})
