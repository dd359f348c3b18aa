/**
 * The certificate signing service's control-plane side (loom.ca.v1.CertificateService/CreateCertificate, on the xDS
 * port): authenticates the caller, decides the identity from that, and has the CA sign the caller's CSR for it.
 *
 * - First certificate: a bootstrap token (tokens.ts) in the call metadata, `authorization: Bearer <token>`; the
 *   identity is the token's namespace and service account.
 * - Renewal: the caller's current certificate chain and a signature by its key over the new CSR's bytes; the chain
 *   must verify against the CA's trust bundle now, and the identity is the one it carries.
 *
 * A CSR whose URI SANs name any other identity is refused (PERMISSION_DENIED), as is a call with no credentials or
 * bad ones (UNAUTHENTICATED) or a CSR that does not parse or verify (INVALID_ARGUMENT). Every refusal is counted by
 * reason and logged, without the token.
 */
import { verify as verifySignature } from 'node:crypto'
import * as grpc from '@grpc/grpc-js'
import { log } from '../../core/log.js'
import { PeerVerifier } from '../../proxy/identity/peer-verifier.js'
import type { CreateCertificateRequest, CreateCertificateResponse } from '../../xds/ca-service.js'
import { type CertificateAuthority, CsrError, type WorkloadIdentity } from './ca.js'
import type { TokenIssuer } from './tokens.js'
import * as x509 from './x509.js'

export type RefusalReason =
  | 'no_credentials'
  | 'bad_token'
  | 'expired_token'
  | 'bad_certificate'
  | 'bad_renewal_signature'
  | 'identity_mismatch'
  | 'bad_csr'

export interface SigningStats {
  issued: number
  renewed: number
  refused: Partial<Record<RefusalReason, number>>
}

class Refusal extends Error {
  readonly code: grpc.status
  readonly reason: RefusalReason
  constructor(code: grpc.status, reason: RefusalReason, message: string) {
    super(message)
    this.code = code
    this.reason = reason
  }
}

export class SigningService {
  private readonly ca: CertificateAuthority
  private readonly tokens: TokenIssuer
  readonly stats: SigningStats = { issued: 0, renewed: 0, refused: {} }

  constructor(ca: CertificateAuthority, tokens: TokenIssuer) {
    this.ca = ca
    this.tokens = tokens
  }

  handlers(): grpc.UntypedServiceImplementation {
    return {
      CreateCertificate: (
        call: grpc.ServerUnaryCall<CreateCertificateRequest, CreateCertificateResponse>,
        callback: grpc.sendUnaryData<CreateCertificateResponse>,
      ) => {
        const auth = call.metadata.get('authorization')[0]
        this.create(call.request, typeof auth === 'string' ? auth : auth?.toString('utf8'), call.getPeer()).then(
          (res) => callback(null, res),
          (err: unknown) => {
            if (err instanceof Refusal) callback({ code: err.code, details: err.message })
            else {
              log('error', 'ca', 'certificate request failed', { error: String(err) })
              callback({ code: grpc.status.INTERNAL, details: 'the certificate could not be issued' })
            }
          },
        )
      },
    }
  }

