/**
 * Workload identity end to end: a real `loom control` signs certificates for a real `loom proxy` that shows it a
 * bootstrap token, renews them with the certificate itself, and refuses every request for an identity the caller
 * did not authenticate. The private key is checked never to cross the wire: the proxy's side of the connection is
 * recorded through a TCP relay and searched for it.
 */
import assert from 'node:assert/strict'
import { createPrivateKey, sign, X509Certificate } from 'node:crypto'
import { readdirSync, readFileSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import * as grpc from '@grpc/grpc-js'
import { makeCsr, makeLeaf, makeRoot } from '../src/control/ca/pki-fixtures.js'
import { IdentityClient } from '../src/proxy/identity/client.js'
import { SecretStore, type TlsCertificateSecret } from '../src/proxy/secrets/store.js'
import { certificateServiceClient, createCertificate } from '../src/xds/ca-service.js'
import { bootstrapToken, type Control, eventually, spawnLoom, startControl, tokenFile } from './helpers/control.js'
import { tcpRelay } from './helpers/relay.js'

const NS = 'shop'
const SA = 'bookinfo-reviews'
const ID = `spiffe://cluster.local/ns/${NS}/sa/${SA}`

interface CertsBody {
  certificates: {
    ca_cert: { serial_number: string }[]
    cert_chain: { serial_number: string; subject_alt_names: { uri?: string }[] }[]
  }[]
  identity?: { spiffe_id: string; serial_number: string; expiration_time: string; certificates_received: number } | null
}

function status(err: unknown): { code: number; details: string } {
  const e = err as grpc.ServiceError
  return { code: e.code, details: e.details }
}

describe('workload identity', { timeout: 120_000 }, () => {
  let cp: Control
  before(async () => {
    cp = await startControl(undefined, 0, ['--cert-ttl', '6s'])
  })
  after(async () => {
    await cp?.stop()
  })

  test('a proxy given a token gets its SPIFFE certificate, and renews it several times by itself', async (t) => {
    const file = await tokenFile(cp, NS, SA)
    const proxy = await spawnLoom([
      'proxy',
      '--xds',
      cp.xds,
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
    const certs = async () => (await (await fetch(`http://${admin}/certs`)).json()) as CertsBody
    const serials = new Set<string>()
    await eventually(
      async () => {
        const c = await certs()
        if (c.identity) serials.add(c.identity.serial_number)
        return serials.size >= 4
      },
      30_000,
      'three renewals',
    )
    const c = await certs()
    assert.equal(c.identity!.spiffe_id, ID)
    const leaf = c.certificates[0]!.cert_chain[0]!
    assert.deepEqual(leaf.subject_alt_names, [{ uri: ID }])
    assert.equal(c.certificates[0]!.ca_cert.length, 1, 'the trust bundle (ROOTCA) is installed too')
    assert.ok(c.identity!.certificates_received >= 4)
    assert.equal(proxy.proc.exitCode, null, 'the same process all along')
    assert.match(proxy.stderr(), /"msg":"certificate renewed".*"via":"certificate"/)
    assert.doesNotMatch(proxy.stderr(), /PRIVATE KEY/)
    const ca = (await (await fetch(`http://${cp.api}/api/v1/ca`)).json()) as { issued: number; renewed: number }
    assert.ok(ca.issued >= 1 && ca.renewed >= 3, JSON.stringify(ca))
    t.diagnostic(`${serials.size} certificates in ${c.identity!.certificates_received} requests`)
  })

  test('the private key never reaches the control plane: not on the wire, not in its logs or data', async () => {
    const relay = await tcpRelay(cp.xds)
    const file = await tokenFile(cp, NS, SA)
    const store = new SecretStore()
    const keys: string[] = []
    store.subscribe('default', (_, s) => keys.push((s as TlsCertificateSecret).privateKeyPem))
    const client = new IdentityClient({ server: relay.address, tokenFile: file, store })
    try {
      client.start()
      await eventually(async () => keys.length >= 2, 20_000, 'a first certificate and a renewal')
    } finally {
      client.stop()
      relay.close()
    }
    const wire = relay.sent()
    const chain = (store.get('default') as TlsCertificateSecret).certificateChainPem
    assert.equal(new X509Certificate(chain).subjectAltName, `URI:${ID}`)
    // the recording is of the real exchange: CSRs, and the renewal's current certificate, as PEM
    assert.ok(wire.includes('-----BEGIN CERTIFICATE REQUEST-----'), 'the recording has the CSRs in it')
    assert.ok(wire.includes('-----BEGIN CERTIFICATE-----'), 'and the certificate a renewal is authenticated by')
    assert.ok(!wire.includes('PRIVATE KEY'))
    const dataFiles = readdirSync(cp.dataDir, { recursive: true, withFileTypes: true })
      .filter((e) => e.isFile())
      .map((e) => readFileSync(join(e.parentPath, e.name)))
    for (const pem of keys) {
      const key = createPrivateKey(pem)
      const d = Buffer.from((key.export({ format: 'jwk' }) as { d: string }).d, 'base64url')
      const der = key.export({ type: 'pkcs8', format: 'der' })
      const needles = [
        d,
        der,
        Buffer.from(d.toString('base64')),
        Buffer.from(d.toString('base64url')),
        Buffer.from(d.toString('hex')),
        ...pem
          .split('\n')
          .filter((l) => l !== '' && !l.startsWith('-----'))
          .map((l) => Buffer.from(l)),
      ]
      for (const needle of needles) {
        assert.ok(!wire.includes(needle), 'the key is not in what the proxy sent')
        assert.ok(!cp.stderr().includes(needle.toString('latin1')), 'nor in the control plane log')
        for (const f of dataFiles) assert.ok(!f.includes(needle), 'nor in its data directory')
      }
    }
  })

  test('a failed renewal is retried with back-off while the proxy keeps its certificate; the first one too', async () => {
    const relay = await tcpRelay(cp.xds)
    const file = await tokenFile(cp, NS, SA)
    const store = new SecretStore()
    const client = new IdentityClient({
      server: relay.address,
      tokenFile: file,
      store,
      backoffMs: 100,
      maxBackoffMs: 400,
    })
    try {
      // the control plane cannot be reached: attempts go on, nothing is installed
      relay.cut(true)
      client.start()
      await eventually(async () => relay.accepted() >= 3, 20_000, 'several attempts')
      assert.equal(store.get('default'), undefined)
      assert.equal(client.status(), null)
      relay.cut(false)
      await client.ready()
      const first = store.get('default') as TlsCertificateSecret
      const notAfter = Date.parse(new X509Certificate(first.certificateChainPem).validTo)
      // now renewals fail: the certificate stays until it expires
      relay.cut(true)
      await eventually(async () => client.status()?.lastError != null, 20_000, 'a failed renewal')
      assert.equal(store.get('default'), first, 'the certificate it has is kept')
      assert.ok(Date.now() < notAfter + 1000)
      relay.cut(false)
      await eventually(async () => store.get('default') !== first, 20_000, 'the renewal after the outage')
      assert.equal(client.status()!.lastError, null)
      assert.equal(client.status()!.spiffeId, ID)
    } finally {
      client.stop()
      relay.close()
    }
  })

  test('refusals: no credentials, a bad token, a CSR for another identity, a renewal by another identity or CA', async () => {
    const cp = await startControl()
    const client = certificateServiceClient(cp.xds)
    try {
      const good = await bootstrapToken(cp, NS, SA)
      const csrFor = (uri?: string) => makeCsr(uri === undefined ? {} : { uris: [uri] })

      // first certificate, with the token; the CSR may name the identity, or not
      const a = await csrFor(ID)
      const res = await createCertificate(client, { csr: a.pem }, good)
      assert.equal(new X509Certificate(res.certificate_chain![0]!).subjectAltName, `URI:${ID}`)
      assert.equal(res.trust_bundle!.length, 1)
      const chainA = res.certificate_chain!.join('')
      const keyA = createPrivateKey(a.keyPem)

      const refused = async (p: Promise<unknown>, code: grpc.status, message: RegExp) => {
        const err = await p.then(
          () => assert.fail('expected a refusal'),
          (e: unknown) => status(e),
        )
        assert.equal(err.code, code, err.details)
        assert.match(err.details, message)
      }
      const other = `spiffe://cluster.local/ns/${NS}/sa/admin`
      await refused(
        createCertificate(client, { csr: (await csrFor(other)).pem }, good),
        grpc.status.PERMISSION_DENIED,
        new RegExp(`the CSR asks for ${other}, but the token authenticates ${ID}`),
      )
      await refused(
        createCertificate(client, { csr: (await csrFor()).pem }),
        grpc.status.UNAUTHENTICATED,
        /no credentials/,
      )
      const [p, claims, sig] = good.split('.')
      const forged = `${p}.${Buffer.from(
        JSON.stringify({ ...JSON.parse(Buffer.from(claims!, 'base64url').toString()), sa: 'admin' }),
      ).toString('base64url')}.${sig}`
      await refused(
        createCertificate(client, { csr: (await csrFor()).pem }, forged),
        grpc.status.UNAUTHENTICATED,
        /signature does not verify/,
      )
      await refused(
        createCertificate(
          client,
          { csr: (await csrFor()).pem },
          await bootstrapToken(cp, NS, SA, '1s').then(async (t) => {
            await new Promise((r) => setTimeout(r, 2100))
            return t
          }),
        ),
        grpc.status.UNAUTHENTICATED,
        /expired/,
      )

      // renewal by the current certificate: same identity works
      const renew = async (csrPem: string, chain: string, key = keyA) =>
        createCertificate(client, {
          csr: csrPem,
          current_certificate_chain: chain,
          csr_signature: sign('sha256', Buffer.from(csrPem), key).toString('base64'),
        })
      const b = await csrFor(ID)
      const renewed = await renew(b.pem, chainA)
      const leafB = new X509Certificate(renewed.certificate_chain![0]!)
      assert.equal(leafB.subjectAltName, `URI:${ID}`)
      assert.notEqual(leafB.serialNumber, new X509Certificate(chainA).serialNumber)

      // ... another identity does not
      await refused(
        renew((await csrFor(other)).pem, chainA),
        grpc.status.PERMISSION_DENIED,
        /the CSR asks for .*\/sa\/admin, but the current certificate authenticates/,
      )
      // a certificate of another identity, from this CA, cannot renew this one's
      const tokenOther = await bootstrapToken(cp, NS, 'admin')
      const o = await csrFor()
      const chainOther = (await createCertificate(client, { csr: o.pem }, tokenOther)).certificate_chain!.join('')
      await refused(
        renew((await csrFor(ID)).pem, chainOther, createPrivateKey(o.keyPem)),
        grpc.status.PERMISSION_DENIED,
        new RegExp(`the CSR asks for ${ID}, but the current certificate authenticates .*/sa/admin`),
      )
      // the chain without its key
      await refused(
        renew((await csrFor(ID)).pem, chainA, createPrivateKey((await csrFor()).keyPem)),
        grpc.status.UNAUTHENTICATED,
        /csr_signature is not/,
      )
      // a certificate for the identity from another CA
      const stranger = await makeLeaf(await makeRoot(), { uris: [ID] })
      await refused(
        renew((await csrFor(ID)).pem, stranger),
        grpc.status.UNAUTHENTICATED,
        /does not lead to a trusted root/,
      )

      const ca = (await (await fetch(`http://${cp.api}/api/v1/ca`)).json()) as { refused: Record<string, number> }
      assert.ok((ca.refused.identity_mismatch ?? 0) >= 3, JSON.stringify(ca.refused))
      assert.ok((ca.refused.bad_token ?? 0) >= 1 && (ca.refused.expired_token ?? 0) >= 1)
      assert.ok((ca.refused.no_credentials ?? 0) >= 1 && (ca.refused.bad_certificate ?? 0) >= 1)
      assert.ok((ca.refused.bad_renewal_signature ?? 0) >= 1)
      const log = cp.stderr()
      assert.match(log, /"msg":"certificate request refused","reason":"identity_mismatch"/)
      assert.ok(!log.includes(good) && !log.includes(forged) && !log.includes(sig!), 'no token in the log')
    } finally {
      client.close()
      await cp.stop()
    }
  })

  test("the token signing key is in the control plane's data directory, mode 0600", () => {
    assert.equal(statSync(join(cp.dataDir, 'token-key')).mode & 0o777, 0o600)
  })
})
