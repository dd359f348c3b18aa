/**
 * Envoy's RBAC engine (envoy.config.rbac.v3), shared by the HTTP filter (envoy.filters.http.rbac) and the network
 * filter (envoy.filters.network.rbac): permissions and principals compiled once into a tree of tests, and the
 * policies of one `RBAC` rules object evaluated in their config order. What only an HTTP request has (`header`,
 * `url_path`) is compiled by the filter that has one (a `RuleExtension`); everything else reads the connection.
 *
 * - A policy matches when one of its permissions and one of its principals match. `ALLOW`: the request (or
 *   connection) is allowed when a policy matches; `DENY`: denied when one does; `LOG`: always allowed, a matching
 *   policy marks it for logging. The first policy that matches is the effective policy (for the reply, the log and
 *   the metadata).
 * - `authenticated` matches a TLS peer whose certificate the listener verified (`TLSSocket.authorized`): with
 *   `principal_name`, one of its URI SANs, else one of its DNS SANs, else its subject (RFC 2253 form) must match.
 *   A plain-text connection, or a TLS one without a verified peer certificate, has no principal: `authenticated`
 *   never matches it (and `not_id` of it always does), as in Envoy.
 * - `direct_remote_ip` and `source_ip`: the connection's peer; `remote_ip`: the trusted client address (the HTTP
 *   connection manager derives it from x-forwarded-for, `xff_num_trusted_hops`; on a network filter it is the peer).
 *   `destination_ip` / `destination_port`: the connection's local address; `requested_server_name`: the SNI (empty
 *   without TLS or SNI).
 * - `metadata`: a value in the dynamic metadata: `filter` is the namespace, `path` walks into it (nested objects,
 *   such as the JWT claims under `istio_authn` `request.auth.claims`). `list_match` matches an array with an
 *   element that matches; a single string counts as a list of one (Istio's authn filter stores a string claim that
 *   way, Loom's JWT filter stores the payload as it is). A connection has no dynamic metadata of its own: on the
 *   network filter every value is absent.
 *
 * The peer's names come from the connection's one peer record (identity/connection-peer.ts, shared with XFCC, made
 * on first use); everything else is read when a test needs it, from one input object (evaluation is synchronous).
 */
import { parseSubjectAltNames } from '../../core/subject-alt-names.js'
import { BlockList, isIP, type Socket } from 'node:net'
import type {
  CidrRange,
  MetadataMatcher,
  RbacPermission,
  RbacPrincipal,
  RbacRules,
  RbacValueMatcher,
} from '../../config/envoy.js'
import type { ConfigIssue } from '../../core/errors.js'
import { connectionPeer } from '../identity/connection-peer.js'
import { compileStringMatcher, type StringTest } from '../route/matchers.js'

/**
 * What every test reads: the connection and the dynamic metadata (the HTTP filter callbacks have this shape, and
 * more; a filter's own tests read more of its input).
 */
export interface ConnectionInput {
  /** the connection's socket (a TLSSocket on TLS listeners), or null */
  readonly downstreamSocket: Socket | null
  /** the trusted client address (remote_ip) */
  readonly sourceIp: string
  metadata(namespace: string): Readonly<Record<string, unknown>> | undefined
}

export type Test<I> = (r: I) => boolean

/**
 * The rules only some filters can evaluate (the HTTP filter: `header`, `url_path`): compiles the ones it knows, or
 * returns null to leave the rule to the engine (which reports a rule it does not know either).
 */
