/**
 * Upstream TLS (UpstreamTlsContext) as Node `tls.connect` options, with Envoy's semantics:
 * - the peer's chain is verified only when validation_context.trusted_ca is set;
 * - the certificate is not matched against the SNI or host name; match_typed_subject_alt_names, when set, is the
 *   name check (at least one SAN of the given type must match one matcher);
 * - SNI is sent only when `sni` is set; ALPN defaults to h2 or http/1.1 by the cluster's protocol;
 * - TLS versions default to 1.2 .. 1.2 for clients (Envoy's defaults).
 * Files are read once, at config load; a SecureContext is built then too, which also checks that the PEM parses and
 * that key and certificate match, and spares the data path a new context per connection.
 */
import { readFileSync } from 'node:fs'
import { isIPv6 } from 'node:net'
import type { ConnectionOptions, PeerCertificate } from 'node:tls'
import { tls } from '../../core/lazy.js'
import { compileFullMatch } from '../route/regex.js'
import type { DataSource, StringMatcher, UpstreamTlsContext } from '../../config/envoy.js'
import type { ConfigIssue } from '../../core/errors.js'

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

/**
 * Builds the connection options for a cluster's UpstreamTlsContext. `path` locates the context (the
 * transport_socket's typed_config) for issues. Returns null when there were issues.
 */
export function upstreamTlsOptions(
  ctx: UpstreamTlsContext,
  http2: boolean,
  path: string,
  issues: ConfigIssue[],
): ConnectionOptions | null {
  const before = issues.length
  const common = ctx.common_tls_context ?? {}
  const cpath = `${path}.common_tls_context`

  let cert: Buffer | undefined
  let key: Buffer | undefined
  const pair = common.tls_certificates?.[0]
  if (pair !== undefined) {
    cert = readDataSource(pair.certificate_chain, `${cpath}.tls_certificates[0].certificate_chain`, issues)
    key = readDataSource(pair.private_key, `${cpath}.tls_certificates[0].private_key`, issues)
  }

  const validation = common.validation_context
  let ca: Buffer | undefined
  if (validation?.trusted_ca !== undefined) {
    ca = readDataSource(validation.trusted_ca, `${cpath}.validation_context.trusted_ca`, issues)
  }
  const sanMatchers = validation?.match_typed_subject_alt_names ?? []
  if (sanMatchers.length > 0 && validation?.trusted_ca === undefined) {
    issues.push({
      path: `${cpath}.validation_context.match_typed_subject_alt_names`,
      message: 'matching subject alt names without trusted_ca would accept any self-made certificate; set trusted_ca',
    })
  }
  const compiled: CompiledSanMatcher[] = []
  sanMatchers.forEach((m, i) => {
    const test = compileStringMatcher(
      m.matcher,
      `${cpath}.validation_context.match_typed_subject_alt_names[${i}].matcher`,
      issues,
    )
    if (test !== null) compiled.push({ type: m.san_type, test, exact: m.matcher.exact })
  })

  const params = common.tls_params
  const minVersion = tlsVersion(params?.tls_minimum_protocol_version) ?? 'TLSv1.2'
  let maxVersion = tlsVersion(params?.tls_maximum_protocol_version)
  if (maxVersion === undefined) maxVersion = minVersion === 'TLSv1.3' ? 'TLSv1.3' : 'TLSv1.2'
  if (minVersion === 'TLSv1.3' && maxVersion === 'TLSv1.2') {
    issues.push({
      path: `${cpath}.tls_params`,
      message: 'tls_minimum_protocol_version is above tls_maximum_protocol_version',
    })
  }

  if (issues.length > before) return null

  const options: ConnectionOptions = {
    ALPNProtocols: common.alpn_protocols ?? (http2 ? ['h2'] : ['http/1.1']),
    minVersion,
    maxVersion,
    rejectUnauthorized: ca !== undefined,
    checkServerIdentity: compiled.length > 0 ? sanChecker(compiled) : acceptAnyName,
  }
  if (ctx.sni) options.servername = ctx.sni
  if (ca !== undefined) options.ca = ca
  if (cert !== undefined) options.cert = cert
  if (key !== undefined) options.key = key
  try {
    options.secureContext = tls().createSecureContext({ ca, cert, key, minVersion, maxVersion })
  } catch (err) {
    issues.push({ path: cpath, message: `invalid TLS material: ${errorText(err)}` })
    return null
  }
  return options
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

/**
 * Splits Node's `subjectaltname` ("DNS:a.example, IP Address:10.0.0.1, URI:spiffe://x"). Node quotes a value that
 * holds a comma or quote as a JSON string (`DNS:"a,b"`).
 */
export function parseSubjectAltNames(text: string): { type: string; value: string }[] {
  const out: { type: string; value: string }[] = []
  let i = 0
  while (i < text.length) {
    const colon = text.indexOf(':', i)
    if (colon < 0) break
    const type = text.slice(i, colon).trim()
    let value: string
    let end: number
    if (text[colon + 1] === '"') {
      end = colon + 2
      while (end < text.length && text[end] !== '"') end += text[end] === '\\' ? 2 : 1
      const raw = text.slice(colon + 1, end + 1)
      try {
        value = JSON.parse(raw) as string
      } catch {
        value = raw
      }
      end = text.indexOf(', ', end)
    } else {
      end = text.indexOf(', ', colon)
      value = text.slice(colon + 1, end < 0 ? text.length : end)
    }
    out.push({ type, value })
    if (end < 0) break
    i = end + 2
  }
  return out
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
