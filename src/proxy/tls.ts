/** Turning Envoy TLS contexts into Node secure contexts (downstream side; the upstream side lives with clusters). */
import { readFileSync } from 'node:fs'
import type * as TLS from 'node:tls'
import { tls } from '../core/lazy.js'
import type { CommonTlsContext, DataSource, DownstreamTlsContext } from '../config/envoy.js'
import type { ConfigIssue } from '../core/errors.js'

export function readDataSource(ds: DataSource): Buffer {
  if (ds.filename !== undefined) return readFileSync(ds.filename)
  if (ds.inline_bytes !== undefined) return Buffer.from(ds.inline_bytes, 'base64')
  return Buffer.from(ds.inline_string ?? '')
}

const VERSIONS = { TLS_AUTO: undefined, TLSv1_2: 'TLSv1.2', TLSv1_3: 'TLSv1.3' } as const

export function tlsVersions(c: CommonTlsContext | undefined): {
  minVersion?: TLS.SecureVersion
  maxVersion?: TLS.SecureVersion
} {
  const out: { minVersion?: TLS.SecureVersion; maxVersion?: TLS.SecureVersion } = { minVersion: 'TLSv1.2' }
  const p = c?.tls_params
  const min = p?.tls_minimum_protocol_version
  const max = p?.tls_maximum_protocol_version
  if (min !== undefined && VERSIONS[min] !== undefined) out.minVersion = VERSIONS[min]
  if (max !== undefined && VERSIONS[max] !== undefined) out.maxVersion = VERSIONS[max]
  return out
}

export interface DownstreamTls {
  context: TLS.SecureContext
  alpn: string[]
  requireClientCert: boolean
}

/**
 * The PEM options of a server context (files are read now). tls.Server wants these, not a SecureContext, for the
 * certificate it presents to clients that send no SNI.
 */
export function downstreamContextOptions(cfg: DownstreamTlsContext): TLS.SecureContextOptions {
  const c = cfg.common_tls_context
  const cert = c.tls_certificates?.[0]
  const ca = c.validation_context?.trusted_ca
  return {
    ...(cert === undefined
      ? {}
      : { cert: readDataSource(cert.certificate_chain), key: readDataSource(cert.private_key) }),
    ...(ca === undefined ? {} : { ca: readDataSource(ca) }),
    ...tlsVersions(c),
  }
}

/** Builds a server secure context; problems come back as issues under `path`. */
export function buildDownstreamTls(
  cfg: DownstreamTlsContext,
  defaultAlpn: string[],
  path: string,
  issues: ConfigIssue[],
): DownstreamTls | null {
  const c = cfg.common_tls_context
  const cert = c.tls_certificates?.[0]
  if (cert === undefined) {
    issues.push({ path: `${path}.common_tls_context.tls_certificates`, message: 'a server certificate is required' })
    return null
  }
  try {
    const ca = c.validation_context?.trusted_ca
    const context = tls().createSecureContext(downstreamContextOptions(cfg))
    const requireClientCert = cfg.require_client_certificate === true
    if (requireClientCert && ca === undefined) {
      issues.push({
        path: `${path}.common_tls_context.validation_context.trusted_ca`,
        message: 'require_client_certificate needs a trusted CA',
      })
      return null
    }
    return { context, alpn: c.alpn_protocols ?? defaultAlpn, requireClientCert }
  } catch (err) {
    issues.push({ path: `${path}.common_tls_context`, message: `cannot load TLS material: ${(err as Error).message}` })
    return null
  }
}
