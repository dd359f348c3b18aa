/**
 * The proxy's identity: it makes its own key (ECDSA P-256; the key never leaves the process), asks the control
 * plane's certificate signing service (src/xds/ca-service.ts) to sign a CSR for it, and installs the result into the
 * proxy's SecretStore as `default` (chain and key) and `ROOTCA` (trust bundle), where TLS contexts find them.
 *
 * The first certificate is authenticated by a bootstrap token (read from a file, so it can be replaced); later ones
 * by the current certificate: the call carries its chain and a signature by its key over the new CSR. Each renewal
 * has a new key. A renewal is due at about half the certificate's remaining lifetime when it was received (±10%
 * jitter, so proxies started together do not renew together); a failed one is retried with back-off, and the proxy
 * keeps the certificate it has until that expires. When the current certificate cannot authenticate (it expired, or
 * the control plane no longer trusts it), the token is tried again.
 *
 * @peculiar/x509 (the CSR builder) is loaded on the first request: a proxy without an identity never loads it.
 */
import { createPrivateKey, createPublicKey, type KeyObject, sign, webcrypto, X509Certificate } from 'node:crypto'
import { readFileSync } from 'node:fs'
import * as grpc from '@grpc/grpc-js'
import { log } from '../../core/log.js'
import { type CertificateServiceClient, certificateServiceClient, createCertificate } from '../../xds/ca-service.js'
import { uriSans } from './peer-verifier.js'
import type { SecretStore } from '../secrets/store.js'

export interface IdentityClientOptions {
  /**
   * host:port of the control plane's xDS port, where the signing service is; several for replicas: a call the one
   * in use cannot take (UNAVAILABLE, DEADLINE_EXCEEDED) makes the next call go to the next
   */
  server: string | readonly string[]
  /** TLS to the control plane (default plain text) */
  credentials?: grpc.ChannelCredentials | undefined
  /** the bootstrap token's file (read at each use) */
  tokenFile: string
  store: SecretStore
  /** the certificate lifetime to ask for, s (default: the CA's) */
  validitySeconds?: number
  /** first retry delay after a failure, ms (default 1000); doubles up to `maxBackoffMs` */
  backoffMs?: number
  maxBackoffMs?: number
}

export interface IdentityStatus {
  spiffeId: string
  serialNumber: string
  /** the issuer's distinguished name, one attribute a line (node:crypto's form) */
  issuer: string
  notBefore: string
  notAfter: string
  /** certificates received since start (the first included) */
  certificates: number
  nextRenewal: string | null
  lastError: string | null
}

interface Current {
  chain: string[]
  key: KeyObject
  spiffeId: string
  serialNumber: string
  issuer: string
  notBefore: number
  notAfter: number
}

const subtle = webcrypto.subtle as SubtleCrypto
const EC = { name: 'ECDSA', namedCurve: 'P-256' } as const

export class IdentityClient {
  private readonly o: IdentityClientOptions
  private client: CertificateServiceClient | null = null
  /** the replica in use, of several `server`s */
  private serverIndex = 0
  private current: Current | null = null
  private timer: NodeJS.Timeout | null = null
  private failures = 0
  private received = 0
  private nextAt: number | null = null
  private lastError: string | null = null
  /** the current certificate was refused as a credential: use the token next */
  private tokenNext = false
  private stopped = false
  private readonly waiters: (() => void)[] = []

  constructor(options: IdentityClientOptions) {
    this.o = options
  }

  start(): void {
    this.schedule(0)
  }

  stop(): void {
    this.stopped = true
    if (this.timer !== null) clearTimeout(this.timer)
    this.client?.close()
  }

  /** Resolves once the proxy has its first certificate. */
  ready(): Promise<void> {
    if (this.current !== null) return Promise.resolve()
    return new Promise((r) => this.waiters.push(r))
  }

  status(): IdentityStatus | null {
    const c = this.current
    if (c === null) return null
    return {
      spiffeId: c.spiffeId,
      serialNumber: c.serialNumber,
      issuer: c.issuer,
      notBefore: new Date(c.notBefore).toISOString(),
      notAfter: new Date(c.notAfter).toISOString(),
      certificates: this.received,
      nextRenewal: this.nextAt === null ? null : new Date(this.nextAt).toISOString(),
      lastError: this.lastError,
    }
  }

  private schedule(delayMs: number): void {
    if (this.stopped) return
    this.nextAt = Date.now() + delayMs
    this.timer = setTimeout(() => void this.renew(), delayMs)
    this.timer.unref()
  }

