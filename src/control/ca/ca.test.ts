/**
 * The certificate authority with real keys and certificates: CSR checks, what a leaf carries, the generated root
 * on disk (modes, reload), a user-supplied root or intermediate (every problem named with its file), rotation with
 * its overlap, and one leaf cross-checked with the openssl binary.
 */
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { X509Certificate } from 'node:crypto'
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { PeerVerifier } from '../../proxy/identity/peer-verifier.js'
import { BACKDATE_MS, type CaOptions, CertificateAuthority, CsrError, caFiles } from './ca.js'
import { makeCsr, makeIntermediate, makeRoot, tamperCsr } from './pki-fixtures.js'
import { CaConfigError } from './signer.js'
import * as x509 from './x509.js'

const REVIEWS = { namespace: 'default', serviceAccount: 'reviews' }
const REVIEWS_ID = 'spiffe://cluster.local/ns/default/sa/reviews'
const HOUR = 3600_000

let base: string
let n = 0
function freshDir(): string {
  return join(base, `ca-${n++}`)
}

before(() => {
  base = mkdtempSync(join(tmpdir(), 'loom-ca-'))
})
after(() => rmSync(base, { recursive: true, force: true }))

async function open(o: Partial<CaOptions> = {}): Promise<CertificateAuthority> {
  return CertificateAuthority.open({ dir: freshDir(), ...o })
}

function refused(fn: () => Promise<unknown>, pattern: RegExp): Promise<void> {
  return assert.rejects(fn, (err: Error) => {
    assert.match(err.message, pattern)
    return true
  })
}

