/**
 * The verified TLS peer of a downstream connection, as one record per connection that both the RBAC filter
 * (`authenticated` principals) and x-forwarded-client-cert read.
 *
 * - A peer exists when the socket is a TLS socket whose client presented a certificate that verified
 *   (`authorized`): the listener destroys a connection whose certificate its chain refuses, so any such socket
 *   left is one the listener accepted. Plain text and TLS without a client certificate have none (null).
 * - The record is made on first use and kept on the socket under a symbol (not a WeakMap: an HTTP/2 stream sees
 *   its socket through the session's proxy object, which forwards property reads and writes to the socket but is
 *   another key), so each later request pays one property read. What only XFCC needs (the DER's hash, the PEMs,
 *   the local certificate's URI) is computed the first time XFCC asks.
 */
import { createHash, X509Certificate } from 'node:crypto'
import type { Socket } from 'node:net'
import type { DetailedPeerCertificate, PeerCertificate } from 'node:tls'
import { parseSubjectAltNames } from '../../core/subject-alt-names.js'

const PEER = Symbol('loom.connectionPeer')

interface TlsLike {
  authorized?: boolean
  getPeerCertificate?(detailed: true): DetailedPeerCertificate | null
  getCertificate?(): PeerCertificate | object | null
  [PEER]?: ConnectionPeer | null
}

/** What a verified client certificate says (the names RBAC matches, and what XFCC writes). */
export class ConnectionPeer {
  /** URI SANs, in certificate order */
  readonly uris: string[]
  /** DNS SANs */
  readonly dns: string[]
  /** the subject in RFC 2253 form (most significant last, special characters escaped), `''` when empty */
  readonly subject: string
  /**
   * The x-forwarded-client-cert element built for this peer and the policy (one per connection manager) that built
   * it: requests on the connection after the first reuse the string (http/xfcc.ts).
   */
  xfccPolicy: object | null = null
  xfccElement = ''
  readonly #cert: DetailedPeerCertificate
  readonly #socket: TlsLike
  #hash: string | undefined
  #chain: string[] | undefined
  #by: string | undefined

  constructor(cert: DetailedPeerCertificate, socket: TlsLike) {
    this.#cert = cert
    this.#socket = socket
    const uris: string[] = []
    const dns: string[] = []
    for (const san of parseSubjectAltNames(cert.subjectaltname ?? '')) {
      if (san.type === 'URI') uris.push(san.value)
      else if (san.type === 'DNS') dns.push(san.value)
    }
    this.uris = uris
    this.dns = dns
    this.subject = rfc2253(cert.subject)
  }

  /** sha256 of the peer leaf's DER, lower-case hex */
  get hash(): string {
    this.#hash ??= createHash('sha256').update(this.#cert.raw).digest('hex')
    return this.#hash
  }

  /** the leaf as PEM */
  get certPem(): string {
    return this.#pems()[0] ?? ''
  }

  /** the presented chain as PEM, leaf first */
  get chainPem(): string {
    return this.#pems().join('')
  }

  /** the local certificate's URI SAN (`''` without one) */
  get by(): string {
    if (this.#by === undefined) {
      const own = this.#socket.getCertificate?.() as PeerCertificate | null | undefined
      const uri = parseSubjectAltNames(own?.subjectaltname ?? '').find((s) => s.type === 'URI')
      this.#by = uri?.value ?? ''
    }
    return this.#by
  }

  #pems(): string[] {
    if (this.#chain !== undefined) return this.#chain
    const chain: string[] = []
    const seen = new Set<unknown>()
    let c: DetailedPeerCertificate | undefined = this.#cert
    while (c?.raw !== undefined && !seen.has(c) && chain.length < 8) {
      seen.add(c)
      chain.push(new X509Certificate(c.raw).toString())
      if (c.issuerCertificate === c) break
      c = c.issuerCertificate
    }
    this.#chain = chain
    return chain
  }
}

/** The verified peer of a connection (made on first use, then kept on the socket); null when it has none. */
export function connectionPeer(socket: Socket | null): ConnectionPeer | null {
  if (socket === null) return null
  const s = socket as unknown as TlsLike
  const known = s[PEER]
  if (known !== undefined) return known
  let peer: ConnectionPeer | null = null
  if (s.authorized === true && typeof s.getPeerCertificate === 'function') {
    const cert = s.getPeerCertificate(true)
    if (cert !== null && typeof cert === 'object' && cert.raw !== undefined) peer = new ConnectionPeer(cert, s)
  }
  s[PEER] = peer
  return peer
}

/** Node's subject object as an RFC 2253 string (most significant last, as OpenSSL prints it), `""` when empty. */
function rfc2253(subject: PeerCertificate['subject'] | undefined): string {
  if (subject === undefined || subject === null) return ''
  const parts: string[] = []
  for (const [k, v] of Object.entries(subject)) {
    for (const one of Array.isArray(v) ? v : [v]) parts.push(`${k}=${String(one).replace(/([,+"\\<>;])/g, '\\$1')}`)
  }
  return parts.reverse().join(',')
}