  /** Authenticates, checks the CSR's identity, signs. Throws a `Refusal` (counted and logged) when it will not. */
  async create(
    req: CreateCertificateRequest,
    authorization: string | undefined,
    peer = '',
  ): Promise<CreateCertificateResponse> {
    let via: 'token' | 'certificate' = 'token'
    try {
      const csr = req.csr ?? ''
      if (csr === '') throw new Refusal(grpc.status.INVALID_ARGUMENT, 'bad_csr', 'the request has no csr')
      let identity: WorkloadIdentity
      if (authorization !== undefined) identity = this.fromToken(authorization)
      else if ((req.current_certificate_chain ?? '') !== '') {
        via = 'certificate'
        identity = this.fromCertificate(csr, req.current_certificate_chain!, req.csr_signature ?? '')
      } else
        throw new Refusal(
          grpc.status.UNAUTHENTICATED,
          'no_credentials',
          'no credentials: send a bootstrap token (metadata authorization: Bearer <token>) or, to renew, the current certificate chain and csr_signature',
        )
      const want = `spiffe://${this.ca.trustDomain}/ns/${identity.namespace}/sa/${identity.serviceAccount}`
      const asked = csrUris(csr)
      const other = asked.find((u) => u !== want)
      if (other !== undefined)
        throw new Refusal(
          grpc.status.PERMISSION_DENIED,
          'identity_mismatch',
          `the CSR asks for ${other}, but the ${via === 'token' ? 'token' : 'current certificate'} authenticates ${want}`,
        )
      const ttlMs =
        req.validity_seconds !== undefined && req.validity_seconds > 0
          ? Math.min(req.validity_seconds * 1000, this.ca.certTtlMs)
          : this.ca.certTtlMs
      let issued: Awaited<ReturnType<CertificateAuthority['sign']>>
      try {
        issued = await this.ca.sign(csr, identity, ttlMs)
      } catch (err) {
        if (err instanceof CsrError) throw new Refusal(grpc.status.INVALID_ARGUMENT, 'bad_csr', err.message)
        throw err
      }
      if (via === 'token') this.stats.issued++
      else this.stats.renewed++
      log('info', 'ca', via === 'token' ? 'certificate issued' : 'certificate renewed', {
        spiffe_id: issued.spiffeId,
        serial: issued.serialNumber,
        not_after: issued.notAfter.toISOString(),
        peer,
      })
      return {
        certificate_chain: [issued.certificatePem, ...issued.chainPem],
        trust_bundle: issued.trustBundlePem,
      }
    } catch (err) {
      if (err instanceof Refusal) {
        this.stats.refused[err.reason] = (this.stats.refused[err.reason] ?? 0) + 1
        log('warn', 'ca', 'certificate request refused', { reason: err.reason, message: err.message, via, peer })
      }
      throw err
    }
  }

  private fromToken(authorization: string): WorkloadIdentity {
    const m = /^Bearer\s+(\S+)$/i.exec(authorization.trim())
    if (m === null)
      throw new Refusal(grpc.status.UNAUTHENTICATED, 'bad_token', 'the authorization metadata must be "Bearer <token>"')
    const v = this.tokens.verify(m[1]!)
    if (!v.ok)
      throw new Refusal(
        grpc.status.UNAUTHENTICATED,
        v.reason === 'expired' ? 'expired_token' : 'bad_token',
        `bootstrap token refused: ${v.message}`,
      )
    return { namespace: v.claims.namespace, serviceAccount: v.claims.serviceAccount }
  }

  private fromCertificate(csr: string, chain: string, signatureB64: string): WorkloadIdentity {
    const verdict = new PeerVerifier({
      trustDomain: this.ca.trustDomain,
      roots: this.ca.trustBundle(),
      skewMs: 0,
    }).verify(chain, { purpose: 'client' })
    if (!verdict.ok)
      throw new Refusal(
        grpc.status.UNAUTHENTICATED,
        'bad_certificate',
        `the current certificate does not authenticate: ${verdict.message.replace(/the peer/g, 'the caller')}`,
      )
    const sig = Buffer.from(signatureB64, 'base64')
    let good = false
    try {
      good = sig.length > 0 && verifySignature('sha256', Buffer.from(csr, 'utf8'), verdict.leaf.publicKey, sig)
    } catch {
      good = false
    }
    if (!good)
      throw new Refusal(
        grpc.status.UNAUTHENTICATED,
        'bad_renewal_signature',
        "csr_signature is not the current certificate's key's signature over the csr",
      )
    const m = /^\/ns\/([^/]+)\/sa\/([^/]+)$/.exec(verdict.id.path)
    if (m === null)
      throw new Refusal(
        grpc.status.PERMISSION_DENIED,
        'bad_certificate',
        `the current certificate's ${verdict.id.id} is not a workload identity (/ns/<ns>/sa/<sa>)`,
      )
    return { namespace: m[1]!, serviceAccount: m[2]! }
  }
}

/** The URI SANs a CSR asks for (none when it asks for none). */
function csrUris(pem: string): string[] {
  let csr: InstanceType<typeof x509.Pkcs10CertificateRequest>
  try {
    csr = new x509.Pkcs10CertificateRequest(pem)
  } catch (err) {
    throw new Refusal(
      grpc.status.INVALID_ARGUMENT,
      'bad_csr',
      `the CSR cannot be parsed (PKCS#10 PEM expected): ${(err as Error).message}`,
    )
  }
  return csr
    .getExtensions('2.5.29.17')
    .flatMap((e) => new x509.SubjectAlternativeNameExtension(e.rawData).names.items)
    .filter((n) => n.type === 'url')
    .map((n) => n.value)
}