describe('issuing from a CSR', () => {
  let ca: CertificateAuthority
  before(async () => {
    ca = await open()
  })

  test('a CSR whose signature does not verify is refused', async () => {
    const { pem } = await makeCsr()
    await assert.rejects(
      ca.sign(tamperCsr(pem), REVIEWS),
      (err: Error) => err instanceof CsrError && /signature does not verify/.test(err.message),
    )
  })

  test('text that is not a CSR is refused', async () => {
    await refused(
      () => ca.sign('-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n', REVIEWS),
      /cannot be parsed/,
    )
  })

  test('a CSR asking for another SAN and subject gets a leaf with only the entitled SPIFFE ID', async () => {
    const { pem } = await makeCsr({
      name: 'CN=admin, O=kube-system',
      uris: ['spiffe://cluster.local/ns/kube-system/sa/admin', 'spiffe://evil.example/x'],
      dns: ['admin.kube-system.svc'],
    })
    const out = await ca.sign(pem, REVIEWS)
    assert.equal(out.spiffeId, REVIEWS_ID)
    const leaf = new x509.X509Certificate(out.certificatePem)
    const san = leaf.getExtension(x509.SubjectAlternativeNameExtension)
    assert.ok(san !== null)
    assert.deepEqual(
      san.names.items.map((g) => [g.type, g.value]),
      [['url', REVIEWS_ID]],
    )
    assert.equal(san.critical, true, 'an empty subject makes the SAN critical')
    assert.equal(leaf.subject, '')
    assert.equal(new X509Certificate(out.certificatePem).subjectAltName, `URI:${REVIEWS_ID}`)
  })

  test("the leaf's key usages, not a CA, TTL and clock-skew backdating", async () => {
    const { pem } = await makeCsr()
    const t0 = Date.now()
    const out = await ca.sign(pem, REVIEWS)
    const leaf = new x509.X509Certificate(out.certificatePem)
    const bc = leaf.getExtension(x509.BasicConstraintsExtension)!
    assert.equal(bc.ca, false)
    assert.equal(bc.critical, true)
    const ku = leaf.getExtension(x509.KeyUsagesExtension)!
    assert.equal(ku.usages, x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment)
    assert.equal(ku.critical, true)
    const eku = leaf.getExtension(x509.ExtendedKeyUsageExtension)!
    assert.deepEqual(
      [...eku.usages].sort(),
      [x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth].sort(),
    )
    // 24 h from now by default; notBefore 5 minutes back (certificate times have second precision)
    const ttl = leaf.notAfter.getTime() - t0
    assert.ok(Math.abs(ttl - 24 * HOUR) < 5000, `ttl ${ttl}`)
    const back = t0 - leaf.notBefore.getTime()
    assert.ok(Math.abs(back - BACKDATE_MS) < 5000, `backdated ${back}`)
    assert.deepEqual(out.chainPem, [])
    assert.deepEqual(out.trustBundlePem, ca.trustBundle())
    // the leaf verifies under the root
    assert.ok(new X509Certificate(out.certificatePem).verify(new X509Certificate(out.trustBundlePem[0]!).publicKey))
  })

  test('a TTL given per call, and a CA TTL from the options', async () => {
    const { pem } = await makeCsr()
    const out = await ca.sign(pem, REVIEWS, 2 * HOUR)
    assert.ok(Math.abs(out.notAfter.getTime() - Date.now() - 2 * HOUR) < 5000)
    const short = await open({ certTtlMs: HOUR })
    const out2 = await short.sign(pem, REVIEWS)
    assert.ok(Math.abs(out2.notAfter.getTime() - Date.now() - HOUR) < 5000)
  })

  test('serial numbers are random 128-bit values, unique across leaves', async () => {
    const { pem } = await makeCsr()
    const serials = new Set<string>()
    for (let i = 0; i < 40; i++) serials.add((await ca.sign(pem, REVIEWS)).serialNumber)
    assert.equal(serials.size, 40)
    for (const s of serials) assert.ok(s.length <= 32 && s.length >= 24, `serial ${s}`)
    // 40 serials of 128 random bits: some have the top bit set (a positive INTEGER then takes 17 bytes)
    assert.ok([...serials].some((s) => s.length === 32 && Number.parseInt(s[0]!, 16) >= 8))
  })

  test('an identity that would not make a valid SPIFFE ID is refused', async () => {
    const { pem } = await makeCsr()
    await refused(() => ca.sign(pem, { namespace: 'default', serviceAccount: 'a/../b' }), /path characters are limited/)
    await refused(() => ca.sign(pem, { namespace: '', serviceAccount: 'x' }), /empty/)
  })

  test('weak CSR keys are refused, RSA 2048 is accepted', async () => {
    const weak = await makeCsr({ rsaBits: 1024 })
    await refused(() => ca.sign(weak.pem, REVIEWS), /RSASSA-PKCS1-v1_5 1024\) is not accepted/)
    const rsa = await makeCsr({ rsaBits: 2048 })
    assert.equal((await ca.sign(rsa.pem, REVIEWS)).spiffeId, REVIEWS_ID)
  })

  test('the trust domain is the CA option; an invalid one is refused at open', async () => {
    const other = await open({ trustDomain: 'prod.example.com' })
    const { pem } = await makeCsr()
    assert.equal((await other.sign(pem, REVIEWS)).spiffeId, 'spiffe://prod.example.com/ns/default/sa/reviews')
    await refused(() => open({ trustDomain: 'Prod.Example' }), /lower case/)
  })

  test('the leaf never outlives the CA certificate', async () => {
    const root = await makeRoot({ notAfter: new Date(Date.now() + 2 * HOUR) })
    const dir = freshDir()
    const files = writeSupplied(dir, { cert: root.pem, key: root.keyPem })
    const short = await CertificateAuthority.open({ dir: join(dir, 'ca'), supplied: files })
    const { pem } = await makeCsr()
    const out = await short.sign(pem, REVIEWS)
    assert.equal(out.notAfter.getTime(), root.cert.notAfter.getTime())
  })
})