export interface RuleExtension<I extends ConnectionInput> {
  permission(p: RbacPermission, path: string, issues: ConfigIssue[]): Test<I> | null
  principal(p: RbacPrincipal, path: string, issues: ConfigIssue[]): Test<I> | null
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

const always = () => true

function all<I>(tests: Test<I>[]): Test<I> {
  if (tests.length === 1) return tests[0]!
  return (r) => {
    for (const t of tests) if (!t(r)) return false
    return true
  }
}

function some<I>(tests: Test<I>[]): Test<I> {
  if (tests.length === 1) return tests[0]!
  return (r) => {
    for (const t of tests) if (t(r)) return true
    return false
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

/** A MetadataMatcher as a test of a stream's dynamic metadata (ext_authz's filter_enabled_metadata uses it too). */
export function compileMetadataMatcher(
  m: MetadataMatcher,
  path: string,
  issues: ConfigIssue[],
): (r: Pick<ConnectionInput, 'metadata'>) => boolean {
  return metadataTest(m, path, issues) as (r: Pick<ConnectionInput, 'metadata'>) => boolean
}

function metadataTest(m: MetadataMatcher, path: string, issues: ConfigIssue[]): Test<ConnectionInput> {
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

function localAddress(r: ConnectionInput): string | undefined {
  return r.downstreamSocket?.localAddress
}

export function compilePermission<I extends ConnectionInput>(
  p: RbacPermission,
  path: string,
  issues: ConfigIssue[],
  ext: RuleExtension<I>,
): Test<I> {
  if (p.any === true) return always
  if (p.and_rules !== undefined)
    return all(p.and_rules.rules.map((x, i) => compilePermission(x, `${path}.and_rules.rules[${i}]`, issues, ext)))
  if (p.or_rules !== undefined)
    return some(p.or_rules.rules.map((x, i) => compilePermission(x, `${path}.or_rules.rules[${i}]`, issues, ext)))
  if (p.not_rule !== undefined) {
    const t = compilePermission(p.not_rule, `${path}.not_rule`, issues, ext)
    return (r) => !t(r)
  }
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
  const own = ext.permission(p, path, issues)
  if (own !== null) return own
  issues.push({ path, message: 'a permission rule is required' })
  return () => false
}

function principalNameTest(t: StringTest): Test<ConnectionInput> {
  return (r) => {
    const peer = connectionPeer(r.downstreamSocket)
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

export function compilePrincipal<I extends ConnectionInput>(
  p: RbacPrincipal,
  path: string,
  issues: ConfigIssue[],
  ext: RuleExtension<I>,
): Test<I> {
  if (p.any === true) return always
  if (p.and_ids !== undefined)
    return all(p.and_ids.ids.map((x, i) => compilePrincipal(x, `${path}.and_ids.ids[${i}]`, issues, ext)))
  if (p.or_ids !== undefined)
    return some(p.or_ids.ids.map((x, i) => compilePrincipal(x, `${path}.or_ids.ids[${i}]`, issues, ext)))
  if (p.not_id !== undefined) {
    const t = compilePrincipal(p.not_id, `${path}.not_id`, issues, ext)
    return (r) => !t(r)
  }
  if (p.authenticated !== undefined) {
    const m = p.authenticated.principal_name
    if (m === undefined) return (r) => connectionPeer(r.downstreamSocket) !== null
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
  if (p.metadata !== undefined) return metadataTest(p.metadata, `${path}.metadata`, issues)
  const own = ext.principal(p, path, issues)
  if (own !== null) return own
  issues.push({ path, message: 'a principal identifier is required' })
  return () => false
}

export const ALLOW = 0
export const DENY = 1
export const LOG = 2
export type RbacAction = typeof ALLOW | typeof DENY | typeof LOG

interface CompiledPolicy<I> {
  readonly name: string
  readonly permission: Test<I>
  readonly principal: Test<I>
}

/** One `rules` (or `shadow_rules`) object, compiled; `ext` compiles the rules only the filter's input can answer. */
export class RbacRulesEngine<I extends ConnectionInput> {
  readonly action: RbacAction
  private readonly policies: CompiledPolicy<I>[]

  constructor(rules: RbacRules, path: string, issues: ConfigIssue[], ext: RuleExtension<I>) {
    this.action = rules.action === 'DENY' ? DENY : rules.action === 'LOG' ? LOG : ALLOW
    this.policies = Object.entries(rules.policies ?? {}).map(([name, pol]) => {
      const pp = `${path}.policies["${name}"]`
      return {
        name,
        permission: some(pol.permissions.map((x, i) => compilePermission(x, `${pp}.permissions[${i}]`, issues, ext))),
        principal: some(pol.principals.map((x, i) => compilePrincipal(x, `${pp}.principals[${i}]`, issues, ext))),
      }
    })
  }

  /** The name of the first policy that matches, or null. */
  matchedPolicy(r: I): string | null {
    for (const p of this.policies) if (p.permission(r) && p.principal(r)) return p.name
    return null
  }

  /**
   * Every policy's verdict on `r`, in evaluation order, by the same compiled tests as `matchedPolicy` (whose answer
   * is the first entry with both true): for explanations, not on the request path.
   */
  explain(r: I): { name: string; permission: boolean; principal: boolean }[] {
    return this.policies.map((p) => ({ name: p.name, permission: p.permission(r), principal: p.principal(r) }))
  }

  /** Whether these rules allow what their first matching policy is `policy` for (LOG always allows). */
  allows(policy: string | null): boolean {
    return this.action === ALLOW ? policy !== null : this.action === DENY ? policy === null : true
  }
}
