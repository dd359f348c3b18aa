import assert from 'node:assert/strict'
import { mkdtempSync, statSync, writeFileSync, chmodSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, it } from 'node:test'
import { TokenIssuer, tokenKeyFile } from './tokens.js'

const KEY = Buffer.alloc(32, 7)

describe('bootstrap tokens', () => {
  it('verifies a token it issued and gives back its claims', () => {
    const t = new TokenIssuer(KEY, () => 1_700_000_000_000)
    const { token, claims } = t.issue('shop', 'bookinfo-reviews', 3600_000)
    const v = t.verify(token)
    assert.ok(v.ok)
    assert.deepEqual(v.claims, claims)
    assert.equal(v.claims.namespace, 'shop')
    assert.equal(v.claims.serviceAccount, 'bookinfo-reviews')
    assert.equal(v.claims.expiresAt, 1_700_000_000_000 + 3600_000)
  })

  it('refuses an expired token', () => {
    let now = 1_700_000_000_000
    const t = new TokenIssuer(KEY, () => now)
    const { token } = t.issue('default', 'sa', 60_000)
    now += 60_000
    const v = t.verify(token)
    assert.equal(v.ok, false)
    assert.equal(!v.ok && v.reason, 'expired')
  })

  it('refuses a token signed by another key', () => {
    const other = new TokenIssuer(Buffer.alloc(32, 8))
    const v = new TokenIssuer(KEY).verify(other.issue('default', 'sa').token)
    assert.equal(!v.ok && v.reason, 'bad_signature')
  })

  it('refuses tampered claims (another service account, a later expiry)', () => {
    const t = new TokenIssuer(KEY)
    const [p, c, s] = t.issue('default', 'sa').token.split('.')
    const claims = JSON.parse(Buffer.from(c!, 'base64url').toString()) as Record<string, unknown>
    for (const change of [{ sa: 'admin' }, { ns: 'kube-system' }, { exp: (claims.exp as number) + 86_400 }]) {
      const forged = `${p}.${Buffer.from(JSON.stringify({ ...claims, ...change })).toString('base64url')}.${s}`
      const v = t.verify(forged)
      assert.equal(!v.ok && v.reason, 'bad_signature', JSON.stringify(change))
    }
    // a signature of the right length that is not the token's
    const sig = Buffer.from(s!, 'base64url')
    sig[0]! ^= 1
    assert.equal(!t.verify(`${p}.${c}.${sig.toString('base64url')}`).ok, true)
  })

  it('refuses what is not a token', () => {
    const t = new TokenIssuer(KEY)
    for (const bad of ['', 'abc', 'loom1..', 'jwt.a.b', 'loom1.a.b.c'])
      assert.equal(!t.verify(bad).ok && (t.verify(bad) as { reason: string }).reason, 'malformed', bad)
  })

  it('refuses to issue for names a SPIFFE ID cannot carry, or an unreasonable lifetime', () => {
    const t = new TokenIssuer(KEY)
    assert.throws(() => t.issue('', 'sa'))
    assert.throws(() => t.issue('ns', 'a/b'))
    assert.throws(() => t.issue('ns', 'sa', 0))
  })

  it('keeps its key in a 0600 file, the same across restarts, and refuses a key others can read', () => {
    const dir = mkdtempSync(join(tmpdir(), 'loom-tokens-'))
    const file = tokenKeyFile(dir)
    const a = TokenIssuer.open(file)
    assert.equal(statSync(file).mode & 0o777, 0o600)
    const { token } = a.issue('default', 'sa')
    assert.ok(TokenIssuer.open(file).verify(token).ok)
    chmodSync(file, 0o644)
    assert.throws(() => TokenIssuer.open(file), /chmod 600/)
    writeFileSync(join(dir, 'short'), 'abcd\n', { mode: 0o600 })
    assert.throws(() => TokenIssuer.open(join(dir, 'short')), /not a token signing key/)
  })
})
