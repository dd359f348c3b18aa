/**
 * Bootstrap tokens: what a workload shows the certificate signing service to get its first certificate. A token
 * names a namespace and a service account and expires; the control plane issued it and checks it with a key only it
 * holds, so the identity a certificate carries comes from the token, never from the CSR.
 *
 *   loom1.<base64url(JSON claims)>.<base64url(HMAC-SHA256(key, "loom1." + claims part))>
 *   claims: {"ns": "<namespace>", "sa": "<service account>", "iat": <s>, "exp": <s>, "jti": "<random>"}
 *
 * The key (32 random bytes) is generated on first start in `<data-dir>/token-key` (mode 0600; refused when others
 * can read it). Removing it revokes every token issued so far. Tokens are bearer secrets: nothing logs them.
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto'
import { existsSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { workloadSpiffeId } from '../../core/spiffe.js'
import { keyFileModeProblem, writeFileAtomic } from './keys.js'

const PREFIX = 'loom1'
export const DEFAULT_TOKEN_TTL_MS = 3600_000
/** the longest a token may live */
export const MAX_TOKEN_TTL_MS = 366 * 24 * 3600_000

export interface TokenClaims {
  namespace: string
  serviceAccount: string
  /** ms since the epoch */
  issuedAt: number
  expiresAt: number
  id: string
}

export type TokenRejectReason = 'malformed' | 'bad_signature' | 'bad_claims' | 'expired'

export type TokenVerdict = { ok: true; claims: TokenClaims } | { ok: false; reason: TokenRejectReason; message: string }

export function tokenKeyFile(dataDir: string): string {
  return join(dataDir, 'token-key')
}

const b64url = (b: Buffer | string) => Buffer.from(b).toString('base64url')

export class TokenIssuer {
  readonly #key: Buffer
  private readonly now: () => number

  constructor(key: Buffer, now: () => number = Date.now) {
    if (key.length < 32) throw new Error('a token signing key needs at least 32 bytes')
    this.#key = key
    this.now = now
  }

  /** Loads the signing key from `file`, generating it (0600) when there is none. */
  static open(file: string, now?: () => number): TokenIssuer {
    if (!existsSync(file)) writeFileAtomic(file, `${randomBytes(32).toString('hex')}\n`, 0o600)
    const modeErr = keyFileModeProblem(file)
    if (modeErr !== null) throw new Error(modeErr)
    const key = Buffer.from(readFileSync(file, 'utf8').trim(), 'hex')
    if (key.length < 32) throw new Error(`${file}: not a token signing key (64 hex digits expected)`)
    return new TokenIssuer(key, now)
  }

  /** A token for `namespace`/`serviceAccount`, valid for `ttlMs`. Throws when the names are not valid ones. */
  issue(
    namespace: string,
    serviceAccount: string,
    ttlMs = DEFAULT_TOKEN_TTL_MS,
  ): { token: string; claims: TokenClaims } {
    workloadSpiffeId('cluster.local', namespace, serviceAccount) // throws on names a SPIFFE ID cannot carry
    if (!(ttlMs >= 1000 && ttlMs <= MAX_TOKEN_TTL_MS))
      throw new RangeError(`a token lifetime must be between 1s and ${MAX_TOKEN_TTL_MS / 86_400_000} days`)
    const now = this.now()
    const iat = Math.floor(now / 1000)
    const exp = Math.floor((now + ttlMs) / 1000)
    const id = randomBytes(9).toString('base64url')
    const payload = `${PREFIX}.${b64url(JSON.stringify({ ns: namespace, sa: serviceAccount, iat, exp, jti: id }))}`
    return {
      token: `${payload}.${b64url(this.mac(payload))}`,
      claims: { namespace, serviceAccount, issuedAt: iat * 1000, expiresAt: exp * 1000, id },
    }
  }

  verify(token: string): TokenVerdict {
    const parts = token.split('.')
    if (parts.length !== 3 || parts[0] !== PREFIX || parts[1] === '' || parts[2] === '')
      return reject('malformed', `not a Loom bootstrap token (${PREFIX}.<claims>.<signature> expected)`)
    const sig = Buffer.from(parts[2]!, 'base64url')
    const want = this.mac(`${parts[0]}.${parts[1]}`)
    if (sig.length !== want.length || !timingSafeEqual(sig, want))
      return reject('bad_signature', 'the token was not issued by this control plane (its signature does not verify)')
    let c: Record<string, unknown>
    try {
      c = JSON.parse(Buffer.from(parts[1]!, 'base64url').toString('utf8')) as Record<string, unknown>
    } catch {
      return reject('bad_claims', 'the token claims are not JSON')
    }
    const { ns, sa, iat, exp, jti } = c
    if (
      typeof ns !== 'string' ||
      typeof sa !== 'string' ||
      typeof jti !== 'string' ||
      !Number.isSafeInteger(iat) ||
      !Number.isSafeInteger(exp)
    )
      return reject('bad_claims', 'the token claims lack ns, sa, iat, exp or jti')
    if ((exp as number) * 1000 <= this.now())
      return reject('expired', `the token expired at ${new Date((exp as number) * 1000).toISOString()}`)
    return {
      ok: true,
      claims: {
        namespace: ns,
        serviceAccount: sa,
        issuedAt: (iat as number) * 1000,
        expiresAt: (exp as number) * 1000,
        id: jti,
      },
    }
  }

  private mac(payload: string): Buffer {
    return createHmac('sha256', this.#key).update(payload).digest()
  }
}

function reject(reason: TokenRejectReason, message: string): TokenVerdict {
  return { ok: false, reason, message }
}
