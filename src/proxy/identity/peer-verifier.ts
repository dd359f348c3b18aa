/**
 * Verifies a peer's X.509-SVID for mutual TLS: the chain leads to a root of the trust bundle, every certificate is
 * valid now (with a small allowance for clock skew), the leaf is not a CA, it carries exactly one URI SAN and that
 * is a valid SPIFFE ID of the expected trust domain, and, when the caller expects particular identities, one of
 * them. Each refusal has its own reason (a stable snake_case code, fit for a response flag or `x-loom-reason`) and
 * a sentence saying what was found.
 *
 * Built on Node's `X509Certificate` (OpenSSL): nothing beyond Node is loaded on the proxy side. A verifier is made
 * once per trust bundle and shared; during a root rotation the bundle holds both roots and either chain verifies.
 * The TLS handshake's own checks (Node's `ca` option) may run as well; this one is what knows about SPIFFE.
 */
import { parseSubjectAltNames } from '../../core/subject-alt-names.js'
import { X509Certificate } from 'node:crypto'
import { parseSpiffeId, type SpiffeId, spiffeIdErrorMessage } from '../../core/spiffe.js'

export type PeerRejectReason =
  | 'no_certificate'
  | 'bad_certificate'
  | 'expired'
  | 'not_yet_valid'
  | 'leaf_is_ca'
  | 'wrong_key_usage'
  | 'untrusted_root'
  | 'issuer_not_ca'
  | 'issuer_expired'
  | 'issuer_not_yet_valid'
  | 'chain_too_long'
  | 'no_uri_san'
  | 'multiple_uri_sans'
  | 'invalid_spiffe_id'
  | 'wrong_trust_domain'
  | 'unexpected_spiffe_id'

export type PeerVerdict =
  | { ok: true; id: SpiffeId; leaf: X509Certificate }
  | { ok: false; reason: PeerRejectReason; message: string }

export interface PeerVerifierOptions {
  /** the trust domain peers must belong to */
  trustDomain: string
  /** trusted roots, PEM text (one or more certificates) or parsed; several during a root rotation */
  roots: string | readonly (string | X509Certificate)[]
  /** allowance for clock skew on notBefore and notAfter, ms (default 60 000) */
  skewMs?: number
  /** most certificates between the leaf and the root (default 4) */
  maxIntermediates?: number
}

/** What the caller expects of this peer: any ID of the trust domain (default), or one of these. */
export interface PeerExpectation {
  ids?: ReadonlySet<string> | readonly string[] | string
  /**
   * the peer's side of the connection: a `server` (checked by a client) or a `client` (checked by a server). Its
   * extendedKeyUsage, when it has one, must include serverAuth or clientAuth accordingly.
   */
  purpose?: 'client' | 'server'
}

const EKU = { server: '1.3.6.1.5.5.7.3.1', client: '1.3.6.1.5.5.7.3.2' } as const

const PEM_CERT = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g

/** Every certificate of a PEM text, in order. */
export function parsePemCertificates(pem: string): X509Certificate[] {
  return (pem.match(PEM_CERT) ?? []).map((p) => new X509Certificate(p))
}

/** The certificate chain a TLS peer presented (leaf first), from `tlsSocket.getPeerCertificate(true)`. */
export function chainOfPeerCertificate(detailed: { raw?: Buffer; issuerCertificate?: unknown }): X509Certificate[] {
  const out: X509Certificate[] = []
  const seen = new Set<unknown>()
  let c = detailed as { raw?: Buffer; issuerCertificate?: unknown } | undefined
  while (c !== undefined && c !== null && c.raw !== undefined && !seen.has(c) && out.length < 16) {
    seen.add(c)
    out.push(new X509Certificate(c.raw))
    if (c.issuerCertificate === c) break
    c = c.issuerCertificate as typeof c
  }
  return out
}

/**
 * The URI entries of a certificate's subjectAltName as Node prints it (`URI:a, DNS:b`; a value with a comma or a
 * quote is printed as a JSON string).
 */
export function uriSans(subjectAltName: string | undefined): string[] {
  if (subjectAltName === undefined) return []
  return parseSubjectAltNames(subjectAltName)
    .filter((san) => san.type === 'URI')
    .map((san) => san.value)
}

function describe(c: X509Certificate): string {
  const cn = /(?:^|\n)CN=([^\n]*)/.exec(c.subject)?.[1]
  return cn === undefined ? `serial ${c.serialNumber}` : `"${cn}" (serial ${c.serialNumber})`
}

function issued(issuer: X509Certificate, subject: X509Certificate): boolean {
  // subject.checkIssued(issuer): names, key identifiers and the issuer's keyCertSign; verify: the signature
  return subject.checkIssued(issuer) && subject.verify(issuer.publicKey)
}

export class PeerVerifier {
  readonly trustDomain: string
  private readonly roots: X509Certificate[]
  private readonly skewMs: number
  private readonly maxIntermediates: number

  constructor(options: PeerVerifierOptions) {
    this.trustDomain = options.trustDomain
    const roots = typeof options.roots === 'string' ? [options.roots] : options.roots
    this.roots = roots.flatMap((r) => (typeof r === 'string' ? parsePemCertificates(r) : [r]))
    if (this.roots.length === 0) throw new Error('a trust bundle needs at least one root certificate')
    this.skewMs = options.skewMs ?? 60_000
    this.maxIntermediates = options.maxIntermediates ?? 4
  }

