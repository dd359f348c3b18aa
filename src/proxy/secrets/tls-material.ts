/**
 * The certificate, key and trusted roots a CommonTlsContext names, inline or through SDS: `tls_certificates` /
 * `tls_certificate_sds_secret_configs` for the own certificate, `validation_context` /
 * `validation_context_sds_secret_config` / `combined_validation_context` (a default validation context, usually with
 * `match_typed_subject_alt_names`, merged with the trusted CA of an SDS secret, as Istio emits) for the peer check.
 *
 * `resolveTlsMaterial` reads the secrets now; a context built from it is rebuilt by its owner (cluster, listener)
 * when one of `secretNames` changes, so new connections get the new material and open ones keep theirs. A secret
 * that has not arrived yet leaves the material `missing` (the context is warming): connections that need it fail
 * with that reason until it arrives.
 */
import { X509Certificate } from 'node:crypto'
import type { CommonTlsContext, DataSource, Secret } from '../../config/envoy.js'
import type { ConfigIssue } from '../../core/errors.js'
import { parseSpiffeId } from '../../core/spiffe.js'
import { readFileSync } from 'node:fs'
import type { Secret as StoredSecret, SecretStore } from './store.js'

type ValidationContext = NonNullable<CommonTlsContext['validation_context']>
export type SanMatcherConfig = NonNullable<ValidationContext['match_typed_subject_alt_names']>[number]

export interface TlsMaterial {
  /** PEM, leaf first; undefined when the context has no own certificate */
  cert: string | Buffer | undefined
  key: string | Buffer | undefined
  /** trusted roots, PEM; undefined when peers are not verified */
  ca: string | Buffer | undefined
  sanMatchers: readonly SanMatcherConfig[]
  /** the secrets this context waits for (named but not in the store), empty when complete */
  missing: string[]
  /** every SDS secret name the context reads (to subscribe to) */
  secretNames: string[]
  /** whether any part came from SDS (such contexts get the mesh TLS defaults: TLS 1.2 to 1.3) */
  fromSds: boolean
}

/**
 * TLS 1.2 cipher suites allowed on every context (forward-secret AEAD only, Envoy's default list minus the CBC and
 * plain-RSA suites); TLS 1.3 suites are OpenSSL's three defaults (all AEAD).
 */
export const CIPHERS = [
  'TLS_AES_128_GCM_SHA256',
  'TLS_AES_256_GCM_SHA384',
  'TLS_CHACHA20_POLY1305_SHA256',
  'ECDHE-ECDSA-AES128-GCM-SHA256',
  'ECDHE-RSA-AES128-GCM-SHA256',
  'ECDHE-ECDSA-AES256-GCM-SHA384',
  'ECDHE-RSA-AES256-GCM-SHA384',
  'ECDHE-ECDSA-CHACHA20-POLY1305',
  'ECDHE-RSA-CHACHA20-POLY1305',
].join(':')

export function readSource(ds: DataSource, path: string, issues: ConfigIssue[]): Buffer | undefined {
  if (ds.filename !== undefined) {
    try {
      return readFileSync(ds.filename)
    } catch (err) {
      issues.push({ path: `${path}.filename`, message: `cannot read ${ds.filename}: ${(err as Error).message}` })
      return undefined
    }
  }
  if (ds.inline_bytes !== undefined) {
    // proto3 JSON bytes are base64
    if (!/^[A-Za-z0-9+/_-]*={0,2}$/.test(ds.inline_bytes.replace(/\s+/g, ''))) {
      issues.push({ path: `${path}.inline_bytes`, message: 'must be base64' })
      return undefined
    }
    return Buffer.from(ds.inline_bytes, 'base64')
  }
  return Buffer.from(ds.inline_string ?? '')
}

/** An Envoy Secret (bootstrap or ADS) as the store keeps it; problems appended under `path`. */
export function storedSecret(s: Secret, path: string, issues: ConfigIssue[]): StoredSecret | null {
  const before = issues.length
  if (s.tls_certificate !== undefined) {
    const chain = readSource(s.tls_certificate.certificate_chain, `${path}.tls_certificate.certificate_chain`, issues)
    const key = readSource(s.tls_certificate.private_key, `${path}.tls_certificate.private_key`, issues)
    if (issues.length > before || chain === undefined || key === undefined) return null
    return { kind: 'tls_certificate', certificateChainPem: chain.toString(), privateKeyPem: key.toString() }
  }
  const ca = readSource(s.validation_context!.trusted_ca, `${path}.validation_context.trusted_ca`, issues)
  if (ca === undefined) return null
  return { kind: 'validation_context', trustedCaPem: ca.toString() }
}

