/**
 * Upstream TLS (UpstreamTlsContext) as Node `tls.connect` options, with Envoy's semantics:
 * - the peer's chain is verified only when validation_context.trusted_ca is set;
 * - the certificate is not matched against the SNI or host name; match_typed_subject_alt_names, when set, is the
 *   name check (at least one SAN of the given type must match one matcher);
 * - SNI is sent only when `sni` is set; ALPN defaults to h2 or http/1.1 by the cluster's protocol;
 * - TLS versions default to 1.2 .. 1.2 for clients (Envoy's defaults), 1.2 .. 1.3 for contexts with SDS secrets;
 * - certificate and trusted CA may come from SDS secrets (`resolveTlsMaterial`); with a trust domain known, the
 *   server is checked as an X.509-SVID by PeerVerifier, and a refusal names its reason (`tls_peer: wrong SAN`).
 * Files are read once, at config load; a SecureContext is built then too, which also checks that the PEM parses and
 * that key and certificate match, and spares the data path a new context per connection.
 */
import { parseSubjectAltNames } from '../../core/subject-alt-names.js'
import { readFileSync } from 'node:fs'
import { isIPv6 } from 'node:net'
import type { ConnectionOptions, PeerCertificate } from 'node:tls'
import { tls } from '../../core/lazy.js'
import { compileFullMatch } from '../route/regex.js'
import type { DataSource, StringMatcher, UpstreamTlsContext } from '../../config/envoy.js'
import type { ConfigIssue } from '../../core/errors.js'
import { chainOfPeerCertificate, PeerVerifier } from '../identity/peer-verifier.js'
import { SecretStore } from '../secrets/store.js'
import {
  CIPHERS,
  exactSpiffeIds,
  peerReasonPhrase,
  resolveTlsMaterial,
  type TlsMaterial,
  trustDomainOf,
} from '../secrets/tls-material.js'

type TlsVersion = 'TLSv1.2' | 'TLSv1.3'
type SanType = 'DNS' | 'URI' | 'EMAIL' | 'IP_ADDRESS'

/** Reads a DataSource; on failure records an issue at `path` and returns undefined. */
export function readDataSource(source: DataSource, path: string, issues: ConfigIssue[]): Buffer | undefined {
  if (source.filename !== undefined) {
    try {
      return readFileSync(source.filename)
    } catch (err) {
      issues.push({ path: `${path}.filename`, message: `cannot read ${source.filename}: ${errorText(err)}` })
      return undefined
    }
  }
  if (source.inline_string !== undefined) return Buffer.from(source.inline_string)
  if (source.inline_bytes !== undefined) {
    // proto3 JSON bytes are base64.
    if (!/^[A-Za-z0-9+/_-]*={0,2}$/.test(source.inline_bytes.replace(/\s+/g, ''))) {
      issues.push({ path: `${path}.inline_bytes`, message: 'must be base64' })
      return undefined
    }
    return Buffer.from(source.inline_bytes, 'base64')
  }
  return undefined
}

/** `tls.connect` options of a cluster; `pending` set while a secret the context names has not arrived. */
export type UpstreamTlsOptions = ConnectionOptions & { pending?: Error }

const NO_SECRETS = new SecretStore()

/**
 * Builds the connection options for a cluster's UpstreamTlsContext. `path` locates the context (the
 * transport_socket's typed_config) for issues. Returns null when there were issues. Secrets named through SDS are
 * read from `secrets` now; the cluster calls this again when one of them changes (`upstreamTlsSecretNames`).
 */