  /**
   * Verifies `chain` (leaf first, then the intermediates the peer sent, in any order; PEM text, DER or parsed).
   * `now` in ms since the epoch.
   */
  verify(
    chain: string | readonly (X509Certificate | Buffer | string)[],
    expect: PeerExpectation = {},
    now = Date.now(),
  ): PeerVerdict {
    let certs: X509Certificate[]
    try {
      certs =
        typeof chain === 'string'
          ? parsePemCertificates(chain)
          : chain.flatMap((c) =>
              c instanceof X509Certificate
                ? [c]
                : typeof c === 'string'
                  ? parsePemCertificates(c)
                  : [new X509Certificate(c)],
            )
    } catch (err) {
      return reject('bad_certificate', `the peer certificate cannot be parsed: ${(err as Error).message}`)
    }
    const leaf = certs[0]
    if (leaf === undefined) return reject('no_certificate', 'the peer presented no certificate')

    const notBefore = Date.parse(leaf.validFrom)
    const notAfter = Date.parse(leaf.validTo)
    if (now + this.skewMs < notBefore)
      return reject('not_yet_valid', `the peer certificate is not valid before ${leaf.validFrom}`)
    if (now - this.skewMs > notAfter) return reject('expired', `the peer certificate expired on ${leaf.validTo}`)
    if (leaf.ca)
      return reject('leaf_is_ca', 'the peer certificate is a CA certificate (basicConstraints cA), not a leaf')
    if (expect.purpose !== undefined) {
      const eku = leaf.keyUsage as string[] | undefined
      if (eku !== undefined && !eku.includes(EKU[expect.purpose]))
        return reject(
          'wrong_key_usage',
          `the peer certificate may not be used by a TLS ${expect.purpose} (extendedKeyUsage lacks ${expect.purpose === 'server' ? 'serverAuth' : 'clientAuth'})`,
        )
    }

    const trusted = this.chainToRoot(leaf, certs.slice(1), now)
    if (trusted !== null) return trusted

    const uris = uriSans(leaf.subjectAltName)
    if (uris.length === 0) return reject('no_uri_san', 'the peer certificate has no URI SAN (no SPIFFE ID)')
    if (uris.length > 1)
      return reject('multiple_uri_sans', `the peer certificate has ${uris.length} URI SANs; an X.509-SVID has one`)
    const parsed = parseSpiffeId(uris[0]!)
    if (!parsed.ok)
      return reject(
        'invalid_spiffe_id',
        `the peer's URI SAN "${uris[0]}" is not a SPIFFE ID: ${spiffeIdErrorMessage(parsed.reason)}`,
      )
    const id = parsed.id
    if (id.trustDomain !== this.trustDomain)
      return reject('wrong_trust_domain', `the peer ${id.id} is not in the trust domain "${this.trustDomain}"`)
    if (id.path === '')
      return reject('invalid_spiffe_id', `the peer's SPIFFE ID ${id.id} names a trust domain, not a workload`)
    const ids = expect.ids
    if (ids !== undefined) {
      const match =
        typeof ids === 'string'
          ? ids === id.id
          : Array.isArray(ids)
            ? ids.includes(id.id)
            : (ids as ReadonlySet<string>).has(id.id)
      if (!match) {
        const wanted = typeof ids === 'string' ? ids : [...(ids as Iterable<string>)].join(', ')
        return reject('unexpected_spiffe_id', `the peer is ${id.id}, expected ${wanted}`)
      }
    }
    return { ok: true, id, leaf }
  }

  /** null when `leaf` chains to a root of the bundle through `pool`; else why not. */
  private chainToRoot(leaf: X509Certificate, pool: X509Certificate[], now: number): PeerVerdict | null {
    let current = leaf
    const used = new Set<X509Certificate>()
    for (let depth = 0; depth <= this.maxIntermediates; depth++) {
      for (const root of this.roots) {
        if (!issued(root, current)) continue
        return this.timeOf(root, now, 'root')
      }
      const next = pool.find((c) => !used.has(c) && c !== current && issued(c, current))
      if (next === undefined || (next.subject === next.issuer && next.verify(next.publicKey))) {
        const top = next ?? current
        return reject(
          'untrusted_root',
          `the peer's chain does not lead to a trusted root of "${this.trustDomain}" (it ends at ${describe(top)}, issued by ${JSON.stringify(top.issuer.replace(/\n/g, ', '))})`,
        )
      }
      if (!next.ca) return reject('issuer_not_ca', `the intermediate ${describe(next)} is not a CA certificate`)
      const bad = this.timeOf(next, now, 'intermediate')
      if (bad !== null) return bad
      used.add(next)
      current = next
    }
    return reject('chain_too_long', `the peer's chain has more than ${this.maxIntermediates} intermediates`)
  }

  private timeOf(c: X509Certificate, now: number, what: string): PeerVerdict | null {
    if (now + this.skewMs < Date.parse(c.validFrom))
      return reject('issuer_not_yet_valid', `the ${what} ${describe(c)} is not valid before ${c.validFrom}`)
    if (now - this.skewMs > Date.parse(c.validTo))
      return reject('issuer_expired', `the ${what} ${describe(c)} expired on ${c.validTo}`)
    return null
  }
}

function reject(reason: PeerRejectReason, message: string): PeerVerdict {
  return { ok: false, reason, message }
}