  /** One attempt; schedules the next (the renewal, or a retry). */
  private async renew(): Promise<void> {
    this.timer = null
    try {
      await this.fetch()
      this.failures = 0
      this.lastError = null
      const c = this.current!
      const now = Date.now()
      const delay = Math.max(0, (c.notAfter - now) * 0.5 * (0.9 + Math.random() * 0.2))
      this.schedule(delay)
    } catch (err) {
      if (this.stopped) return
      this.failures++
      const e = err as grpc.ServiceError
      this.lastError = e.details ?? e.message
      // the current certificate did not authenticate: the token is the way back
      if (this.current !== null && (e.code === grpc.status.UNAUTHENTICATED || e.code === grpc.status.PERMISSION_DENIED))
        this.tokenNext = true
      const base = this.o.backoffMs ?? 1000
      const backoff = Math.min(base * 2 ** (this.failures - 1), this.o.maxBackoffMs ?? 60_000)
      const delay = backoff * (0.9 + Math.random() * 0.2)
      const c = this.current
      log(
        c !== null && c.notAfter > Date.now() ? 'warn' : 'error',
        'identity',
        'certificate request failed; retrying',
        {
          error: this.lastError,
          attempt: this.failures,
          retry_in_ms: Math.round(delay),
          ...(c === null
            ? { identity: 'none yet' }
            : { serving: c.serialNumber, not_after: new Date(c.notAfter).toISOString() }),
        },
      )
      this.schedule(delay)
    }
  }

  private async fetch(): Promise<void> {
    const x509 = await loadX509()
    const keys = (await subtle.generateKey(EC, true, ['sign', 'verify'])) as CryptoKeyPair
    const csr = await x509.Pkcs10CertificateRequestGenerator.create({
      keys,
      signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' },
    })
    const csrPem = csr.toString('pem')
    const keyPem = pem('PRIVATE KEY', Buffer.from(await subtle.exportKey('pkcs8', keys.privateKey)))
    const key = createPrivateKey(keyPem)
    const cur = this.current
    const byCert = cur !== null && !this.tokenNext && cur.notAfter > Date.now() + 1000
    let token: string | undefined
    if (!byCert) {
      try {
        token = readFileSync(this.o.tokenFile, 'utf8').trim()
      } catch (err) {
        throw Object.assign(
          new Error(`cannot read the identity token file ${this.o.tokenFile}: ${(err as Error).message}`),
          {
            code: 0,
          },
        )
      }
    }
    const servers = typeof this.o.server === 'string' ? [this.o.server] : this.o.server
    const client = (this.client ??= certificateServiceClient(servers[this.serverIndex]!, this.o.credentials))
    const res = await createCertificate(
      client,
      {
        csr: csrPem,
        ...(this.o.validitySeconds !== undefined ? { validity_seconds: this.o.validitySeconds } : {}),
        ...(byCert
          ? {
              current_certificate_chain: cur.chain.join(''),
              csr_signature: sign('sha256', Buffer.from(csrPem, 'utf8'), cur.key).toString('base64'),
            }
          : {}),
      },
      token,
    ).catch((err: unknown) => {
      const code = (err as { code?: number }).code
      if (servers.length > 1 && (code === grpc.status.UNAVAILABLE || code === grpc.status.DEADLINE_EXCEEDED)) {
        // this replica is gone or going: the retry asks the next one
        client.close()
        if (this.client === client) this.client = null
        this.serverIndex = (this.serverIndex + 1) % servers.length
      }
      throw err
    })
    const chain = res.certificate_chain ?? []
    const bundle = res.trust_bundle ?? []
    if (chain.length === 0 || bundle.length === 0) throw new Error('the signing service answered without a certificate')
    const leaf = new X509Certificate(chain[0]!)
    const ours = createPublicKey(key).export({ type: 'spki', format: 'der' })
    if (!leaf.publicKey.export({ type: 'spki', format: 'der' }).equals(ours))
      throw new Error('the signing service returned a certificate for another key')
    const next: Current = {
      chain: chain.map((c) => (c.endsWith('\n') ? c : `${c}\n`)),
      key,
      spiffeId: uriSans(leaf.subjectAltName)[0] ?? '',
      serialNumber: leaf.serialNumber.toLowerCase(),
      issuer: leaf.issuer,
      notBefore: Date.parse(leaf.validFrom),
      notAfter: Date.parse(leaf.validTo),
    }
    this.current = next
    this.tokenNext = false
    this.received++
    this.o.store.set('default', {
      kind: 'tls_certificate',
      certificateChainPem: next.chain.join(''),
      privateKeyPem: keyPem,
    })
    this.o.store.set('ROOTCA', {
      kind: 'validation_context',
      trustedCaPem: bundle.map((c) => (c.endsWith('\n') ? c : `${c}\n`)).join(''),
    })
    log('info', 'identity', cur === null ? 'certificate installed' : 'certificate renewed', {
      spiffe_id: next.spiffeId,
      serial: next.serialNumber,
      not_after: new Date(next.notAfter).toISOString(),
      via: byCert ? 'certificate' : 'token',
      ...(cur !== null ? { previous: cur.serialNumber } : {}),
    })
    for (const w of this.waiters.splice(0)) w()
  }
}

/** @peculiar/x509 with the metadata polyfill it needs and Node's WebCrypto, loaded on first use. */
async function loadX509(): Promise<typeof import('@peculiar/x509')> {
  await import('reflect-metadata')
  const x509 = await import('@peculiar/x509')
  x509.cryptoProvider.set(webcrypto as unknown as Crypto)
  return x509
}

function pem(label: string, der: Buffer): string {
  const b64 = der.toString('base64').replace(/(.{64})/g, '$1\n')
  return `-----BEGIN ${label}-----\n${b64}${b64.endsWith('\n') ? '' : '\n'}-----END ${label}-----\n`
}
