/**
 * The JWT filter's keys: JSON Web Key Sets, inline (`local_jwks`) or fetched (`remote_jwks`), and the algorithm
 * allow-list that binds each `alg` to the one key type it may be verified with. Only asymmetric keys are used: RSA
 * keys for RS256/384/512 and PS256/384/512, EC keys of the matching curve for ES256 (P-256), ES384 (P-384) and
 * ES512 (P-521), OKP Ed25519 keys for EdDSA. `oct` keys in a set are ignored, so no HS* token ever verifies (an
 * HS256 token "signed" with an RSA public key finds no key), and `alg: none` is not an algorithm at all.
 *
 * `jose` (signature verification, WebCrypto: the work runs off the event loop) is imported on first use, so a proxy
 * without the filter never loads it.
 */
import type { JWK } from 'jose'

type Jose = typeof import('jose')
let jose: Promise<Jose> | null = null
/** The jose module, imported once. */
export function loadJose(): Promise<Jose> {
  jose ??= import('jose')
  return jose
}

/** alg → the key type (and curve) it needs. */
const ALG_KEY: Record<string, { kty: string; crv?: string }> = {
  RS256: { kty: 'RSA' },
  RS384: { kty: 'RSA' },
  RS512: { kty: 'RSA' },
  PS256: { kty: 'RSA' },
  PS384: { kty: 'RSA' },
  PS512: { kty: 'RSA' },
  ES256: { kty: 'EC', crv: 'P-256' },
  ES384: { kty: 'EC', crv: 'P-384' },
  ES512: { kty: 'EC', crv: 'P-521' },
  EdDSA: { kty: 'OKP', crv: 'Ed25519' },
}
/** Algorithms a token may name that have no key type here (Envoy knows them; Loom never verifies them). */
const SYMMETRIC = new Set(['HS256', 'HS384', 'HS512'])

export function isAsymmetricAlg(alg: string): boolean {
  return ALG_KEY[alg] !== undefined
}
/** An algorithm Envoy's JWT library knows (else "Jwt header [alg] is not supported"). */
export function isKnownAlg(alg: string): boolean {
  return ALG_KEY[alg] !== undefined || SYMMETRIC.has(alg)
}

/** One usable key of a set, with its WebCrypto key per algorithm, imported on first use. */
export class VerifyKey {
  readonly kid: string | undefined
  readonly kty: string
  readonly crv: string | undefined
  readonly alg: string | undefined
  private readonly jwk: JWK
  private readonly imported = new Map<string, Promise<CryptoKey | Uint8Array>>()

  constructor(jwk: JWK) {
    this.jwk = jwk
    this.kid = typeof jwk.kid === 'string' ? jwk.kid : undefined
    this.kty = String(jwk.kty)
    this.crv = typeof jwk.crv === 'string' ? jwk.crv : undefined
    this.alg = typeof jwk.alg === 'string' ? jwk.alg : undefined
  }

  /** whether a token signed with `alg` may be verified with this key */
  fits(alg: string): boolean {
    const want = ALG_KEY[alg]
    if (want === undefined || want.kty !== this.kty) return false
    if (want.crv !== undefined && want.crv !== this.crv) return false
    return this.alg === undefined || this.alg === alg || (alg === 'EdDSA' && this.alg === 'Ed25519')
  }

  key(j: Jose, alg: string): Promise<CryptoKey | Uint8Array> {
    let k = this.imported.get(alg)
    if (k === undefined) {
      k = j.importJWK(this.jwk, alg)
      this.imported.set(alg, k)
    }
    return k
  }
}

/** A parsed key set: its asymmetric signing keys. */
export class KeySet {
  readonly keys: readonly VerifyKey[]

  constructor(keys: VerifyKey[]) {
    this.keys = keys
  }