/** Reads what `c` names now: inline and file parts (their issues go under `path`) and the secrets in `store`. */
export function resolveTlsMaterial(
  c: CommonTlsContext,
  store: SecretStore,
  path: string,
  issues: ConfigIssue[],
): TlsMaterial {
  const out: TlsMaterial = {
    cert: undefined,
    key: undefined,
    ca: undefined,
    sanMatchers: [],
    missing: [],
    secretNames: [],
    fromSds: false,
  }
  const pair = c.tls_certificates?.[0]
  if (pair !== undefined) {
    out.cert = readSource(pair.certificate_chain, `${path}.tls_certificates[0].certificate_chain`, issues)
    out.key = readSource(pair.private_key, `${path}.tls_certificates[0].private_key`, issues)
  }
  const certSds = c.tls_certificate_sds_secret_configs?.[0]
  if (certSds !== undefined) {
    if (pair !== undefined)
      issues.push({
        path: `${path}.tls_certificate_sds_secret_configs`,
        message: 'set either tls_certificates or tls_certificate_sds_secret_configs',
      })
    out.fromSds = true
    out.secretNames.push(certSds.name)
    const s = store.get(certSds.name)
    if (s === undefined) out.missing.push(certSds.name)
    else if (s.kind !== 'tls_certificate')
      issues.push({
        path: `${path}.tls_certificate_sds_secret_configs[0].name`,
        message: `secret "${certSds.name}" is a validation context, not a certificate`,
      })
    else {
      out.cert = s.certificateChainPem
      out.key = s.privateKeyPem
    }
  }

  let validation: ValidationContext | undefined = c.validation_context
  let vpath = `${path}.validation_context`
  let sdsName: string | undefined = c.validation_context_sds_secret_config?.name
  if (c.combined_validation_context !== undefined) {
    validation = c.combined_validation_context.default_validation_context
    vpath = `${path}.combined_validation_context.default_validation_context`
    sdsName = c.combined_validation_context.validation_context_sds_secret_config.name
  }
  const set = [c.validation_context, c.validation_context_sds_secret_config, c.combined_validation_context].filter(
    (x) => x !== undefined,
  ).length
  if (set > 1)
    issues.push({
      path,
      message: 'set one of validation_context, validation_context_sds_secret_config and combined_validation_context',
    })
  if (validation?.trusted_ca !== undefined) out.ca = readSource(validation.trusted_ca, `${vpath}.trusted_ca`, issues)
  out.sanMatchers = validation?.match_typed_subject_alt_names ?? []
  if (sdsName !== undefined) {
    out.fromSds = true
    out.secretNames.push(sdsName)
    const s = store.get(sdsName)
    if (s === undefined) out.missing.push(sdsName)
    else if (s.kind !== 'validation_context')
      issues.push({ path, message: `secret "${sdsName}" is a certificate, not a validation context` })
    else out.ca = s.trustedCaPem
  }
  return out
}

/**
 * The trust domain peers must belong to: that of the SPIFFE IDs the SAN matchers name, else that of the own
 * certificate's SPIFFE ID; null when neither says (then the peer check is the SAN matchers alone).
 */
export function trustDomainOf(m: TlsMaterial): string | null {
  for (const s of m.sanMatchers) {
    if (s.san_type !== 'URI') continue
    const v = s.matcher.exact ?? s.matcher.prefix
    if (v === undefined || !v.startsWith('spiffe://')) continue
    const td = v.slice('spiffe://'.length).split('/')[0]
    if (td !== undefined && td !== '') return td.toLowerCase()
  }
  return ownSpiffeId(m)?.trustDomain ?? null
}

/** The SPIFFE ID of the context's own certificate (its leaf's one URI SAN), or null. */
export function ownSpiffeId(m: TlsMaterial): { id: string; trustDomain: string } | null {
  if (m.cert === undefined) return null
  try {
    const leaf = new X509Certificate(m.cert)
    const uri = /(?:^|, )URI:([^,\s]+)/.exec(leaf.subjectAltName ?? '')?.[1]
    if (uri === undefined) return null
    const p = parseSpiffeId(uri)
    return p.ok ? { id: p.id.id, trustDomain: p.id.trustDomain } : null
  } catch {
    return null
  }
}

/** The SPIFFE IDs named by exact URI matchers, or null when some URI matcher is not exact (or there are none). */
export function exactSpiffeIds(m: TlsMaterial): string[] | null {
  const uris = m.sanMatchers.filter((s) => s.san_type === 'URI')
  if (uris.length === 0) return null
  const out: string[] = []
  for (const s of uris) {
    if (s.matcher.exact === undefined || s.matcher.ignore_case === true) return null
    out.push(s.matcher.exact)
  }
  return out
}

/** Short phrases for `x-loom-reason` (`tls_peer: <phrase>`) by PeerVerifier reason. */
export function peerReasonPhrase(reason: string): string {
  return reason === 'unexpected_spiffe_id' ? 'wrong SAN' : reason
}