describe('the generated root on disk', () => {
  test('is written with key 0600 and cert 0644, and reloaded identical', async () => {
    const dir = freshDir()
    const first = await CertificateAuthority.open({ dir })
    const files = caFiles(dir)
    assert.equal(statSync(files.key).mode & 0o777, 0o600)
    assert.equal(statSync(files.cert).mode & 0o777, 0o644)
    const key1 = readFileSync(files.key, 'utf8')
    const cert1 = readFileSync(files.cert, 'utf8')
    const root = new x509.X509Certificate(cert1)
    assert.equal(root.publicKey.algorithm.name, 'ECDSA')
    assert.equal((root.publicKey.algorithm as EcKeyAlgorithm).namedCurve, 'P-256')
    assert.equal(root.getExtension(x509.BasicConstraintsExtension)?.ca, true)
    const second = await CertificateAuthority.open({ dir })
    assert.equal(second.rootFingerprint, first.rootFingerprint)
    assert.deepEqual(second.trustBundle(), first.trustBundle())
    assert.equal(readFileSync(files.key, 'utf8'), key1)
    assert.equal(readFileSync(files.cert, 'utf8'), cert1)
    // a leaf from the reloaded CA verifies under the root the first one wrote
    const { pem } = await makeCsr()
    const out = await second.sign(pem, REVIEWS)
    assert.ok(new X509Certificate(out.certificatePem).verify(new X509Certificate(cert1).publicKey))
  })

  test('a key readable by others (0644) is refused with its file name and the fix', async () => {
    const dir = freshDir()
    await CertificateAuthority.open({ dir })
    const { key } = caFiles(dir)
    chmodSync(key, 0o644)
    await assert.rejects(CertificateAuthority.open({ dir }), (err: Error) => {
      assert.ok(err instanceof CaConfigError)
      assert.match(
        err.message,
        new RegExp(`${key}: the private key is accessible by group or others \\(mode 0644\\); run chmod 600`),
      )
      return true
    })
    chmodSync(key, 0o640)
    await refused(() => CertificateAuthority.open({ dir }), /mode 0640/)
  })

  test('an RSA root when asked', async () => {
    const dir = freshDir()
    await CertificateAuthority.open({ dir, keyAlgorithm: 'rsa-2048' })
    const root = new x509.X509Certificate(readFileSync(caFiles(dir).cert, 'utf8'))
    assert.equal(root.publicKey.algorithm.name, 'RSASSA-PKCS1-v1_5')
  })

  test('a lone key or certificate is refused rather than replaced', async () => {
    const dir = freshDir()
    await CertificateAuthority.open({ dir })
    rmSync(caFiles(dir).cert)
    await refused(() => CertificateAuthority.open({ dir }), /root-cert\.pem: missing while .*root-key\.pem exists/)
  })
})

function writeSupplied(
  dir: string,
  o: { cert: string; key: string; chain?: string; keyMode?: number },
): { certFile: string; keyFile: string; chainFile?: string } {
  const certFile = join(dir, 'ca-cert.pem')
  const keyFile = join(dir, 'ca-key.pem')
  mkdirSync(dir, { recursive: true })
  writeFileSync(certFile, o.cert)
  writeFileSync(keyFile, o.key, { mode: o.keyMode ?? 0o600 })
  chmodSync(keyFile, o.keyMode ?? 0o600)
  if (o.chain === undefined) return { certFile, keyFile }
  const chainFile = join(dir, 'cert-chain.pem')
  writeFileSync(chainFile, o.chain)
  return { certFile, keyFile, chainFile }
}