  /** Parses a JWKS document; throws with a message when it is not one. */
  static parse(text: string): KeySet {
    const doc = JSON.parse(text) as { keys?: unknown }
    if (doc === null || typeof doc !== 'object' || !Array.isArray(doc.keys))
      throw new Error('a JSON Web Key Set is an object with a "keys" list')
    const keys: VerifyKey[] = []
    for (const k of doc.keys as unknown[]) {
      if (k === null || typeof k !== 'object') continue
      const jwk = k as JWK
      if (jwk.kty !== 'RSA' && jwk.kty !== 'EC' && jwk.kty !== 'OKP') continue
      if (jwk.use !== undefined && jwk.use !== 'sig') continue
      keys.push(new VerifyKey(jwk))
    }
    return new KeySet(keys)
  }

  /** The keys a token with this `kid` (or none) and `alg` may be verified with. */
  match(kid: string | undefined, alg: string): VerifyKey[] {
    return this.keys.filter((k) => (kid === undefined || k.kid === kid) && k.fits(alg))
  }
}

/** Where a provider's keys come from. */
export interface KeySource {
  /** the current set (fetched if need be); rejects when a remote set cannot be fetched */
  current(): KeySet | Promise<KeySet>
  /** a fresher set after a token named a key the set lacks (rotation), or null when not refetched */
  refetchForUnknownKey(): Promise<KeySet> | null
}

export class LocalKeys implements KeySource {
  private readonly set: KeySet
  constructor(set: KeySet) {
    this.set = set
  }
  current(): KeySet {
    return this.set
  }
  refetchForUnknownKey(): null {
    return null
  }
}

/** Refetches a remote set for an unknown `kid` at most this often (ms), so unknown kids cannot drive fetches. */
export const UNKNOWN_KID_REFETCH_INTERVAL_MS = 30_000

/**
 * A remote JWKS, fetched directly from its URI (the `cluster` of `http_uri` is not used), cached for
 * `cache_duration`, shared by every config version that names the same URI with the same settings. Concurrent
 * requests share one fetch. A failed fetch is not cached: the next token that needs the set tries again.
 * With `async_fetch`, the set is fetched when the config arrives and an expired set keeps serving while it is
 * refreshed in the background.
 */
export class RemoteKeys implements KeySource {
  readonly uri: string
  private readonly timeoutMs: number
  private readonly cacheMs: number
  private readonly background: boolean
  private set: KeySet | null = null
  private expires = 0
  private inflight: Promise<KeySet> | null = null
  private lastKidRefetch = Number.NEGATIVE_INFINITY
  /** fetches made (for tests and stats) */
  fetches = 0

  constructor(uri: string, timeoutMs: number, cacheMs: number, background: boolean) {
    this.uri = uri
    this.timeoutMs = timeoutMs
    this.cacheMs = cacheMs
    this.background = background
  }

  current(): KeySet | Promise<KeySet> {
    const set = this.set
    if (set !== null && performance.now() < this.expires) return set
    if (set !== null && this.background) {
      this.fetch().catch(() => {})
      return set
    }
    return this.fetch()
  }

  refetchForUnknownKey(): Promise<KeySet> | null {
    const now = performance.now()
    if (now - this.lastKidRefetch < UNKNOWN_KID_REFETCH_INTERVAL_MS) return null
    this.lastKidRefetch = now
    return this.fetch()
  }

  fetch(): Promise<KeySet> {
    this.inflight ??= this.load().finally(() => {
      this.inflight = null
    })
    return this.inflight
  }

  private async load(): Promise<KeySet> {
    this.fetches++
    const res = await fetch(this.uri, { signal: AbortSignal.timeout(this.timeoutMs), redirect: 'error' })
    if (res.status !== 200) {
      await res.body?.cancel()
      throw new Error(`${this.uri} answered ${res.status}`)
    }
    const set = KeySet.parse(await res.text())
    this.set = set
    this.expires = performance.now() + this.cacheMs
    return set
  }
}

const remotes = new Map<string, RemoteKeys>()

/** The shared cache of one remote set (config versions come and go; the fetched keys stay). */
export function remoteKeys(uri: string, timeoutMs: number, cacheMs: number, background: boolean): RemoteKeys {
  const id = `${uri} ${timeoutMs} ${cacheMs} ${background}`
  let r = remotes.get(id)
  if (r === undefined) {
    r = new RemoteKeys(uri, timeoutMs, cacheMs, background)
    remotes.set(id, r)
  }
  return r
}
