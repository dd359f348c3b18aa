/**
 * `x-forwarded-client-cert` (XFCC), as Envoy's HTTP connection manager writes it: `forward_client_cert_details`
 * decides what happens to a client's header, `set_current_client_cert_details` what the element added for this
 * connection's peer holds. An element is `By=<own URI SAN>;Hash=<sha256 of the peer's DER, hex>` then, as asked,
 * `Cert="<url-encoded PEM>"`, `Chain="<url-encoded PEM chain>"`, `Subject="<subject>"`, `URI=<peer URI SAN>` and one
 * `DNS=<name>` per DNS SAN. Istio's sidecars use APPEND_FORWARD with subject, uri and dns:
 * `By=spiffe://…/sa/server;Hash=…;Subject="";URI=spiffe://…/sa/client`.
 *
 * The peer's part is computed once per connection (when its handshake is verified) and kept with the socket, so a
 * request pays a header lookup and, on mTLS, one string concatenation.
 */
import { createHash, X509Certificate } from 'node:crypto'
import type { Socket } from 'node:net'
import type { PeerCertificate } from 'node:tls'
import type { HttpConnectionManager } from '../../config/envoy.js'
import { parseSubjectAltNames } from '../../core/subject-alt-names.js'
import type { Headers } from './headers.js'

const XFCC = 'x-forwarded-client-cert'

/** What a verified mTLS connection says about its peer (computed once per connection). */
export interface ClientCert {
  /** the local certificate's URI SAN */
  by: string
  /** sha256 of the peer leaf's DER, lower-case hex */
  hash: string
  subject: string
  uris: string[]
  dns: string[]
  certPem: string
  chainPem: string
}

/**
 * Where a socket keeps its peer's part: a symbol property, not a WeakMap, because an HTTP/2 stream sees its socket
 * through the session's proxy object, which forwards property reads to the socket.
 */
const CERT = Symbol('loom.clientCert')
type WithCert = Socket & { [CERT]?: ClientCert }

/** The peer certificate of a connection, when it was an mTLS connection whose client presented one. */
export function clientCertOf(socket: Socket | null): ClientCert | undefined {
  return socket === null ? undefined : (socket as WithCert)[CERT]
}

/** Records the peer of a verified TLS connection (`ownUri`: the local certificate's URI SAN). */
export function recordClientCert(socket: Socket, peer: PeerCertificate | null, ownUri: string | null): void {
  if (peer === null || peer.raw === undefined) return
  const sans = parseSubjectAltNames(peer.subjectaltname ?? '')
  const chain: string[] = []
  let c = peer as PeerCertificate & { issuerCertificate?: PeerCertificate }
  const seen = new Set<unknown>()
  while (c?.raw !== undefined && !seen.has(c) && chain.length < 8) {
    seen.add(c)
    chain.push(new X509Certificate(c.raw).toString())
    if (c.issuerCertificate === c) break
    c = c.issuerCertificate as typeof c
  }
  ;(socket as WithCert)[CERT] = {
    by: ownUri ?? '',
    hash: createHash('sha256').update(peer.raw).digest('hex'),
    subject: rfc2253(peer.subject),
    uris: sans.filter((s) => s.type === 'URI').map((s) => s.value),
    dns: sans.filter((s) => s.type === 'DNS').map((s) => s.value),
    certPem: chain[0] ?? '',
    chainPem: chain.join(''),
  }
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

type Mode = NonNullable<HttpConnectionManager['forward_client_cert_details']>
type Details = NonNullable<HttpConnectionManager['set_current_client_cert_details']>

/** The compiled XFCC behaviour of one connection manager. */
export class XfccPolicy {
  readonly mode: Mode
  private readonly details: Details

  constructor(cfg: HttpConnectionManager) {
    this.mode = cfg.forward_client_cert_details ?? 'SANITIZE'
    this.details = cfg.set_current_client_cert_details ?? {}
  }

  /** Applies the policy to a request that arrived on `socket`. */
  apply(headers: Headers, socket: Socket | null): void {
    const mode = this.mode
    if (mode === 'ALWAYS_FORWARD_ONLY') return
    const cert = mode === 'SANITIZE' ? undefined : clientCertOf(socket)
    if (cert === undefined) {
      // not mTLS (or SANITIZE): a client's own header is never trusted
      headers.remove(XFCC)
      return
    }
    if (mode === 'FORWARD_ONLY') return
    const element = this.element(cert)
    if (mode === 'SANITIZE_SET') {
      headers.remove(XFCC)
      headers.add(XFCC, element)
      return
    }
    // APPEND_FORWARD
    const prev = headers.getAll(XFCC)
    if (prev.length === 0) headers.add(XFCC, element)
    else headers.set(XFCC, `${prev.join(',')},${element}`)
  }

  element(c: ClientCert): string {
    const d = this.details
    let s = `Hash=${c.hash}`
    if (c.by !== '') s = `By=${c.by};${s}`
    if (d.cert === true) s += `;Cert="${encodeURIComponent(c.certPem)}"`
    if (d.chain === true) s += `;Chain="${encodeURIComponent(c.chainPem)}"`
    if (d.subject === true) s += `;Subject="${c.subject.replace(/"/g, '\\"')}"`
    if (d.uri === true) for (const u of c.uris) s += `;URI=${u}`
    if (d.dns === true) for (const n of c.dns) s += `;DNS=${n}`
    return s
  }
}
