/**
 * TLS on the control plane's ports: a real `loom control --xds-tls on --api-tls on` serves both with a certificate
 * its CA issues to itself (and renews, streams staying up), a real `loom proxy --xds-ca` gets its config and its
 * certificate over TLS (a relay on the xDS port sees TLS records only, never the bootstrap token), a proxy given
 * another root refuses to connect and says why, and the API answers plain HTTP with a refusal.
 */
import assert from 'node:assert/strict'
import { X509Certificate } from 'node:crypto'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import * as tls from 'node:tls'
import { makeRoot } from '../src/control/ca/pki-fixtures.js'
import { type Control, eventually, spawnLoom, startControl } from './helpers/control.js'
import { runLoom } from './helpers/proxy.js'
import { tcpRelay } from './helpers/relay.js'

const NS = 'shop'
const SA = 'reviews'

/** The certificate the control plane serves on `address` (TLS handshake, verified against `ca`). */
async function servedCertificate(address: string, ca: string, alpn = 'h2'): Promise<tls.DetailedPeerCertificate> {
  const i = address.lastIndexOf(':')
  return new Promise((resolve, reject) => {
    const s = tls.connect(
      { host: address.slice(0, i), port: Number(address.slice(i + 1)), ca, ALPNProtocols: [alpn] },
      () => {
        const c = s.getPeerCertificate(true)
        s.destroy()
        resolve(c)
      },
    )
    s.on('error', reject)
  })
}

/** TLS records: every record's header is a content type 20-23 and version 3.x, and the lengths chain up. */
function onlyTlsRecords(bytes: Buffer): boolean {
  let i = 0
  while (i + 5 <= bytes.length) {
    const type = bytes[i]!
    if (type < 20 || type > 23 || bytes[i + 1] !== 3) return false
    i += 5 + bytes.readUInt16BE(i + 3)
  }
  return i === bytes.length
}

describe('TLS on the control plane ports', { timeout: 120_000 }, () => {
  let cp: Control
  let bundle: string
  let https: string
  const loom = (args: string[]) => runLoom([...args, '--server', https, '--ca-bundle', bundle])

  before(async () => {
    cp = await startControl(undefined, 0, ['--xds-tls', 'on', '--api-tls', 'on', '--cert-ttl', '4s'])
    bundle = String(cp.ready.trust_bundle)
    https = `https://${cp.api}`
    assert.equal(cp.ready.xds_tls, true)
    assert.equal(cp.ready.api_tls, true)
  })
  after(async () => {
    await cp?.stop()
  })

  async function tokenFile(): Promise<string> {
    const r = await loom(['token', 'create', '--namespace', NS, '--service-account', SA])
    assert.equal(r.code, 0, r.stderr)
    const file = join(mkdtempSync(join(tmpdir(), 'loom-tls-')), 'token')
    writeFileSync(file, r.stdout, { mode: 0o600 })
    return file
  }

  test('the server certificate: the control plane SPIFFE ID, localhost and 127.0.0.1, issued by the mesh root', async () => {
    const { readFileSync } = await import('node:fs')
    const ca = readFileSync(bundle, 'utf8')
    for (const [address, alpn] of [
      [cp.xds, 'h2'],
      [cp.api, 'http/1.1'],
    ] as const) {
      const c = await servedCertificate(address, ca, alpn)
      const sans = c.subjectaltname ?? ''
      assert.match(sans, /URI:spiffe:\/\/cluster\.local\/ns\/istio-system\/sa\/loom-control/)
      assert.match(sans, /DNS:localhost/)
      assert.match(sans, /IP Address:127\.0\.0\.1/)
      assert.equal(new X509Certificate(c.raw).checkIssued(new X509Certificate(ca)), true)
    }
  })

  test('the API refuses plain HTTP, and the CLI says what to do without the right root', async () => {
    const r = await fetch(`http://${cp.api}/healthz`)
    assert.equal(r.status, 400)
    assert.match(await r.text(), /requires TLS/)
    const ok = await loom(['get', 'vs'])
    assert.equal(ok.code, 0, ok.stderr)
    const other = join(mkdtempSync(join(tmpdir(), 'loom-tls-')), 'other.pem')
    writeFileSync(other, (await makeRoot()).pem)
    const bad = await runLoom(['get', 'vs', '--server', https, '--ca-bundle', other])
    assert.equal(bad.code, 1)
    assert.match(bad.stderr, /certificate does not verify.*--ca-bundle/)
  })

  test('a proxy gets its config and certificate over TLS; the token never crosses in clear text', async (t) => {
    const relay = await tcpRelay(cp.xds)
    t.after(() => relay.close())
    const file = await tokenFile()
    const { readFileSync } = await import('node:fs')
    const token = readFileSync(file, 'utf8').trim()
    const proxy = await spawnLoom([
      'proxy',
      '--xds',
      relay.address,
      '--xds-ca',
      bundle,
      '--admin',
      '127.0.0.1:0',
      '--namespace',
      NS,
      '--service-account',
      SA,
      '--identity-token-file',
      file,
    ])
    t.after(() => proxy.stop())
    const admin = String(proxy.ready.admin)
    const serials = new Set<string>()
    // the control plane renews its own certificate every ~2 s meanwhile: the proxy's stream stays up
    const served = new Set<string>()
    const ca = readFileSync(bundle, 'utf8')
    await eventually(
      async () => {
        const c = (await (await fetch(`http://${admin}/certs`)).json()) as { identity?: { serial_number: string } }
        if (c.identity) serials.add(c.identity.serial_number)
        served.add((await servedCertificate(cp.xds, ca)).serialNumber)
        return serials.size >= 3 && served.size >= 3
      },
      30_000,
      'renewals of both certificates',
    )
    const status = await loom(['proxy-status', '-o', 'json'])
    assert.match(status.stdout, /sidecar~127\.0\.0\.1/)
    assert.doesNotMatch(proxy.stderr(), /disconnected/, 'the xDS stream stayed up across server certificate renewals')
    const sent = relay.sent()
    assert.ok(sent.length > 1000, `${sent.length} bytes relayed`)
    assert.equal(onlyTlsRecords(sent), true, 'TLS records only')
    assert.equal(sent.includes(Buffer.from(token)), false, 'the token is not in the clear')
    assert.equal(sent.includes(Buffer.from('BEGIN CERTIFICATE REQUEST')), false, 'nor the CSR')
  })

  test('a proxy given another root refuses the control plane and says why', async (t) => {
    const other = join(mkdtempSync(join(tmpdir(), 'loom-tls-')), 'other.pem')
    writeFileSync(other, (await makeRoot()).pem)
    const proxy = await spawnLoom(['proxy', '--xds', cp.xds, '--xds-ca', other, '--admin', '127.0.0.1:0'])
    t.after(() => proxy.stop())
    await eventually(
      async () => /does not verify against --xds-ca/.test(proxy.stderr()),
      20_000,
      'the refusal in the log',
    )
    const status = await loom(['proxy-status', '-o', 'json'])
    assert.equal((JSON.parse(status.stdout) as unknown[]).length, 0, 'it never connected')
  })
})