export function upstreamTlsOptions(
  ctx: UpstreamTlsContext,
  http2: boolean,
  path: string,
  issues: ConfigIssue[],
  secrets: SecretStore = NO_SECRETS,
): UpstreamTlsOptions | null {
  const before = issues.length
  const common = ctx.common_tls_context ?? {}
  const cpath = `${path}.common_tls_context`
  const m = resolveTlsMaterial(common, secrets, cpath, issues)
  const { cert, key, ca } = m

  const sanMatchers = m.sanMatchers
  if (sanMatchers.length > 0 && ca === undefined && !m.fromSds) {
    issues.push({
      path: `${cpath}.validation_context.match_typed_subject_alt_names`,
      message: 'matching subject alt names without trusted_ca would accept any self-made certificate; set trusted_ca',
    })
  }
  const compiled: CompiledSanMatcher[] = []
  sanMatchers.forEach((sm, i) => {
    const test = compileStringMatcher(
      sm.matcher,
      `${cpath}.validation_context.match_typed_subject_alt_names[${i}].matcher`,
      issues,
    )
    if (test !== null) compiled.push({ type: sm.san_type, test, exact: sm.matcher.exact })
  })

  const params = common.tls_params
  const minVersion = tlsVersion(params?.tls_minimum_protocol_version) ?? 'TLSv1.2'
  let maxVersion = tlsVersion(params?.tls_maximum_protocol_version)
  // Envoy's client default is TLS 1.2 only; mesh contexts (certificates from SDS) allow 1.3, as Istio sets them
  if (maxVersion === undefined) maxVersion = minVersion === 'TLSv1.3' || m.fromSds ? 'TLSv1.3' : 'TLSv1.2'
  if (minVersion === 'TLSv1.3' && maxVersion === 'TLSv1.2') {
    issues.push({
      path: `${cpath}.tls_params`,
      message: 'tls_minimum_protocol_version is above tls_maximum_protocol_version',
    })
  }

  if (issues.length > before) return null
  if (m.missing.length > 0) {
    const err = new Error(
      `tls_secret: missing: the TLS context waits for secret ${m.missing.map((n) => `"${n}"`).join(', ')}`,
    ) as Error & { code: string }
    err.code = 'ERR_LOOM_TLS_PEER'
    return { pending: err }
  }

  // an HTTP/2 cluster always offers h2 (after Istio's istio-peer-exchange / istio when configured so)
  let alpn = common.alpn_protocols ?? (http2 ? ['h2'] : ['http/1.1'])
  if (http2 && !alpn.includes('h2')) alpn = [...alpn, 'h2']
  const options: UpstreamTlsOptions = {
    ALPNProtocols: alpn,
    minVersion,
    maxVersion,
    rejectUnauthorized: ca !== undefined,
    checkServerIdentity: peerChecker(m, compiled, ca),
  }
  if (ctx.sni) options.servername = ctx.sni
  if (ca !== undefined) options.ca = ca
  if (cert !== undefined) options.cert = cert
  if (key !== undefined) options.key = key
  try {
    options.secureContext = tls().createSecureContext({ ca, cert, key, minVersion, maxVersion, ciphers: CIPHERS })
  } catch (err) {
    issues.push({ path: cpath, message: `invalid TLS material: ${errorText(err)}` })
    return null
  }
  return options
}

/** The SDS secret names an UpstreamTlsContext reads (empty: nothing to watch). */
export function upstreamTlsSecretNames(ctx: UpstreamTlsContext): string[] {
  const c = ctx.common_tls_context
  if (c === undefined) return []
  const out: string[] = []
  for (const s of c.tls_certificate_sds_secret_configs ?? []) out.push(s.name)
  if (c.validation_context_sds_secret_config !== undefined) out.push(c.validation_context_sds_secret_config.name)
  if (c.combined_validation_context !== undefined)
    out.push(c.combined_validation_context.validation_context_sds_secret_config.name)
  return out
}

/**
 * The server check after OpenSSL has verified the chain against `ca`: on a context with SDS material and a trust
 * domain known (from the SAN matchers' SPIFFE IDs or the own certificate), PeerVerifier (an X.509-SVID of that domain, one of the exact URI
 * SANs expected); then the SAN matchers that are not exact SPIFFE IDs. A refusal is an Error whose message starts
 * with `tls_peer: <reason>: `, which becomes the local reply's `x-loom-reason`.
 */
function peerChecker(m: TlsMaterial, compiled: readonly CompiledSanMatcher[], ca: string | Buffer | undefined) {
  // the X.509-SVID rules apply to mesh contexts (material from SDS); file and inline contexts keep Envoy's checks
  const td = ca === undefined || !m.fromSds ? null : trustDomainOf(m)
  const verifier = td === null ? null : new PeerVerifier({ trustDomain: td, roots: ca!.toString() })
  const ids = exactSpiffeIds(m)
  const names = ids === null ? compiled : compiled.filter((c) => c.type !== 'URI')
  const sans = names.length > 0 ? sanChecker(names) : null
  if (verifier === null && sans === null) return acceptAnyName
  return (hostname: string, cert: PeerCertificate): Error | undefined => {
    if (verifier !== null) {
      const verdict = verifier.verify(chainOfPeerCertificate(cert), {
        purpose: 'server',
        ...(ids === null ? {} : { ids }),
      })
      if (!verdict.ok) return tlsPeerError(peerReasonPhrase(verdict.reason), verdict.message, hostname, cert)
    }
    return sans?.(hostname, cert)
  }
}

function tlsPeerError(phrase: string, message: string, hostname: string, cert: PeerCertificate): Error {
  const err = new Error(`tls_peer: ${phrase}: ${message}`) as Error & { code: string; host: string; cert: unknown }
  err.code = 'ERR_LOOM_TLS_PEER'
  err.host = hostname
  err.cert = cert
  return err
}

