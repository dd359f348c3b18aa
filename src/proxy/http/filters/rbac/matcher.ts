/**
 * Envoy's RBAC engine (envoy.config.rbac.v3): permissions and principals compiled once into a tree of tests, and
 * the policies of one `RBAC` rules object evaluated against a request in their config order.
 *
 * - A policy matches when one of its permissions and one of its principals match. `ALLOW`: the request is allowed
 *   when a policy matches; `DENY`: denied when one does; `LOG`: always allowed, a matching policy marks the
 *   request for logging. The first policy that matches is the effective policy (for the reply and the metadata).
 * - `authenticated` matches a TLS peer whose certificate the listener verified (`TLSSocket.authorized`): with
 *   `principal_name`, one of its URI SANs, else one of its DNS SANs, else its subject (RFC 2253 form) must match.
 *   A plain-text connection, or a TLS one without a verified peer certificate, has no principal: `authenticated`
 *   never matches it (and `not_id` of it always does), as in Envoy.
 * - `direct_remote_ip` and `source_ip`: the connection's peer; `remote_ip`: the trusted client address the
 *   connection manager derived (x-forwarded-for, `xff_num_trusted_hops`). `destination_ip` / `destination_port`:
 *   the connection's local address; `requested_server_name`: the SNI (empty without TLS or SNI).
 * - `header`: Envoy's HeaderMatcher (several values joined with `,`; `:authority`, `:path`, `:method`).
 *   `url_path`: the path without its query.
 * - `metadata`: a value in the stream's dynamic metadata: `filter` is the namespace, `path` walks into it (nested
 *   objects, such as the JWT claims under `istio_authn` `request.auth.claims`). `list_match` matches an array with
 *   an element that matches; a single string counts as a list of one (Istio's authn filter stores a string claim
 *   that way, Loom's JWT filter stores the payload as it is).
 *
 * The peer's identity is read once per connection (a WeakMap keyed by the socket); everything else is read from
 * the request when a test needs it, into one reusable context (evaluation is synchronous).
 */
import { parseSubjectAltNames } from '../../../../core/subject-alt-names.js'
import { BlockList, isIP, type Socket } from 'node:net'
import type {
  CidrRange,
  MetadataMatcher,
  RbacPermission,
  RbacPrincipal,
  RbacRules,
  RbacValueMatcher,
} from '../../../../config/envoy.js'
import type { ConfigIssue } from '../../../../core/errors.js'
import { compileHeaderMatcher, compileStringMatcher, type StringTest } from '../../../route/matchers.js'
import { pathEnd } from '../../../route/strings.js'
import type { RequestHead } from '../../types.js'

/**
 * What the tests read: the request, its connection and its dynamic metadata (the filter callbacks have this shape,
 * so the filter passes them as they are). Without a head (a connection-level check) header and path tests do not
 * match.
 */
export interface RbacInput {
  readonly head: RequestHead | null
  /** the connection's socket (a TLSSocket on TLS listeners), or null */
  readonly downstreamSocket: Socket | null
  /** the trusted client address (remote_ip) */
  readonly sourceIp: string
  metadata(namespace: string): Readonly<Record<string, unknown>> | undefined
}

type Test = (r: RbacInput) => boolean

/** A verified TLS peer's names. */
export interface PeerIdentity {
  uris: string[]
  dns: string[]
  subject: string
}

const peers = new WeakMap<object, PeerIdentity | null>()

interface PeerCertLike {
  subject?: Record<string, string | string[]>
  subjectaltname?: string
}
interface TlsLike {
  authorized?: boolean
  getPeerCertificate?(): PeerCertLike
}

/** The verified peer of a connection, read once per socket; null on plain text or without a verified certificate. */
export function peerIdentity(socket: Socket | null): PeerIdentity | null {
  if (socket === null) return null
  let p = peers.get(socket)
  if (p !== undefined) return p
  p = readPeer(socket as unknown as TlsLike)
  peers.set(socket, p)
  return p
}

function readPeer(s: TlsLike): PeerIdentity | null {
  if (typeof s.getPeerCertificate !== 'function' || s.authorized !== true) return null
  const cert = s.getPeerCertificate()
  if (cert === null || typeof cert !== 'object' || Object.keys(cert).length === 0) return null
  const uris: string[] = []
  const dns: string[] = []
  for (const [type, value] of parseSubjectAltName(cert.subjectaltname ?? '')) {
    if (type === 'URI') uris.push(value)
    else if (type === 'DNS') dns.push(value)
  }
  const subject = Object.entries(cert.subject ?? {})
    .reverse()
    .flatMap(([k, val]) => (Array.isArray(val) ? val : [val]).map((x) => `${k}=${x}`))
    .join(',')
  return { uris, dns, subject }
}

