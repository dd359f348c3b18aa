/** CA keys: generation, PEM files (mode checked on read), and the WebCrypto form `@peculiar/x509` signs with. */
import { createPrivateKey, type KeyObject, webcrypto } from 'node:crypto'
import { closeSync, fchmodSync, fsyncSync, openSync, renameSync, statSync, writeSync } from 'node:fs'

export type KeyAlgorithm = 'ecdsa-p256' | 'rsa-2048'

export interface SigningKey {
  key: CryptoKey
  /** the algorithm certificates are signed with: ECDSA with SHA-256 (P-256) or SHA-384 (P-384), or RSA PKCS#1 v1.5 */
  signingAlgorithm: Algorithm | EcdsaParams | RsaHashedImportParams
  /** e.g. "ECDSA P-256" */
  label: string
}

const subtle = webcrypto.subtle as SubtleCrypto

/** Generates a key pair for a root CA; returns the pair and the private key as PKCS#8 PEM. */
export async function generateCaKey(alg: KeyAlgorithm): Promise<{ keys: CryptoKeyPair; pem: string }> {
  const params: EcKeyGenParams | RsaHashedKeyGenParams =
    alg === 'rsa-2048'
      ? { name: 'RSASSA-PKCS1-v1_5', modulusLength: 2048, publicExponent: new Uint8Array([1, 0, 1]), hash: 'SHA-256' }
      : { name: 'ECDSA', namedCurve: 'P-256' }
  const keys = (await subtle.generateKey(params, true, ['sign', 'verify'])) as CryptoKeyPair
  const der = Buffer.from(await subtle.exportKey('pkcs8', keys.privateKey))
  return { keys, pem: toPem('PRIVATE KEY', der) }
}

export function toPem(label: string, der: Buffer): string {
  const b64 = der.toString('base64').replace(/(.{64})/g, '$1\n')
  return `-----BEGIN ${label}-----\n${b64}${b64.endsWith('\n') ? '' : '\n'}-----END ${label}-----\n`
}

/** The WebCrypto signing key for a Node private key (PKCS#8, SEC1 EC or PKCS#1 RSA). Throws when unsupported. */
export async function signingKeyOf(key: KeyObject): Promise<SigningKey> {
  const der = key.export({ type: 'pkcs8', format: 'der' })
  if (key.asymmetricKeyType === 'ec') {
    const curve = key.asymmetricKeyDetails?.namedCurve
    const named = curve === 'prime256v1' ? 'P-256' : curve === 'secp384r1' ? 'P-384' : null
    if (named === null) throw new Error(`EC curve ${curve} is not supported (P-256 or P-384)`)
    const hash = named === 'P-256' ? 'SHA-256' : 'SHA-384'
    const k = await subtle.importKey('pkcs8', der, { name: 'ECDSA', namedCurve: named }, false, ['sign'])
    return { key: k, signingAlgorithm: { name: 'ECDSA', hash }, label: `ECDSA ${named}` }
  }
  if (key.asymmetricKeyType === 'rsa') {
    const bits = key.asymmetricKeyDetails?.modulusLength ?? 0
    if (bits < 2048) throw new Error(`an RSA key of ${bits} bits is too weak (2048 or more)`)
    const alg = { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' }
    const k = await subtle.importKey('pkcs8', der, alg, false, ['sign'])
    return { key: k, signingAlgorithm: alg, label: `RSA ${bits}` }
  }
  throw new Error(`${key.asymmetricKeyType} keys are not supported (ECDSA P-256/P-384 or RSA)`)
}

/**
 * Why a private key file may not be used, or null. A CA key readable or writable by anyone but its owner is
 * refused (the fix is `chmod 600`).
 */
export function keyFileModeProblem(file: string): string | null {
  if (process.platform === 'win32') return null
  const mode = statSync(file).mode & 0o777
  if ((mode & 0o077) === 0) return null
  return `${file}: the private key is accessible by group or others (mode ${mode.toString(8).padStart(4, '0')}); run chmod 600 ${file}`
}

/** Parses a private key PEM; the error names the file. */
export function parsePrivateKey(pem: string, file: string): KeyObject {
  try {
    return createPrivateKey(pem)
  } catch (err) {
    throw new Error(`${file}: not a PEM private key (${(err as Error).message})`)
  }
}

/** Writes `text` so that a crash leaves the old or the new content, with `mode` from the start. */
export function writeFileAtomic(file: string, text: string, mode: number): void {
  const tmp = `${file}.tmp`
  const fd = openSync(tmp, 'w', mode)
  try {
    fchmodSync(fd, mode)
    writeSync(fd, text)
    fsyncSync(fd)
  } finally {
    closeSync(fd)
  }
  renameSync(tmp, file)
}