/** OpenSSL's verification codes as PeerVerifier's reasons. */
const OPENSSL_REASON: Record<string, string> = {
  UNABLE_TO_VERIFY_LEAF_SIGNATURE: 'untrusted_root',
  UNABLE_TO_GET_ISSUER_CERT: 'untrusted_root',
  UNABLE_TO_GET_ISSUER_CERT_LOCALLY: 'untrusted_root',
  SELF_SIGNED_CERT_IN_CHAIN: 'untrusted_root',
  DEPTH_ZERO_SELF_SIGNED_CERT: 'untrusted_root',
  CERT_SIGNATURE_FAILURE: 'untrusted_root',
  CERT_HAS_EXPIRED: 'expired',
  CERT_NOT_YET_VALID: 'not_yet_valid',
  INVALID_CA: 'issuer_not_ca',
  ERR_TLS_CERT_ALTNAME_INVALID: 'wrong SAN',
}

/**
 * The detail a connect failure carries to the local reply: `tls_peer: <reason>: <message>` for a refused server
 * certificate (`x-loom-reason` is its first two parts), `tls_secret: missing: …` while a secret is missing, else
 * the socket error's code.
 */
export function connectFailureDetail(err: NodeJS.ErrnoException): string {
  if (err.code === 'ERR_LOOM_TLS_PEER') return err.message
  const r = err.code === undefined ? undefined : OPENSSL_REASON[err.code]
  if (r !== undefined) return `tls_peer: ${r}: ${err.message}`
  return err.code ?? err.message
}

function tlsVersion(v: 'TLS_AUTO' | 'TLSv1_2' | 'TLSv1_3' | undefined): TlsVersion | undefined {
  if (v === 'TLSv1_2') return 'TLSv1.2'
  if (v === 'TLSv1_3') return 'TLSv1.3'
  return undefined
}

function acceptAnyName(): undefined {
  return undefined
}

interface CompiledSanMatcher {
  type: SanType
  test: (value: string) => boolean
  /** The exact value, for matching wildcard DNS SANs as Envoy does. */
  exact: string | undefined
}

/** How Node's `subjectaltname` names each SAN type. */
const nodeSanPrefix: Record<SanType, string> = { DNS: 'DNS', URI: 'URI', EMAIL: 'email', IP_ADDRESS: 'IP Address' }

function sanChecker(matchers: readonly CompiledSanMatcher[]) {
  return (hostname: string, cert: PeerCertificate): Error | undefined => {
    const sans = parseSubjectAltNames(cert.subjectaltname ?? '')
    for (const m of matchers) {
      const prefix = nodeSanPrefix[m.type]
      for (const san of sans) {
        if (san.type !== prefix) continue
        if (m.test(san.value)) return undefined
        // Node spells IPv6 SANs out in full (0:0:0:0:0:0:0:1); configs usually write them compressed (::1).
        if (m.type === 'IP_ADDRESS' && m.test(normalizeIp(san.value))) return undefined
        if (m.type === 'DNS' && m.exact !== undefined && dnsWildcardMatch(san.value, m.exact)) return undefined
      }
    }
    const err = new Error(
      `upstream certificate's subject alt names (${cert.subjectaltname ?? 'none'}) match none of ` +
        'match_typed_subject_alt_names',
    ) as Error & { code: string; host: string; cert: PeerCertificate }
    err.code = 'ERR_TLS_CERT_ALTNAME_INVALID'
    err.host = hostname
    err.cert = cert
    return err
  }
}

/** `*.example.com` in the certificate matches exactly one label: `a.example.com`, not `a.b.example.com`. */
function dnsWildcardMatch(san: string, name: string): boolean {
  if (!san.startsWith('*.')) return false
  const dot = name.indexOf('.')
  if (dot <= 0) return false
  return name.slice(dot + 1).toLowerCase() === san.slice(2).toLowerCase()
}

function normalizeIp(value: string): string {
  if (!isIPv6(value)) return value
  try {
    return new URL(`http://[${value}]/`).hostname.slice(1, -1)
  } catch {
    return value
  }
}

/** An Envoy StringMatcher as a predicate; safe_regex is RE2 and must match the whole value. */
export function compileStringMatcher(
  m: StringMatcher,
  path: string,
  issues: ConfigIssue[],
): ((value: string) => boolean) | null {
  const ic = m.ignore_case === true
  const fold = (s: string) => (ic ? s.toLowerCase() : s)
  if (m.exact !== undefined) {
    const want = fold(m.exact)
    return (v) => fold(v) === want
  }
  if (m.prefix !== undefined) {
    const want = fold(m.prefix)
    return (v) => fold(v).startsWith(want)
  }
  if (m.suffix !== undefined) {
    const want = fold(m.suffix)
    return (v) => fold(v).endsWith(want)
  }
  if (m.contains !== undefined) {
    const want = fold(m.contains)
    return (v) => fold(v).includes(want)
  }
  if (m.safe_regex !== undefined) {
    const re = compileFullMatch(m.safe_regex.regex)
    if (re.ok) return (v) => re.value.test(v)
    issues.push({ path: `${path}.safe_regex.regex`, message: re.error })
    return null
  }
  return null
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err)
}
