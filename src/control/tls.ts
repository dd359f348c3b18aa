/**
 * The control plane's own TLS certificate, for its xDS (gRPC) port and its HTTP API: issued by its CA to itself, or
 * read from the user's files (`--tls-cert`/`--tls-key`).
 *
 * A self-issued certificate carries the control plane's SPIFFE ID (`spiffe://<td>/ns/istio-system/sa/loom-control`,
 * istiod's namespace, Loom's account), DNS SAN `localhost` and the bind hosts that are names, IP SANs 127.0.0.1,
 * ::1 and the bind addresses that are IPs. It is renewed at half its lifetime, and at once when a rotation makes a
 * new root sign: a renewal changes what new connections are served, streams already open stay as they are.
 */
import { isIP } from 'node:net'
import { readFileSync } from 'node:fs'
import { X509Certificate } from 'node:crypto'
import * as grpc from '@grpc/grpc-js'
import { log } from '../core/log.js'
import type { CertificateAuthority, ServerIdentity } from './ca/ca.js'

/** The namespace and service account of the control plane's SPIFFE ID (istiod runs in istio-system). */
export const CONTROL_NAMESPACE = 'istio-system'
export const CONTROL_SERVICE_ACCOUNT = 'loom-control'

export function controlSpiffeId(trustDomain: string): string {
  return `spiffe://${trustDomain}/ns/${CONTROL_NAMESPACE}/sa/${CONTROL_SERVICE_ACCOUNT}`
}

export interface ServingCertificate {
  /** the leaf and the certificates above it up to (not including) the root, PEM */
  certChainPem: string
  privateKeyPem: string
  notAfter: Date
}

export type TlsSource =
  | { kind: 'ca'; ca: CertificateAuthority; hosts: string[] }
  | { kind: 'files'; cert: string; key: string }

/** The SANs of a self-issued certificate for a control plane bound to `hosts`. */
export function serverIdentityFor(trustDomain: string, hosts: readonly string[]): ServerIdentity {
  const dns = new Set(['localhost'])
  const ips = new Set(['127.0.0.1', '::1'])
  for (const h of hosts) {
    const bare = h.replace(/^\[(.*)\]$/, '$1')
    if (bare === '' || bare === '0.0.0.0' || bare === '::') continue
    if (isIP(bare) !== 0) ips.add(bare)
    else dns.add(bare)
  }
  return { spiffeId: controlSpiffeId(trustDomain), dnsNames: [...dns], ipAddresses: [...ips] }
}

export class ControlTls {
  private current: ServingCertificate | null = null
  private trust = ''
  private timer: NodeJS.Timeout | null = null
  private readonly listeners = new Set<() => void>()
  private readonly identityListeners = new Set<grpc.experimental.IdentityCertificateUpdateListener>()
  private readonly caListeners = new Set<grpc.experimental.CaCertificateUpdateListener>()
  private readonly source: TlsSource
  private closed = false

  constructor(source: TlsSource) {
    this.source = source
  }

  /** Issues (or reads) the certificate; a self-issued one is renewed from then on. */
  async start(): Promise<void> {
    await this.refresh()
  }

  get certificate(): ServingCertificate {
    if (this.current === null) throw new Error('the control plane certificate is not issued yet')
    return this.current
  }

  /** Issues a new certificate now (a self-issued one: e.g. a new root signs); the next renewal follows from it. */
  async refresh(): Promise<void> {
    if (this.timer !== null) clearTimeout(this.timer)
    this.timer = null
    if (this.source.kind === 'files') {
      const cert = readFileSync(this.source.cert, 'utf8')
      const key = readFileSync(this.source.key, 'utf8')
      this.current = { certChainPem: cert, privateKeyPem: key, notAfter: new Date(new X509Certificate(cert).validTo) }
      this.trust = cert
    } else {
      const { ca, hosts } = this.source
      const issued = await ca.issueServerCertificate(serverIdentityFor(ca.trustDomain, hosts))
      this.current = {
        certChainPem: [issued.certificatePem, ...issued.chainPem].join(''),
        privateKeyPem: issued.privateKeyPem,
        notAfter: issued.notAfter,
      }
      this.trust = ca.trustBundle().join('')
      const delay = Math.max(1000, (issued.notAfter.getTime() - Date.now()) / 2)
      if (!this.closed) {
        this.timer = setTimeout(() => {
          this.refresh().catch((err: unknown) =>
            log('error', 'control', 'cannot renew the control plane certificate', { error: String(err) }),
          )
        }, delay)
        this.timer.unref()
      }
      log('info', 'control', 'control plane certificate issued', {
        spiffe_id: controlSpiffeId(ca.trustDomain),
        not_after: issued.notAfter.toISOString(),
      })
    }
    this.emit()
  }

  /** The trust bundle changed (a rotation): client certificates are checked against the new one. */
  trustChanged(): void {
    if (this.source.kind !== 'ca') return
    this.trust = this.source.ca.trustBundle().join('')
    this.emit()
  }

  /** Called after each new certificate (the HTTPS server sets its secure context). */
  onChange(fn: () => void): void {
    this.listeners.add(fn)
  }

  /**
   * gRPC server credentials that follow the certificate: a renewal applies to new connections. A client may
   * present a certificate of the mesh (mTLS); none is required (a proxy's first call has only its token).
   */
  grpcCredentials(): grpc.ServerCredentials {
    // the first values are handed over on the next tick: grpc-js subscribes before it registers the server as
    // the watcher of the result, and would miss an answer given at once (the port would refuse every connection)
    const provider: grpc.experimental.CertificateProvider = {
      addIdentityCertificateListener: (l) => {
        this.identityListeners.add(l)
        queueMicrotask(() => l(this.identityUpdate()))
      },
      removeIdentityCertificateListener: (l) => void this.identityListeners.delete(l),
      addCaCertificateListener: (l) => {
        this.caListeners.add(l)
        queueMicrotask(() => l({ caCertificate: Buffer.from(this.trust) }))
      },
      removeCaCertificateListener: (l) => void this.caListeners.delete(l),
    }
    return grpc.experimental.createCertificateProviderServerCredentials(provider, provider, false)
  }

  close(): void {
    this.closed = true
    if (this.timer !== null) clearTimeout(this.timer)
  }

  private identityUpdate(): grpc.experimental.IdentityCertificateUpdate | null {
    const c = this.current
    return c === null ? null : { certificate: Buffer.from(c.certChainPem), privateKey: Buffer.from(c.privateKeyPem) }
  }

  private emit(): void {
    const id = this.identityUpdate()
    for (const l of this.identityListeners) l(id)
    for (const l of this.caListeners) l({ caCertificate: Buffer.from(this.trust) })
    for (const l of this.listeners) l()
  }
}