describe('a user-supplied CA', () => {
  test('an intermediate signs leaves whose chain verifies to the enterprise root', async () => {
    const root = await makeRoot({ name: 'CN=Example Corp Root, O=Example Corp' })
    const inter = await makeIntermediate(root, { name: 'CN=Mesh CA, O=Example Corp' })
    const dir = freshDir()
    const files = writeSupplied(dir, { cert: inter.pem, key: inter.keyPem, chain: root.pem })
    const ca = await CertificateAuthority.open({ dir: join(dir, 'ca'), supplied: files })
    assert.equal(ca.rootFingerprint, new X509Certificate(root.pem).fingerprint256)
    const { pem } = await makeCsr()
    const out = await ca.sign(pem, REVIEWS)
    assert.equal(out.chainPem.length, 1)
    assert.equal(new X509Certificate(out.chainPem[0]!).fingerprint256, new X509Certificate(inter.pem).fingerprint256)
    assert.deepEqual(
      out.trustBundlePem.map((p) => new X509Certificate(p).fingerprint256),
      [new X509Certificate(root.pem).fingerprint256],
    )
    const v = new PeerVerifier({ trustDomain: 'cluster.local', roots: out.trustBundlePem })
    const verdict = v.verify([out.certificatePem, ...out.chainPem], { ids: REVIEWS_ID })
    assert.ok(verdict.ok, verdict.ok ? '' : verdict.message)
    // without the intermediate the chain does not reach the root
    const alone = v.verify(out.certificatePem)
    assert.equal(alone.ok ? 'ok' : alone.reason, 'untrusted_root')
    // the openssl binary agrees
    const tmp = mkdtempSync(join(base, 'openssl-'))
    writeFileSync(join(tmp, 'root.pem'), out.trustBundlePem.join(''))
    writeFileSync(join(tmp, 'chain.pem'), out.chainPem.join(''))
    writeFileSync(join(tmp, 'leaf.pem'), out.certificatePem)
    const verify = spawnSync(
      'openssl',
      ['verify', '-CAfile', 'root.pem', '-untrusted', 'chain.pem', '-purpose', 'sslclient', 'leaf.pem'],
      { cwd: tmp, encoding: 'utf8' },
    )
    assert.equal(verify.status, 0, verify.stdout + verify.stderr)
    assert.match(verify.stdout, /leaf\.pem: OK/)
    const server = spawnSync(
      'openssl',
      ['verify', '-CAfile', 'root.pem', '-untrusted', 'chain.pem', '-purpose', 'sslserver', 'leaf.pem'],
      { cwd: tmp, encoding: 'utf8' },
    )
    assert.equal(server.status, 0, server.stdout + server.stderr)
    const text = spawnSync('openssl', ['x509', '-in', 'leaf.pem', '-noout', '-text'], { cwd: tmp, encoding: 'utf8' })
    assert.equal(text.status, 0, text.stderr)
    assert.match(text.stdout, /X509v3 Basic Constraints: critical\s+CA:FALSE/)
    assert.match(text.stdout, /X509v3 Key Usage: critical\s+Digital Signature, Key Encipherment/)
    assert.match(
      text.stdout,
      /X509v3 Extended Key Usage:\s*\n\s+TLS Web Server Authentication, TLS Web Client Authentication/,
    )
    assert.match(
      text.stdout,
      /X509v3 Subject Alternative Name: critical\s+URI:spiffe:\/\/cluster\.local\/ns\/default\/sa\/reviews\n/,
    )
    assert.match(text.stdout, /Issuer: CN ?= ?Mesh CA, O ?= ?Example Corp/)
    // openssl sees exactly one SAN entry
    assert.equal((text.stdout.match(/URI:/g) ?? []).length, 1)
  })

  test('a root given without a chain signs leaves itself', async () => {
    const root = await makeRoot()
    const dir = freshDir()
    const ca = await CertificateAuthority.open({
      dir: join(dir, 'ca'),
      supplied: writeSupplied(dir, { cert: root.pem, key: root.keyPem }),
    })
    const out = await ca.sign((await makeCsr()).pem, REVIEWS)
    assert.deepEqual(out.chainPem, [])
    assert.ok(new X509Certificate(out.certificatePem).verify(new X509Certificate(root.pem).publicKey))
  })

  test('a key that is not the certificate’s is refused, naming both files', async () => {
    const root = await makeRoot()
    const other = await makeRoot()
    const dir = freshDir()
    const files = writeSupplied(dir, { cert: root.pem, key: other.keyPem })
    await refused(
      () => CertificateAuthority.open({ dir: join(dir, 'ca'), supplied: files }),
      new RegExp(`${files.keyFile}: the private key does not match the certificate in ${files.certFile}`),
    )
  })

  test('a supplied key readable by others is refused', async () => {
    const root = await makeRoot()
    const dir = freshDir()
    const files = writeSupplied(dir, { cert: root.pem, key: root.keyPem, keyMode: 0o644 })
    await refused(
      () => CertificateAuthority.open({ dir: join(dir, 'ca'), supplied: files }),
      new RegExp(`${files.keyFile}: the private key is accessible by group or others \\(mode 0644\\)`),
    )
  })

  test('a certificate that is not a CA, cannot sign, or is expired: every problem with its file', async () => {
    const notCa = await makeRoot({
      ca: false,
      keyCertSign: false,
      notAfter: new Date(Date.now() - HOUR),
      notBefore: new Date(Date.now() - 2 * HOUR),
    })
    const dir = freshDir()
    const files = writeSupplied(dir, { cert: notCa.pem, key: notCa.keyPem })
    await assert.rejects(CertificateAuthority.open({ dir: join(dir, 'ca'), supplied: files }), (err: Error) => {
      assert.ok(err instanceof CaConfigError)
      assert.equal(err.problems.length, 3, err.message)
      assert.match(
        err.problems[0]!,
        new RegExp(`^${files.certFile}: .* is not a CA certificate \\(basicConstraints cA is not set\\)`),
      )
      assert.match(
        err.problems[1]!,
        new RegExp(`^${files.certFile}: .* may not sign certificates \\(keyUsage lacks keyCertSign\\)`),
      )
      assert.match(err.problems[2]!, new RegExp(`^${files.certFile}: .* expired on `))
      return true
    })
  })

  test('a CA not valid yet is refused', async () => {
    const future = await makeRoot({ notBefore: new Date(Date.now() + HOUR) })
    const dir = freshDir()
    const files = writeSupplied(dir, { cert: future.pem, key: future.keyPem })
    await refused(
      () => CertificateAuthority.open({ dir: join(dir, 'ca'), supplied: files }),
      /is not valid yet \(notBefore /,
    )
  })

  test('an intermediate without its chain, or with a chain that does not link, is refused', async () => {
    const root = await makeRoot()
    const inter = await makeIntermediate(root)
    const stranger = await makeRoot({ name: 'CN=Someone else' })
    const dir = freshDir()
    const noChain = writeSupplied(dir, { cert: inter.pem, key: inter.keyPem })
    await refused(
      () => CertificateAuthority.open({ dir: join(dir, 'ca'), supplied: noChain }),
      /is not a root \(it is issued by "CN=Test root, O=Example"\); give the certificates above it, up to the root, with --ca-chain/,
    )
    const dir2 = freshDir()
    const wrong = writeSupplied(dir2, { cert: inter.pem, key: inter.keyPem, chain: stranger.pem })
    await refused(
      () => CertificateAuthority.open({ dir: join(dir2, 'ca'), supplied: wrong }),
      new RegExp(`${wrong.chainFile}: "CN=Someone else" \\(chain certificate 1\\) is not the issuer of`),
    )
    const dir3 = freshDir()
    const missing = writeSupplied(dir3, { cert: inter.pem, key: inter.keyPem })
    await refused(
      () =>
        CertificateAuthority.open({
          dir: join(dir3, 'ca'),
          supplied: { ...missing, chainFile: join(dir3, 'nope.pem') },
        }),
      /nope\.pem: cannot read it \(ENOENT\)/,
    )
  })

  test('a certificate file with the chain after the CA certificate is read as both', async () => {
    const root = await makeRoot()
    const inter = await makeIntermediate(root)
    const dir = freshDir()
    const ca = await CertificateAuthority.open({
      dir: join(dir, 'ca'),
      supplied: writeSupplied(dir, { cert: inter.pem + root.pem, key: inter.keyPem }),
    })
    assert.equal(ca.rootFingerprint, new X509Certificate(root.pem).fingerprint256)
  })
})

describe('root rotation', () => {
  test('new leaves come from the new root; both roots are trusted until the overlap ends', async () => {
    let now = Date.now()
    const dir = freshDir()
    const ca = await CertificateAuthority.open({ dir, now: () => now, rotationOverlapMs: 48 * HOUR })
    const oldRoot = ca.trustBundle()[0]!
    const { pem } = await makeCsr()
    const oldLeaf = await ca.sign(pem, REVIEWS)

    assert.equal(ca.nextBundleChange(), null)
    await ca.rotate()
    const bundle = ca.trustBundle()
    assert.equal(bundle.length, 2)
    assert.equal(ca.nextBundleChange(), now + 48 * HOUR)
    assert.notEqual(bundle[0], oldRoot)
    assert.equal(bundle[1], oldRoot)
    const newLeaf = await ca.sign(pem, REVIEWS)
    assert.deepEqual(newLeaf.trustBundlePem, bundle)
    const newRoot = new X509Certificate(bundle[0]!)
    assert.ok(new X509Certificate(newLeaf.certificatePem).verify(newRoot.publicKey))
    assert.ok(!new X509Certificate(newLeaf.certificatePem).verify(new X509Certificate(oldRoot).publicKey))

    // the state is on disk: a restart during the overlap trusts both
    const state = JSON.parse(readFileSync(caFiles(dir).state, 'utf8'))
    assert.equal(state.retiring.length, 1)
    assert.equal(state.retiring[0].fingerprint256, new X509Certificate(oldRoot).fingerprint256)
    const restarted = await CertificateAuthority.open({ dir, now: () => now, rotationOverlapMs: 48 * HOUR })
    assert.deepEqual(restarted.trustBundle(), bundle)

    // both leaves verify against the bundle during the overlap
    const during = new PeerVerifier({ trustDomain: 'cluster.local', roots: restarted.trustBundle() })
    assert.ok(during.verify(oldLeaf.certificatePem, {}, now).ok)
    assert.ok(during.verify(newLeaf.certificatePem, {}, now).ok)

    // after the overlap only the new root is left
    now += 49 * HOUR
    assert.deepEqual(restarted.trustBundle(), [bundle[0]])
    assert.equal(restarted.nextBundleChange(), null)
    const afterOverlap = new PeerVerifier({ trustDomain: 'cluster.local', roots: restarted.trustBundle() })
    const v = afterOverlap.verify(oldLeaf.certificatePem, {}, oldLeaf.notAfter.getTime() - HOUR)
    assert.equal(v.ok ? 'ok' : v.reason, 'untrusted_root')
    const reopened = await CertificateAuthority.open({ dir, now: () => now })
    assert.deepEqual(reopened.rotationState().retiring, [], 'an ended overlap is pruned from the state')
  })

  test('the trust bundle described: the active root, then the previous one with the end of its overlap', async () => {
    const now = Date.now()
    const ca = await CertificateAuthority.open({ dir: freshDir(), now: () => now, rotationOverlapMs: 48 * HOUR })
    const before = ca.trustBundleRoots()
    assert.equal(before.length, 1)
    const old = new X509Certificate(ca.trustBundle()[0]!)
    assert.deepEqual(before[0], {
      subject: old.subject,
      serialNumber: old.serialNumber.toLowerCase(),
      notBefore: new Date(old.validFrom).toISOString(),
      notAfter: new Date(old.validTo).toISOString(),
      fingerprint256: old.fingerprint256,
      trustedUntil: null,
    })
    await ca.rotate()
    const during = ca.trustBundleRoots()
    assert.equal(during.length, 2)
    assert.equal(during[0]!.fingerprint256, ca.rootFingerprint)
    assert.equal(during[0]!.trustedUntil, null)
    assert.notEqual(during[0]!.serialNumber, during[1]!.serialNumber)
    assert.deepEqual({ ...during[1]!, trustedUntil: null }, before[0])
    assert.equal(during[1]!.trustedUntil, new Date(now + 48 * HOUR).toISOString())
    assert.equal(ca.trustBundleRoots(now + 49 * HOUR).length, 1)
  })

  test('moving from the generated root to a supplied CA keeps the generated root for the overlap', async () => {
    const dir = freshDir()
    const generated = await CertificateAuthority.open({ dir: join(dir, 'ca') })
    const genRoot = generated.trustBundle()[0]!
    const root = await makeRoot()
    const inter = await makeIntermediate(root)
    const files = writeSupplied(dir, { cert: inter.pem, key: inter.keyPem, chain: root.pem })
    const supplied = await CertificateAuthority.open({ dir: join(dir, 'ca'), supplied: files })
    assert.deepEqual(
      supplied.trustBundle().map((p) => new X509Certificate(p).fingerprint256),
      [new X509Certificate(root.pem).fingerprint256, new X509Certificate(genRoot).fingerprint256],
    )
    assert.equal(supplied.rotationState().active?.source, 'supplied')
    // a new intermediate under the same root is no rotation: nothing more to trust
    const inter2 = await makeIntermediate(root, { name: 'CN=Mesh CA 2' })
    const files2 = writeSupplied(join(dir, 'v2'), { cert: inter2.pem, key: inter2.keyPem, chain: root.pem })
    const again = await CertificateAuthority.open({ dir: join(dir, 'ca'), supplied: files2 })
    assert.equal(again.trustBundle().length, 2)
    await refused(() => again.rotate(), /user-supplied/)
  })

  test('a rotation interrupted after the new files were written is finished at the next start', async () => {
    const dir = freshDir()
    const ca = await CertificateAuthority.open({ dir })
    const before = ca.rootFingerprint
    const files = caFiles(dir)
    // what a crash between the key's and the certificate's rename leaves: the new key in place, the new cert next
    const next = freshDir()
    const other = await CertificateAuthority.open({ dir: next })
    writeFileSync(files.key, readFileSync(caFiles(next).key), { mode: 0o600 })
    writeFileSync(`${files.cert}.next`, readFileSync(caFiles(next).cert))
    const restarted = await CertificateAuthority.open({ dir })
    assert.equal(restarted.rootFingerprint, other.rootFingerprint)
    assert.equal(restarted.trustBundle().length, 2)
    assert.equal(new X509Certificate(restarted.trustBundle()[1]!).fingerprint256, before)
  })
})

describe('live root rotation', () => {
  test('the next root is trusted first, signs after the propagation, and the previous one leaves after the overlap', async () => {
    let now = Date.now()
    const dir = freshDir()
    const ca = await CertificateAuthority.open({ dir, now: () => now, rotationOverlapMs: 48 * HOUR })
    const oldRoot = ca.trustBundle()[0]!
    const { pem } = await makeCsr()

    await ca.beginRotation(30_000, 2 * HOUR)
    const both = ca.trustBundle()
    assert.equal(both.length, 2)
    assert.equal(both[0], oldRoot, 'the current root still signs')
    assert.equal(ca.pendingActivation(), now + 30_000)
    assert.equal(ca.nextBundleChange(), now + 30_000)
    assert.equal(ca.trustBundleRoots()[1]!.signingFrom, new Date(now + 30_000).toISOString())
    const before = await ca.sign(pem, REVIEWS)
    assert.ok(new X509Certificate(before.certificatePem).verify(new X509Certificate(oldRoot).publicKey))
    assert.deepEqual(before.trustBundlePem, both, 'leaves issued now carry both roots')
    await refused(() => ca.beginRotation(1000), /under way/)
    await refused(() => ca.rotate(), /under way/)

    // a restart during the propagation keeps the pending root
    const restarted = await CertificateAuthority.open({ dir, now: () => now, rotationOverlapMs: 48 * HOUR })
    assert.deepEqual(restarted.trustBundle(), both)
    assert.equal(restarted.pendingActivation(), now + 30_000)

    now += 30_000
    assert.equal(await restarted.activatePending(), true)
    const nextRoot = new X509Certificate(both[1]!)
    assert.equal(restarted.rootFingerprint, nextRoot.fingerprint256)
    assert.deepEqual(restarted.trustBundle(), [both[1], oldRoot])
    assert.equal(restarted.nextBundleChange(), now + 2 * HOUR, 'the overlap asked for, not the default')
    const after = await restarted.sign(pem, REVIEWS)
    assert.ok(new X509Certificate(after.certificatePem).verify(nextRoot.publicKey))
    assert.equal(await restarted.activatePending(), false, 'nothing left to activate')
    const reopened = await CertificateAuthority.open({ dir, now: () => now })
    assert.equal(reopened.rootFingerprint, nextRoot.fingerprint256, 'the new root is the one on disk')
    assert.equal(reopened.rotationState().pending, undefined)

    now += 2 * HOUR + 1
    assert.deepEqual(reopened.trustBundle(), [both[1]])
  })

  test('a server certificate: the URI, DNS and IP SANs asked for, server and client auth, from the signing root', async () => {
    const ca = await open()
    const c = await ca.issueServerCertificate(
      {
        spiffeId: 'spiffe://cluster.local/ns/istio-system/sa/loom-control',
        dnsNames: ['localhost', 'cp.example'],
        ipAddresses: ['127.0.0.1', '::1'],
      },
      HOUR,
    )
    const leaf = new X509Certificate(c.certificatePem)
    assert.equal(
      leaf.subjectAltName,
      'URI:spiffe://cluster.local/ns/istio-system/sa/loom-control, DNS:localhost, DNS:cp.example, IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1',
    )
    assert.equal(leaf.checkHost('cp.example'), 'cp.example')
    assert.equal(leaf.checkIP('127.0.0.1'), '127.0.0.1')
    assert.ok(leaf.verify(new X509Certificate(ca.trustBundle()[0]!).publicKey))
    assert.equal(leaf.ca, false)
    assert.ok(leaf.checkPrivateKey((await import('node:crypto')).createPrivateKey(c.privateKeyPem)))
    assert.ok(Math.abs(c.notAfter.getTime() - Date.now() - HOUR) < 60_000)
  })
})