/** Node's `subjectaltname` string as [type, value] pairs (the parser upstream TLS uses, quoted values included). */
export function parseSubjectAltName(s: string): [string, string][] {
  return parseSubjectAltNames(s).map((san) => [san.type, san.value])
}

/** An address as a socket reports it (IPv4-mapped IPv6 included) tested against one CIDR range. */
function cidrTest(c: CidrRange): (ip: string | undefined) => boolean {
  const list = new BlockList()
  const family = isIP(c.address_prefix) === 4 ? 'ipv4' : 'ipv6'
  list.addSubnet(c.address_prefix, c.prefix_len ?? 0, family)
  return (ip) => {
    if (ip === undefined || ip === '') return false
    if (ip.startsWith('::ffff:') && isIP(ip.slice(7)) === 4) return list.check(ip.slice(7), 'ipv4')
    const f = isIP(ip)
    return f !== 0 && list.check(ip, f === 4 ? 'ipv4' : 'ipv6')
  }
}

const always: Test = () => true

function all(tests: Test[]): Test {
  if (tests.length === 1) return tests[0]!
  return (r) => {
    for (const t of tests) if (!t(r)) return false
    return true
  }
}

function some(tests: Test[]): Test {
  if (tests.length === 1) return tests[0]!
  return (r) => {
    for (const t of tests) if (t(r)) return true
    return false
  }
}

function headerTest(m: Parameters<typeof compileHeaderMatcher>[0], path: string, issues: ConfigIssue[]): Test {
  const h = compileHeaderMatcher(m, path, issues)
  // the matcher reads the request through a MatchContext-shaped object: the head is one (authority, path, ...)
  const ctx = { req: null as unknown as RequestHead }
  return (r) => {
    if (r.head === null) return false
    ctx.req = r.head
    return h.matches(ctx as never)
  }
}

function urlPathTest(m: { path: Parameters<typeof compileStringMatcher>[0] }, path: string, issues: ConfigIssue[]) {
  const t = compileStringMatcher(m.path, `${path}.path`, issues)
  return (r: RbacInput) => {
    if (r.head === null) return false
    const p = r.head.path
    const end = pathEnd(p)
    return t(end === p.length ? p : p.slice(0, end))
  }
}

function valueTest(m: RbacValueMatcher, path: string, issues: ConfigIssue[]): (v: unknown) => boolean {
  if (m.string_match !== undefined) {
    const t = compileStringMatcher(m.string_match, `${path}.string_match`, issues)
    return (v) => typeof v === 'string' && t(v)
  }
  if (m.bool_match !== undefined) {
    const want = m.bool_match
    return (v) => v === want
  }
  if (m.present_match !== undefined) {
    const want = m.present_match
    return (v) => (v !== undefined) === want
  }
  if (m.null_match !== undefined) return (v) => v === null
  if (m.list_match !== undefined) {
    const one = valueTest(m.list_match.one_of, `${path}.list_match.one_of`, issues)
    return (v) => {
      if (Array.isArray(v)) {
        for (const x of v) if (one(x)) return true
        return false
      }
      return typeof v === 'string' && one(v)
    }
  }
  if (m.or_match !== undefined) {
    const list = m.or_match.value_matchers.map((x, i) => valueTest(x, `${path}.or_match.value_matchers[${i}]`, issues))
    return (v) => list.some((t) => t(v))
  }
  issues.push({ path, message: 'a value matcher is required' })
  return () => false
}

function metadataTest(m: MetadataMatcher, path: string, issues: ConfigIssue[]): Test {
  const test = valueTest(m.value, `${path}.value`, issues)
  const ns = m.filter
  const keys = m.path.map((s) => s.key)
  const invert = m.invert === true
  return (r) => {
    let v: unknown = r.metadata(ns)
    for (const k of keys) {
      if (v === null || typeof v !== 'object' || Array.isArray(v)) {
        v = undefined
        break
      }
      v = (v as Record<string, unknown>)[k]
    }
    return test(v) !== invert
  }
}

/** A MetadataMatcher as a test of a stream's dynamic metadata (ext_authz's filter_enabled_metadata uses it too). */
export function compileMetadataMatcher(
  m: MetadataMatcher,
  path: string,
  issues: ConfigIssue[],
): (r: Pick<RbacInput, 'metadata'>) => boolean {
  return metadataTest(m, path, issues) as (r: Pick<RbacInput, 'metadata'>) => boolean
}

function localAddress(r: RbacInput): string | undefined {
  return r.downstreamSocket?.localAddress
}

