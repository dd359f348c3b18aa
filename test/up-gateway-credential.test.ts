/**
 * Istio's secure ingress with `credentialName`: certificates placed in the control plane's credentials directory
 * (`<data-dir>/credentials/<name>/tls.crt, tls.key, ca.crt`) reach the ingress gateway over SDS. curl with the CA
 * gets the backend through SIMPLE TLS; the MUTUAL server admits a client with a certificate of the credential's CA
 * and refuses one without.
 */
import assert from 'node:assert/strict'
import { execFile, execFileSync } from 'node:child_process'
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test } from 'node:test'
import { eventually } from './helpers/control.js'
import { startUp } from './helpers/up.js'

const dir = mkdtempSync(join(tmpdir(), 'loom-credential-'))
const file = (name: string) => join(dir, name)

function openssl(...args: string[]): void {
  execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] })
}

const EC = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes']

function makeCa(name: string): void {
  openssl('req', '-x509', ...EC, '-keyout', `${name}.key`, '-out', `${name}.crt`, '-days', '2', '-subj', `/CN=${name}`)
}

function makeLeaf(name: string, cn: string, ext: string, ca: string): void {
  writeFileSync(file(`${name}.ext`), `${ext}\nbasicConstraints=CA:FALSE\n`)
  openssl('req', '-new', ...EC, '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${cn}`)
  openssl(
    'x509',
    '-req',
    '-in',
    `${name}.csr`,
    '-CA',
    `${ca}.crt`,
    '-CAkey',
    `${ca}.key`,
    '-CAcreateserial',
    '-days',
    '1',
    '-extfile',
    `${name}.ext`,
    '-out',
    `${name}.crt`,
  )
}

/** curl https://shop.example.com:<port>/hello resolved to loopback; resolves with its exit code and output. */
function curl(port: number, extra: string[]): Promise<{ code: number; out: string }> {
  const args = [
    '-sS',
    '--max-time',
    '10',
    '--cacert',
    file('ca.crt'),
    '--resolve',
    `shop.example.com:${port}:127.0.0.1`,
  ]
  return new Promise((resolve) => {
    // the Host without the local port: the gateway's routes are for the server's port (443, 8443)
    const url = `https://shop.example.com:${port}/hello`
    execFile('curl', [...args, ...extra, '-H', 'host: shop.example.com', url], (err, stdout, stderr) => {
      resolve({ code: err === null ? 0 : ((err as { code?: number }).code ?? 1), out: `${stdout}${stderr}` })
    })
  })
}

test('loom up: an ingress gateway serves TLS with credentialName certificates (SIMPLE and MUTUAL)', {
  timeout: 240_000,
}, async (t) => {
  t.after(() => rmSync(dir, { recursive: true, force: true }))
  makeCa('ca')
  makeLeaf('server', 'shop.example.com', 'subjectAltName=DNS:shop.example.com\nextendedKeyUsage=serverAuth', 'ca')
  makeLeaf('client', 'client', 'extendedKeyUsage=clientAuth', 'ca')

  const up = await startUp('up-gateway-credential', 180_000)
  t.after(() => up.stop())
  const state = JSON.parse(readFileSync(join(up.dataDir, 'up.json'), 'utf8')) as {
    gateways: { ports: Record<string, number> }[]
  }
  const ports = state.gateways[0]!.ports
  const simple = ports['443']!
  const mutual = ports['8443']!

  // before the credentials exist the gateway has no certificate: the handshake fails
  assert.notEqual((await curl(simple, [])).code, 0)

  // what `kubectl create secret tls` holds, as files in the control plane's credentials directory
  const credentials = join(up.dataDir, 'control', 'credentials')
  for (const [name, withCa] of [
    ['shop-cert', false],
    ['shop-mtls', true],
  ] as const) {
    mkdirSync(join(credentials, name), { recursive: true })
    copyFileSync(file('server.key'), join(credentials, name, 'tls.key'))
    copyFileSync(file('server.crt'), join(credentials, name, 'tls.crt'))
    if (withCa) copyFileSync(file('ca.crt'), join(credentials, name, 'ca.crt'))
  }

  await eventually(
    async () => {
      const r = await curl(simple, [])
      return r.code === 0 && r.out === 'shop /hello'
    },
    30_000,
    'SIMPLE TLS with the credential',
  )
  await eventually(
    async () => {
      const r = await curl(mutual, ['--cert', file('client.crt'), '--key', file('client.key')])
      return r.code === 0 && r.out === 'shop /hello'
    },
    30_000,
    'MUTUAL TLS with a client certificate',
  )
  // the MUTUAL server requires a client certificate
  assert.notEqual((await curl(mutual, [])).code, 0)
})
