/**
 * The mTLS peer verifier on real certificates: leaves from the control plane's CA and hand-made ones with the
 * wrong properties (each refused with its own reason), a rotation's two roots, and a real TLS handshake on
 * loopback whose peer chain is checked.
 */
import assert from 'node:assert/strict'
import { X509Certificate } from 'node:crypto'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { once } from 'node:events'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { connect, createServer, type TLSSocket } from 'node:tls'
import { after, before, describe, test } from 'node:test'
import { CertificateAuthority } from '../../control/ca/ca.js'
import { type Issuer, makeCsr, makeIntermediate, makeLeaf, makeRoot } from '../../control/ca/pki-fixtures.js'
import { chainOfPeerCertificate, type PeerVerdict, PeerVerifier, uriSans } from './peer-verifier.js'

const TD = 'cluster.local'
const REVIEWS = 'spiffe://cluster.local/ns/default/sa/reviews'
const RATINGS = 'spiffe://cluster.local/ns/default/sa/ratings'
const HOUR = 3600_000

function why(v: PeerVerdict): string {
  return v.ok ? 'ok' : v.reason
}

let root: Issuer
let verifier: PeerVerifier
before(async () => {
  root = await makeRoot()
  verifier = new PeerVerifier({ trustDomain: TD, roots: root.pem })
})