export function compilePermission(p: RbacPermission, path: string, issues: ConfigIssue[]): Test {
  if (p.any === true) return always
  if (p.and_rules !== undefined)
    return all(p.and_rules.rules.map((x, i) => compilePermission(x, `${path}.and_rules.rules[${i}]`, issues)))
  if (p.or_rules !== undefined)
    return some(p.or_rules.rules.map((x, i) => compilePermission(x, `${path}.or_rules.rules[${i}]`, issues)))
  if (p.not_rule !== undefined) {
    const t = compilePermission(p.not_rule, `${path}.not_rule`, issues)
    return (r) => !t(r)
  }
  if (p.header !== undefined) return headerTest(p.header, `${path}.header`, issues)
  if (p.url_path !== undefined) return urlPathTest(p.url_path, `${path}.url_path`, issues)
  if (p.destination_ip !== undefined) {
    const t = cidrTest(p.destination_ip)
    return (r) => t(localAddress(r))
  }
  if (p.destination_port !== undefined) {
    const want = p.destination_port
    return (r) => r.downstreamSocket?.localPort === want
  }
  if (p.requested_server_name !== undefined) {
    const t = compileStringMatcher(p.requested_server_name, `${path}.requested_server_name`, issues)
    return (r) => {
      const sni = (r.downstreamSocket as { servername?: unknown } | null)?.servername
      return t(typeof sni === 'string' ? sni : '')
    }
  }
  if (p.metadata !== undefined) return metadataTest(p.metadata, `${path}.metadata`, issues)
  issues.push({ path, message: 'a permission rule is required' })
  return () => false
}

function principalNameTest(t: StringTest): Test {
  return (r) => {
    const peer = peerIdentity(r.downstreamSocket)
    if (peer === null) return false
    if (peer.uris.length > 0) {
      for (const u of peer.uris) if (t(u)) return true
      return false
    }
    if (peer.dns.length > 0) {
      for (const d of peer.dns) if (t(d)) return true
      return false
    }
    return t(peer.subject)
  }
}

export function compilePrincipal(p: RbacPrincipal, path: string, issues: ConfigIssue[]): Test {
  if (p.any === true) return always
  if (p.and_ids !== undefined)
    return all(p.and_ids.ids.map((x, i) => compilePrincipal(x, `${path}.and_ids.ids[${i}]`, issues)))
  if (p.or_ids !== undefined)
    return some(p.or_ids.ids.map((x, i) => compilePrincipal(x, `${path}.or_ids.ids[${i}]`, issues)))
  if (p.not_id !== undefined) {
    const t = compilePrincipal(p.not_id, `${path}.not_id`, issues)
    return (r) => !t(r)
  }
  if (p.authenticated !== undefined) {
    const m = p.authenticated.principal_name
    if (m === undefined) return (r) => peerIdentity(r.downstreamSocket) !== null
    return principalNameTest(compileStringMatcher(m, `${path}.authenticated.principal_name`, issues))
  }
  if (p.source_ip !== undefined || p.direct_remote_ip !== undefined) {
    const t = cidrTest((p.direct_remote_ip ?? p.source_ip)!)
    return (r) => t(r.downstreamSocket?.remoteAddress)
  }
  if (p.remote_ip !== undefined) {
    const t = cidrTest(p.remote_ip)
    return (r) => t(r.sourceIp)
  }
  if (p.header !== undefined) return headerTest(p.header, `${path}.header`, issues)
  if (p.url_path !== undefined) return urlPathTest(p.url_path, `${path}.url_path`, issues)
  if (p.metadata !== undefined) return metadataTest(p.metadata, `${path}.metadata`, issues)
  issues.push({ path, message: 'a principal identifier is required' })
  return () => false
}

export const ALLOW = 0
export const DENY = 1
export const LOG = 2
export type RbacAction = typeof ALLOW | typeof DENY | typeof LOG

interface CompiledPolicy {
  readonly name: string
  readonly permission: Test
  readonly principal: Test
}

/** One `rules` (or `shadow_rules`) object, compiled. */
export class RbacEngine {
  readonly action: RbacAction
  private readonly policies: CompiledPolicy[]

  constructor(rules: RbacRules, path: string, issues: ConfigIssue[]) {
    this.action = rules.action === 'DENY' ? DENY : rules.action === 'LOG' ? LOG : ALLOW
    this.policies = Object.entries(rules.policies ?? {}).map(([name, pol]) => {
      const pp = `${path}.policies["${name}"]`
      return {
        name,
        permission: some(pol.permissions.map((x, i) => compilePermission(x, `${pp}.permissions[${i}]`, issues))),
        principal: some(pol.principals.map((x, i) => compilePrincipal(x, `${pp}.principals[${i}]`, issues))),
      }
    })
  }

  /** The name of the first policy that matches the request, or null. */
  matchedPolicy(r: RbacInput): string | null {
    for (const p of this.policies) if (p.permission(r) && p.principal(r)) return p.name
    return null
  }

  /** Whether these rules allow a request whose first matching policy is `policy` (LOG always allows). */
  allows(policy: string | null): boolean {
    return this.action === ALLOW ? policy !== null : this.action === DENY ? policy === null : true
  }
}
