/**
 * Real certificates for tests: roots, intermediates and leaves with whatever extensions a case needs (including
 * the wrong ones), and CSRs. Not used by `loom` itself.
 */
import { randomBytes, webcrypto } from 'node:crypto'
import { toPem } from './keys.js'
import * as x509 from './x509.js'

const EC = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' }
const HOUR = 3600_000

export interface Issuer {
  cert: x509.X509Certificate
  pem: string
  keys: CryptoKeyPair
  /** the private key, PKCS#8 PEM */
  keyPem: string
}

async function keyPair(): Promise<CryptoKeyPair> {
  return (await webcrypto.subtle.generateKey(EC, true, ['sign', 'verify'])) as CryptoKeyPair
}

async function keyPem(keys: CryptoKeyPair): Promise<string> {
  return toPem('PRIVATE KEY', Buffer.from(await webcrypto.subtle.exportKey('pkcs8', keys.privateKey)))
}

export interface CaCertOptions {
  name?: string
  notBefore?: Date
  notAfter?: Date
  /** basicConstraints cA (default true) */
  ca?: boolean
  /** keyUsage keyCertSign (default true) */
  keyCertSign?: boolean
}

function caExtensions(o: CaCertOptions, ski: x509.Extension): x509.Extension[] {
  const usages =
    (o.keyCertSign ?? true)
      ? x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign
      : x509.KeyUsageFlags.digitalSignature
  return [
    new x509.BasicConstraintsExtension(o.ca ?? true, undefined, true),
    new x509.KeyUsagesExtension(usages, true),
    ski,
  ]
}

export async function makeRoot(o: CaCertOptions = {}): Promise<Issuer> {
  const keys = await keyPair()
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: randomBytes(16).toString('hex'),
    name: o.name ?? 'CN=Test root, O=Example',
    notBefore: o.notBefore ?? new Date(Date.now() - HOUR),
    notAfter: o.notAfter ?? new Date(Date.now() + 1000 * HOUR),
    keys,
    signingAlgorithm: EC,
    extensions: caExtensions(o, await x509.SubjectKeyIdentifierExtension.create(keys.publicKey)),
  })
  return { cert, pem: `${cert.toString('pem')}\n`, keys, keyPem: await keyPem(keys) }
}

export async function makeIntermediate(issuer: Issuer, o: CaCertOptions = {}): Promise<Issuer> {
  const keys = await keyPair()
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: randomBytes(16).toString('hex'),
    subject: o.name ?? 'CN=Test intermediate, O=Example',
    issuer: issuer.cert.subjectName,
    notBefore: o.notBefore ?? new Date(Date.now() - HOUR),
    notAfter: o.notAfter ?? new Date(Date.now() + 500 * HOUR),
    publicKey: keys.publicKey,
    signingKey: issuer.keys.privateKey,
    signingAlgorithm: EC,
    extensions: caExtensions(o, await x509.SubjectKeyIdentifierExtension.create(keys.publicKey)),
  })
  return { cert, pem: `${cert.toString('pem')}\n`, keys, keyPem: await keyPem(keys) }
}

export interface LeafOptions {
  uris?: string[]
  dns?: string[]
  notBefore?: Date
  notAfter?: Date
  ca?: boolean
}

/** A leaf signed by `issuer`, with exactly the SANs given. */
export async function makeLeaf(issuer: Issuer, o: LeafOptions = {}): Promise<string> {
  const keys = await keyPair()
  const names = [
    ...(o.uris ?? []).map((value) => ({ type: 'url' as const, value })),
    ...(o.dns ?? []).map((value) => ({ type: 'dns' as const, value })),
  ]
  const extensions: x509.Extension[] = [
    new x509.BasicConstraintsExtension(o.ca ?? false, undefined, true),
    new x509.KeyUsagesExtension(
      o.ca === true
        ? x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.digitalSignature
        : x509.KeyUsageFlags.digitalSignature,
      true,
    ),
  ]
  if (names.length > 0) extensions.push(new x509.SubjectAlternativeNameExtension(names, true))
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: randomBytes(16).toString('hex'),
    subject: '',
    issuer: issuer.cert.subjectName,
    notBefore: o.notBefore ?? new Date(Date.now() - HOUR),
    notAfter: o.notAfter ?? new Date(Date.now() + 24 * HOUR),
    publicKey: keys.publicKey,
    signingKey: issuer.keys.privateKey,
    signingAlgorithm: EC,
    extensions,
  })
  return `${cert.toString('pem')}\n`
}

/** A leaf signed by `issuer` with one URI SAN and the extendedKeyUsage OIDs given. */
export async function makeLeafWithEku(issuer: Issuer, uris: string[], eku: string[]): Promise<string> {
  const keys = await keyPair()
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: randomBytes(16).toString('hex'),
    subject: '',
    issuer: issuer.cert.subjectName,
    notBefore: new Date(Date.now() - HOUR),
    notAfter: new Date(Date.now() + 24 * HOUR),
    publicKey: keys.publicKey,
    signingKey: issuer.keys.privateKey,
    signingAlgorithm: EC,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.ExtendedKeyUsageExtension(eku),
      new x509.SubjectAlternativeNameExtension(
        uris.map((value) => ({ type: 'url' as const, value })),
        true,
      ),
    ],
  })
  return `${cert.toString('pem')}\n`
}

export interface CsrOptions {
  name?: string
  /** URI SANs the CSR asks for */
  uris?: string[]
  dns?: string[]
  /** RSA instead of ECDSA P-256 */
  rsaBits?: number
}

/** A PKCS#10 CSR (PEM) and its private key. */
export async function makeCsr(o: CsrOptions = {}): Promise<{ pem: string; keys: CryptoKeyPair; keyPem: string }> {
  const alg =
    o.rsaBits === undefined
      ? EC
      : {
          name: 'RSASSA-PKCS1-v1_5',
          modulusLength: o.rsaBits,
          publicExponent: new Uint8Array([1, 0, 1]),
          hash: 'SHA-256',
        }
  const keys = (await webcrypto.subtle.generateKey(alg, true, ['sign', 'verify'])) as CryptoKeyPair
  const names = [
    ...(o.uris ?? []).map((value) => ({ type: 'url' as const, value })),
    ...(o.dns ?? []).map((value) => ({ type: 'dns' as const, value })),
  ]
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    name: o.name ?? 'CN=workload',
    keys,
    signingAlgorithm: alg,
    extensions: names.length > 0 ? [new x509.SubjectAlternativeNameExtension(names)] : [],
  })
  return { pem: csr.toString('pem'), keys, keyPem: await keyPem(keys) }
}

/**
 * A CSR made with `makeCsr` (subject CN=workload) whose signed content was changed after signing (CN=Workload):
 * it parses, its signature does not verify.
 */
export function tamperCsr(pem: string): string {
  const der = Buffer.from(pem.replace(/-----[^-]+-----/g, '').replace(/\s+/g, ''), 'base64')
  const at = der.indexOf('workload')
  if (at === -1) throw new Error('the CSR has no CN=workload to change')
  der[at] = 0x57
  return toPem('CERTIFICATE REQUEST', der)
}
