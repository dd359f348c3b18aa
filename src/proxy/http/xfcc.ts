/**
 * `x-forwarded-client-cert` (XFCC), as Envoy's HTTP connection manager writes it: `forward_client_cert_details`
 * decides what happens to a client's header, `set_current_client_cert_details` what the element added for this
 * connection's peer holds. An element is `By=<own URI SAN>;Hash=<sha256 of the peer's DER, hex>` then, as asked,
 * `Cert="<url-encoded PEM>"`, `Chain="<url-encoded PEM chain>"`, `Subject="<subject>"`, `URI=<peer URI SAN>` and one
 * `DNS=<name>` per DNS SAN. Istio's sidecars use APPEND_FORWARD with subject, uri and dns:
 * `By=spiffe://…/sa/server;Hash=…;Subject="";URI=spiffe://…/sa/client`.
 *
 * The peer comes from the connection's one peer record (identity/connection-peer.ts, shared with RBAC), made on
 * first use; the element is built on the connection's first request and kept on that record, so a later request pays
 * two property reads and, for APPEND_FORWARD with a client's header, one string concatenation. SANITIZE (the default)
 * costs nothing when the HTTP/1.1 parser saw no header of that name (`Headers.xfccAbsent`), else one removal.
 */
import type { Socket } from 'node:net'
import type { HttpConnectionManager } from '../../config/envoy.js'
import { connectionPeer } from '../identity/connection-peer.js'
import type { Headers } from './headers.js'

const XFCC = 'x-forwarded-client-cert'

/** What XFCC writes of a verified peer (a ConnectionPeer). */
export interface ClientCert {
  /** the local certificate's URI SAN */
  readonly by: string
  /** sha256 of the peer leaf's DER, lower-case hex */
  readonly hash: string
  readonly subject: string
  readonly uris: readonly string[]
  readonly dns: readonly string[]
  readonly certPem: string
  readonly chainPem: string
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
    const cert = mode === 'SANITIZE' ? null : connectionPeer(socket)
    if (cert === null) {
      // not mTLS (or SANITIZE): a client's own header is never trusted
      if (!headers.xfccAbsent) headers.remove(XFCC)
      return
    }
    if (mode === 'FORWARD_ONLY') return
    let element: string
    if (cert.xfccPolicy === this) element = cert.xfccElement
    else {
      element = this.element(cert)
      cert.xfccPolicy = this
      cert.xfccElement = element
    }
    if (mode === 'SANITIZE_SET') {
      if (!headers.xfccAbsent) headers.remove(XFCC)
      headers.add(XFCC, element)
      return
    }
    // APPEND_FORWARD
    if (headers.xfccAbsent) {
      headers.add(XFCC, element)
      return
    }
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