describe('peer verifier', () => {
  test('a valid leaf of the trust domain is accepted, with its SPIFFE ID', async () => {
    const leaf = await makeLeaf(root, { uris: [REVIEWS], dns: ['reviews.default.svc'] })
    const v = verifier.verify(leaf)
    assert.ok(v.ok)
    assert.equal(v.id.id, REVIEWS)
    assert.equal(why(verifier.verify(leaf, { ids: REVIEWS })), 'ok')
    assert.equal(why(verifier.verify(leaf, { ids: [RATINGS, REVIEWS] })), 'ok')
    assert.equal(why(verifier.verify(leaf, { ids: new Set([REVIEWS]) })), 'ok')
    assert.equal(why(verifier.verify([new X509Certificate(leaf)])), 'ok')
  })

  test('wrong trust domain', async () => {
    const leaf = await makeLeaf(root, { uris: ['spiffe://other.example/ns/default/sa/reviews'] })
    const v = verifier.verify(leaf)
    assert.equal(why(v), 'wrong_trust_domain')
    assert.match(v.ok ? '' : v.message, /not in the trust domain "cluster.local"/)
  })

  test('expired, and the clock-skew allowance', async () => {
    const notAfter = new Date(Date.now() - 10 * 60_000)
    const leaf = await makeLeaf(root, { uris: [REVIEWS], notBefore: new Date(Date.now() - 2 * HOUR), notAfter })
    const v = verifier.verify(leaf)
    assert.equal(why(v), 'expired')
    assert.match(v.ok ? '' : v.message, /expired on /)
    // 30 s past notAfter is inside the default 60 s skew
    assert.equal(why(verifier.verify(leaf, {}, notAfter.getTime() + 30_000)), 'ok')
    assert.equal(why(verifier.verify(leaf, {}, notAfter.getTime() + 90_000)), 'expired')
  })

  test('not yet valid', async () => {
    const notBefore = new Date(Date.now() + 10 * 60_000)
    const leaf = await makeLeaf(root, { uris: [REVIEWS], notBefore })
    assert.equal(why(verifier.verify(leaf)), 'not_yet_valid')
    assert.equal(why(verifier.verify(leaf, {}, notBefore.getTime() - 30_000)), 'ok')
  })

  test('two URI SANs', async () => {
    const leaf = await makeLeaf(root, { uris: [REVIEWS, RATINGS] })
    const v = verifier.verify(leaf)
    assert.equal(why(v), 'multiple_uri_sans')
    assert.match(v.ok ? '' : v.message, /has 2 URI SANs/)
  })

  test('no URI SAN, and a URI SAN that is not a SPIFFE ID', async () => {
    assert.equal(why(verifier.verify(await makeLeaf(root, { dns: ['reviews'] }))), 'no_uri_san')
    const bad = verifier.verify(await makeLeaf(root, { uris: ['spiffe://cluster.local/ns/../sa/x'] }))
    assert.equal(why(bad), 'invalid_spiffe_id')
    assert.match(bad.ok ? '' : bad.message, /"\." or "\.\."/)
    assert.equal(why(verifier.verify(await makeLeaf(root, { uris: ['https://reviews.example'] }))), 'invalid_spiffe_id')
    assert.equal(why(verifier.verify(await makeLeaf(root, { uris: ['spiffe://cluster.local'] }))), 'invalid_spiffe_id')
  })

  test('the CA flag on a leaf', async () => {
    const leaf = await makeLeaf(root, { uris: [REVIEWS], ca: true })
    assert.equal(why(verifier.verify(leaf)), 'leaf_is_ca')
  })

  test('an extendedKeyUsage that does not allow the peer its side of the connection', async () => {
    const { makeLeafWithEku } = await import('../../control/ca/pki-fixtures.js')
    const serverOnly = await makeLeafWithEku(root, [REVIEWS], ['1.3.6.1.5.5.7.3.1'])
    assert.equal(why(verifier.verify(serverOnly, { purpose: 'server' })), 'ok')
    const v = verifier.verify(serverOnly, { purpose: 'client' })
    assert.equal(why(v), 'wrong_key_usage')
    assert.match(v.ok ? '' : v.message, /lacks clientAuth/)
    // no extendedKeyUsage at all: any purpose
    assert.equal(why(verifier.verify(await makeLeaf(root, { uris: [REVIEWS] }), { purpose: 'client' })), 'ok')
  })

  test('the wrong SAN for the destination', async () => {
    const leaf = await makeLeaf(root, { uris: [RATINGS] })
    const v = verifier.verify(leaf, { ids: REVIEWS })
    assert.equal(why(v), 'unexpected_spiffe_id')
    assert.equal(v.ok ? '' : v.message, `the peer is ${RATINGS}, expected ${REVIEWS}`)
    assert.equal(why(verifier.verify(leaf, { ids: new Set([REVIEWS]) })), 'unexpected_spiffe_id')
  })

  test('signed by an unknown root', async () => {
    const stranger = await makeRoot({ name: 'CN=Test root, O=Example' })
    const leaf = await makeLeaf(stranger, { uris: [REVIEWS] })
    const v = verifier.verify(leaf)
    assert.equal(why(v), 'untrusted_root')
    assert.match(v.ok ? '' : v.message, /does not lead to a trusted root of "cluster.local"/)
    // presenting the stranger's root in the chain does not help
    assert.equal(why(verifier.verify([leaf, stranger.pem])), 'untrusted_root')
  })

  test('intermediates: in the chain it verifies; not a CA, or expired, it does not', async () => {
    const inter = await makeIntermediate(root)
    const leaf = await makeLeaf(inter, { uris: [REVIEWS] })
    assert.equal(why(verifier.verify([leaf, inter.pem])), 'ok')
    assert.equal(why(verifier.verify(leaf + inter.pem + root.pem)), 'ok')
    assert.equal(why(verifier.verify([leaf])), 'untrusted_root')
    const notCa = await makeIntermediate(root, { ca: false })
    assert.equal(why(verifier.verify([await makeLeaf(notCa, { uris: [REVIEWS] }), notCa.pem])), 'issuer_not_ca')
    const old = await makeIntermediate(root, {
      notBefore: new Date(Date.now() - 3 * HOUR),
      notAfter: new Date(Date.now() - HOUR),
    })
    const v = verifier.verify([await makeLeaf(old, { uris: [REVIEWS] }), old.pem])
    assert.equal(why(v), 'issuer_expired')
  })

  test('an intermediate that may not sign certificates (no keyCertSign) does not chain', async () => {
    const noSign = await makeIntermediate(root, { keyCertSign: false })
    assert.equal(why(verifier.verify([await makeLeaf(noSign, { uris: [REVIEWS] }), noSign.pem])), 'untrusted_root')
  })

  test('no certificate, and bytes that are not one', () => {
    assert.equal(why(verifier.verify([])), 'no_certificate')
    assert.equal(why(verifier.verify('')), 'no_certificate')
    assert.equal(why(verifier.verify([Buffer.from('not a certificate')])), 'bad_certificate')
  })

  test('every reason has its own message', async () => {
    const leafExpired = await makeLeaf(root, {
      uris: [REVIEWS],
      notBefore: new Date(Date.now() - 2 * HOUR),
      notAfter: new Date(Date.now() - HOUR),
    })
    const leafFuture = await makeLeaf(root, { uris: [REVIEWS], notBefore: new Date(Date.now() + HOUR) })
    const verdicts = [
      verifier.verify(leafExpired),
      verifier.verify(leafFuture),
      verifier.verify(await makeLeaf(root, { uris: [REVIEWS, RATINGS] })),
      verifier.verify(await makeLeaf(root, { uris: [REVIEWS], ca: true })),
      verifier.verify(await makeLeaf(root, { uris: [RATINGS] }), { ids: REVIEWS }),
    ]
    const reasons = verdicts.map(why)
    assert.equal(new Set(reasons).size, reasons.length)
    const messages = verdicts.map((v) => (v.ok ? '' : v.message))
    assert.equal(new Set(messages).size, messages.length)
  })
})

describe('peer verifier during a root rotation', () => {
  let base: string
  before(() => {
    base = mkdtempSync(join(tmpdir(), 'loom-verify-'))
  })
  after(() => rmSync(base, { recursive: true, force: true }))

  test('valid with either root during the overlap, the old one refused after it', async () => {
    let now = Date.now()
    const ca = await CertificateAuthority.open({ dir: join(base, 'ca'), now: () => now, rotationOverlapMs: 30 * HOUR })
    const { pem } = await makeCsr()
    const oldLeaf = await ca.sign(pem, { namespace: 'default', serviceAccount: 'reviews' })
    await ca.rotate()
    const newLeaf = await ca.sign(pem, { namespace: 'default', serviceAccount: 'reviews' })
    const during = new PeerVerifier({ trustDomain: TD, roots: newLeaf.trustBundlePem })
    assert.equal(why(during.verify(oldLeaf.certificatePem, { ids: REVIEWS }, now)), 'ok')
    assert.equal(why(during.verify(newLeaf.certificatePem, { ids: REVIEWS }, now)), 'ok')
    // the old root alone does not trust the new leaf; the new root alone does not trust the old leaf
    const oldOnly = new PeerVerifier({ trustDomain: TD, roots: oldLeaf.trustBundlePem })
    assert.equal(why(oldOnly.verify(newLeaf.certificatePem, {}, now)), 'untrusted_root')
    now += 31 * HOUR
    const afterOverlap = new PeerVerifier({ trustDomain: TD, roots: ca.trustBundle() })
    assert.equal(ca.trustBundle().length, 1)
    // checked at a time the old leaf itself is still valid: only the ended overlap refuses it
    const t = oldLeaf.notAfter.getTime() - HOUR
    assert.equal(why(afterOverlap.verify(oldLeaf.certificatePem, {}, t)), 'untrusted_root')
    assert.equal(why(afterOverlap.verify(newLeaf.certificatePem, {}, t)), 'ok')
  })
})

describe('peer verifier on a TLS connection', () => {
  test("both sides of a loopback mTLS handshake check the other's SPIFFE ID", async () => {
    const base = mkdtempSync(join(tmpdir(), 'loom-mtls-'))
    const root = await makeRoot()
    const inter = await makeIntermediate(root)
    writeFileSync(join(base, 'cert.pem'), inter.pem)
    writeFileSync(join(base, 'key.pem'), inter.keyPem, { mode: 0o600 })
    writeFileSync(join(base, 'chain.pem'), root.pem)
    const ca = await CertificateAuthority.open({
      dir: join(base, 'ca'),
      supplied: {
        certFile: join(base, 'cert.pem'),
        keyFile: join(base, 'key.pem'),
        chainFile: join(base, 'chain.pem'),
      },
    })
    rmSync(base, { recursive: true, force: true })
    const identity = async (serviceAccount: string) => {
      const csr = await makeCsr()
      const out = await ca.sign(csr.pem, { namespace: 'default', serviceAccount })
      return { key: csr.keyPem, cert: out.certificatePem + out.chainPem.join(''), ca: out.trustBundlePem }
    }
    const reviews = await identity('reviews')
    const productpage = await identity('productpage')
    const ratings = await identity('ratings')
    const peers = new PeerVerifier({ trustDomain: TD, roots: reviews.ca })
    const PRODUCTPAGE = 'spiffe://cluster.local/ns/default/sa/productpage'
    const server = createServer({ ...reviews, requestCert: true, rejectUnauthorized: true }, (sock) => {
      const v = peers.verify(chainOfPeerCertificate(sock.getPeerCertificate(true)), {
        ids: PRODUCTPAGE,
        purpose: 'client',
      })
      sock.end(v.ok ? `hello ${v.id.id}` : `refused: ${v.reason}`)
    })
    server.listen(0, '127.0.0.1')
    await once(server, 'listening')
    const { port } = server.address() as { port: number }
    try {
      const call = async (client: typeof reviews) => {
        // no hostname check: the server's identity is its SPIFFE ID, checked below
        const sock = connect({ host: '127.0.0.1', port, ...client, checkServerIdentity: () => undefined })
        await once(sock, 'secureConnect')
        const chain = chainOfPeerCertificate((sock as TLSSocket).getPeerCertificate(true))
        assert.ok(chain.length >= 2, 'the leaf and the intermediate')
        const v = peers.verify(chain, { ids: REVIEWS, purpose: 'server' })
        let text = ''
        sock.setEncoding('utf8')
        for await (const chunk of sock) text += chunk
        return { server: why(v), text }
      }
      assert.deepEqual(await call(productpage), { server: 'ok', text: `hello ${PRODUCTPAGE}` })
      assert.deepEqual(await call(ratings), { server: 'ok', text: 'refused: unexpected_spiffe_id' })
    } finally {
      server.close()
    }
  })

  test("uriSans reads the URI entries of Node's subjectAltName text, quoted ones included", () => {
    assert.deepEqual(uriSans(undefined), [])
    assert.deepEqual(uriSans('DNS:a, URI:spiffe://td/x, DNS:b'), ['spiffe://td/x'])
    assert.deepEqual(uriSans('URI:"spiffe://td/a, b", URI:spiffe://td/c'), ['spiffe://td/a, b', 'spiffe://td/c'])
  })
})
