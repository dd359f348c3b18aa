/**
 * AuthorizationPolicy → Envoy RBAC filters, as Istio's pilot builds them: HTTP filters for a sidecar's inbound
 * connection managers and a gateway's, network filters (envoy.filters.network.rbac, stat prefix `tcp.`) before the
 * tcp_proxy of a sidecar's inbound TCP ports, with Istio's TCP semantics for HTTP-only fields (see `TcpAction`).
 *
 * - **Which policies apply**: those of the root namespace (mesh-wide) and of the proxy's namespace whose
 *   `selector.matchLabels` the workload's labels include (no selector: every workload there). Policies with
 *   `targetRef`/`targetRefs` (waypoints, Gateway API) are not applied.
 * - **Filters**, one per action present, in Istio's order: `CUSTOM`, `AUDIT` (RBAC action `LOG`), `DENY`, `ALLOW`. A
 *   request must pass every filter: a DENY match wins over any ALLOW.
 * - **CUSTOM** (external authorization, ext-authz.ts): an RBAC filter whose `shadow_rules` (action DENY, stat prefix
 *   `istio_ext_authz_`) hold the CUSTOM policies' rules, named `istio-ext-authz-ns[<ns>]-policy[<name>]-rule[<i>]`,
 *   then the provider's ext_authz filter, enabled by the shadow match only: the authorizer is asked about the
 *   requests the rules match, and only those. The CUSTOM policies of one workload must name one provider. A provider
 *   that is not in the mesh config, whose service is not in the registry, or a workload with several: the rules
 *   become enforced DENY rules (`...-deny-due-to-bad-CUSTOM-action`), as Istio does: what the policy meant to send to
 *   the authorizer is refused. Dry-run CUSTOM policies are not built. On a TCP port (no network ext_authz in Loom) the
 *   connections a CUSTOM policy's rules match are refused by a network DENY filter.
 * - **ALLOW**: when any ALLOW policy applies, a request is admitted only when one of their rules matches; an ALLOW
 *   policy without rules matches nothing (deny all), a rule `{}` matches everything; no ALLOW policy: no ALLOW filter
 *   (everything is allowed, save what DENY denies).
 * - **A rule** is one RBAC policy named `ns[<ns>]-policy[<name>]-rule[<i>]`: its permissions are one `and_rules`
 *   per `to` entry (the operation's fields, and the `when` conditions on the destination), its principals one
 *   `and_ids` per `from` entry (the source's fields, and the `when` conditions on the source and the request). In
 *   each field the values are or-ed; a `not` field is `not_rule`/`not_id` of them.
 * - `istio.io/dry-run: "true"`: the policy's rules go to `shadow_rules` (stat prefix `istio_dry_run_allow_` /
 *   `istio_dry_run_deny_`): evaluated and counted, never enforced.
 *
 * Values: principals are SPIFFE IDs written without `spiffe://` (`cluster.local/ns/x/sa/y`), `*` any authenticated
 * peer, `prefix*` and `*suffix`; namespaces match `/ns/<ns>/` in the peer's ID; hosts match `:authority`
 * case-insensitively as written (a port in the request must be written too); paths are exact, `prefix*`, `*suffix`, `*`, or
 * Istio's templates (`{*}` one segment, `{**}` the rest). Ports are the workload's ports: each listener's filters
 * are built for its own port, so `ports` and `destination.port` are decided here when the proxy listens elsewhere
 * (Loom's local mode maps ports).
 */
import type { AuthorizationPolicySpec, Resource } from '../../api/index.js'
import type { Condition, Operation, Source } from '../../api/security.js'
import { TypeUrls } from '../../config/type-urls.js'
import { labelsMatch } from '../registry/hostname.js'
import { EXT_AUTHZ_POLICY_PREFIX, EXT_AUTHZ_SHADOW_PREFIX, extAuthzConfig, resolveProvider } from './ext-authz.js'
import type { Scope } from './scope.js'
import type { Json } from './util.js'

export const AUTHN_METADATA = 'istio_authn'
export const DRY_RUN_ANNOTATION = 'istio.io/dry-run'

/**
 * The ports that name a listener in `ports` and `destination.port` (the workload's port, and on sidecars the
 * service port too: under Loom's local mode the registered port is the sidecar's own) and the port the proxy
 * really listens on.
 */
export interface ListenerPorts {
  workloadPort: number
  servicePort?: number
  listenPort: number
}

/** The AuthorizationPolicies that apply to the scope's workload, in config order. */
export function applicablePolicies(scope: Scope): Resource<AuthorizationPolicySpec>[] {
  const root = scope.mesh.rootNamespace
  const ns = scope.node.namespace
  return scope.of<AuthorizationPolicySpec>('AuthorizationPolicy').filter((p) => {
    const spec = p.spec ?? {}
    if (spec.targetRef !== undefined || spec.targetRefs !== undefined) return false
    if (p.metadata.namespace !== root && p.metadata.namespace !== ns) return false
    return labelsMatch(spec.selector?.matchLabels ?? {}, scope.node.labels)
  })
}

/** The RBAC HTTP filters for one listener of the scope's workload (none when no policy applies). */
export function authzHttpFilters(scope: Scope, ports: ListenerPorts): Json[] {
  return authzFilters(scope, ports, null)
}

/**
 * The network RBAC filters for one TCP listener (a port whose protocol is not HTTP) of the scope's workload, before
 * its tcp_proxy, with Istio's TCP semantics (see `HTTP_ONLY`): stat prefix `tcp.`, as Istio's.
 */
export function authzNetworkFilters(scope: Scope, ports: ListenerPorts): Json[] {
  return authzFilters(scope, ports, 'tcp')
}

function authzFilters(scope: Scope, ports: ListenerPorts, tcp: 'tcp' | null): Json[] {
  const policies = applicablePolicies(scope)
  if (policies.length === 0) return []
  const custom = policies.filter((p) => p.spec?.action === 'CUSTOM' && !isDryRun(p))
  const out: Json[] = tcp === null ? customFilters(scope, custom, ports) : customNetworkFilters(custom, ports)
  for (const action of ['AUDIT', 'DENY', 'ALLOW'] as const) {
    const mine = policies.filter((p) => (p.spec?.action ?? 'ALLOW') === action)
    if (mine.length === 0) continue
    const enforced = mine.filter((p) => !isDryRun(p))
    const dryRun = mine.filter(isDryRun)
    const rbacAction = action === 'AUDIT' ? 'LOG' : action
    const config: Json =
      tcp === null ? { '@type': TypeUrls.rbac } : { '@type': TypeUrls.networkRbac, stat_prefix: TCP_STAT_PREFIX }
    const on = tcp === null ? null : rbacAction
    if (enforced.length > 0) config.rules = rules(rbacAction, enforced, ports, on)
    if (dryRun.length > 0) {
      config.shadow_rules = rules(rbacAction, dryRun, ports, on)
      config.shadow_rules_stat_prefix = `istio_dry_run_${action === 'DENY' ? 'deny' : action === 'ALLOW' ? 'allow' : 'audit'}_`
    }
    const kind = tcp === null ? 'http' : 'network'
    out.push({ name: `envoy.filters.${kind}.rbac.${action.toLowerCase()}`, typed_config: config })
  }
  return out
}

/** Istio's stat prefix of its network RBAC filters: counters `tcp.rbac.allowed`, `tcp.rbac.denied`. */
export const TCP_STAT_PREFIX = 'tcp.'

/**
 * CUSTOM on a TCP port: Loom has no network ext_authz filter, so the connections the rules match are refused
 * (a network DENY filter), never let through unchecked.
 */
function customNetworkFilters(policies: Resource<AuthorizationPolicySpec>[], ports: ListenerPorts): Json[] {
  if (policies.length === 0) return []
  const out = rules('DENY', policies, ports, 'DENY', EXT_AUTHZ_POLICY_PREFIX)
  const renamed: Json = {}
  for (const [k, v] of Object.entries(out.policies as Json)) renamed[`${k}-deny-due-to-CUSTOM-on-tcp`] = v
  return [
    {
      name: 'envoy.filters.network.rbac.custom',
      typed_config: {
        '@type': TypeUrls.networkRbac,
        stat_prefix: TCP_STAT_PREFIX,
        rules: { ...out, policies: renamed },
      },
    },
  ]
}

/** The CUSTOM policies' pair of filters (RBAC shadow, ext_authz), or the DENY filter their bad provider makes. */
function customFilters(scope: Scope, policies: Resource<AuthorizationPolicySpec>[], ports: ListenerPorts): Json[] {
  if (policies.length === 0) return []
  const names = [...new Set(policies.map((p) => p.spec?.provider?.name ?? ''))]
  const resolved =
    names.length === 1
      ? resolveProvider(scope.mesh, scope, names[0]!)
      : { error: `the CUSTOM policies of one workload name several providers (${names.join(', ')})` }
  const named = (suffix: string) => {
    const out = rules('DENY', policies, ports, null, EXT_AUTHZ_POLICY_PREFIX)
    if (suffix === '') return out
    const renamed: Json = {}
    for (const [k, v] of Object.entries(out.policies as Json)) renamed[`${k}${suffix}`] = v
    return { ...out, policies: renamed }
  }
  if ('error' in resolved)
    return [
      {
        name: 'envoy.filters.http.rbac.custom',
        typed_config: { '@type': TypeUrls.rbac, rules: named('-deny-due-to-bad-CUSTOM-action') },
      },
    ]
  return [
    {
      name: 'envoy.filters.http.rbac.custom',
      typed_config: {
        '@type': TypeUrls.rbac,
        shadow_rules: named(''),
        shadow_rules_stat_prefix: EXT_AUTHZ_SHADOW_PREFIX,
      },
    },
    {
      name: 'envoy.filters.http.ext_authz',
      typed_config: extAuthzConfig(resolved.provider, resolved.hostname, resolved.port),
    },
  ]
}

function isDryRun(p: Resource<AuthorizationPolicySpec>): boolean {
  return (p.metadata.annotations?.[DRY_RUN_ANNOTATION] ?? '').toLowerCase() === 'true'
}

/**
 * `tcp`: the RBAC action of a network filter (Istio's TCP semantics), null for an HTTP filter; `prefix` goes before
 * each policy's name (CUSTOM's).
 */
function rules(
  action: string,
  policies: Resource<AuthorizationPolicySpec>[],
  ports: ListenerPorts,
  tcp: TcpAction | null,
  prefix = '',
): Json {
  const named: Json = {}
  const pre = prefix === '' ? '' : `${prefix}-`
  for (const p of policies) {
    p.spec?.rules?.forEach((rule, i) => {
      const policy = translateRule(rule, p.metadata.namespace, ports, tcp)
      if (policy !== null) named[`${pre}ns[${p.metadata.namespace}]-policy[${p.metadata.name}]-rule[${i}]`] = policy
    })
  }
  const out: Json = { policies: named }
  if (action !== 'ALLOW') out.action = action
  return out
}

interface Rule {
  from?: { source?: Source }[]
  to?: { operation?: Operation }[]
  when?: Condition[]
}

/**
 * Istio's TCP semantics: a network filter sees connections, not requests, so the HTTP-only fields (`hosts`,
 * `methods`, `paths` and their `not` forms, `requestPrincipals` / `notRequestPrincipals`, the `when` keys
 * `request.headers[...]`, `request.auth.principal`, `.audiences`, `.presenter`, `.claims[...]`) cannot be
 * evaluated. In an ALLOW policy, a rule that uses one is left out of the TCP filter (it admits nothing there: a
 * narrower allow); in a DENY or AUDIT policy the HTTP-only values are dropped and the rest of the rule applies (a
 * wider deny: `to: [{operation: {methods: [POST]}}]` alone denies every connection).
 */
export type TcpAction = 'ALLOW' | 'DENY' | 'LOG'

/** Thrown while translating an ALLOW rule for TCP that uses an HTTP-only field: the rule is left out. */
const HTTP_ONLY_IN_ALLOW = Symbol('http-only')

type Make = (v: string) => Json | null

/** `make` for an HTTP-only field: as it is on HTTP; on TCP, nothing (DENY, LOG) or the whole rule left out (ALLOW). */
function httpOnly(make: (v: string) => Json, tcp: TcpAction | null): Make {
  if (tcp === null) return make
  return () => {
    if (tcp === 'ALLOW') throw HTTP_ONLY_IN_ALLOW
    return null
  }
}

const HTTP_ONLY_CONDITIONS = ['request.headers[', 'request.auth.']

/** Whether a `when` key reads the HTTP request (headers or the JWT of RequestAuthentication). */
export function isHttpOnlyCondition(key: string): boolean {
  return HTTP_ONLY_CONDITIONS.some((p) => key.startsWith(p))
}

/** The HTTP-only fields a rule uses (`methods`, `when request.headers[x]`...), in the rule's order; empty: none. */
export function httpOnlyFields(rule: Rule): string[] {
  const out: string[] = []
  const add = (o: Record<string, unknown> | undefined, keys: string[]) => {
    for (const k of keys) if (((o?.[k] as unknown[] | undefined)?.length ?? 0) > 0 && !out.includes(k)) out.push(k)
  }
  for (const t of rule.to ?? []) add(t.operation, ['hosts', 'notHosts', 'methods', 'notMethods', 'paths', 'notPaths'])
  for (const f of rule.from ?? []) add(f.source, ['requestPrincipals', 'notRequestPrincipals'])
  for (const c of rule.when ?? []) if (isHttpOnlyCondition(c.key) && !out.includes(c.key)) out.push(c.key)
  return out
}

/** One rule as one RBAC policy; null when it is left out (an ALLOW rule with HTTP-only fields, on TCP). */
export function translateRule(rule: Rule, namespace: string, ports: ListenerPorts, tcp: TcpAction | null = null) {
  try {
    return buildRule(rule, namespace, ports, tcp)
  } catch (err) {
    if (err === HTTP_ONLY_IN_ALLOW) return null
    throw err
  }
}

function buildRule(rule: Rule, namespace: string, ports: ListenerPorts, tcp: TcpAction | null): Json {
  const permConditions: Json[] = []
  const prinConditions: Json[] = []
  for (const c of rule.when ?? []) {
    const side = conditionSide(c.key)
    const matcher = (v: string) => conditionMatcher(c.key, v, namespace, ports)
    const make = isHttpOnlyCondition(c.key) ? httpOnly(matcher, tcp) : matcher
    const target = side === 'permission' ? permConditions : prinConditions
    target.push(...field(side, c.values, c.notValues, make))
  }
  const permissions = (rule.to ?? [{}]).map((t) => {
    const list = [...(t.operation === undefined ? [] : operationRules(t.operation, ports, tcp)), ...permConditions]
    return { and_rules: { rules: list.length > 0 ? list : [{ any: true }] } }
  })
  const principals = (rule.from ?? [{}]).map((f) => {
    const list = [...(f.source === undefined ? [] : sourceIds(f.source, namespace, tcp)), ...prinConditions]
    return { and_ids: { ids: list.length > 0 ? list : [{ any: true }] } }
  })
  return { permissions, principals }
}

type Side = 'permission' | 'principal'

function anyOf(side: Side, list: Json[]): Json {
  return side === 'permission' ? { or_rules: { rules: list } } : { or_ids: { ids: list } }
}

function noneOf(side: Side, list: Json[]): Json {
  return side === 'permission' ? { not_rule: anyOf(side, list) } : { not_id: anyOf(side, list) }
}

/** A field's values or-ed, its not-values none-of; values `make` drops (HTTP-only on TCP) are left out. */
function field(side: Side, values: string[] | undefined, notValues: string[] | undefined, make: Make) {
  const out: Json[] = []
  const list = (vs: string[] | undefined) => (vs ?? []).map(make).filter((x): x is Json => x !== null)
  const yes = list(values)
  const no = list(notValues)
  if (yes.length > 0) out.push(anyOf(side, yes))
  if (no.length > 0) out.push(noneOf(side, no))
  return out
}

function operationRules(op: Operation, ports: ListenerPorts, tcp: TcpAction | null): Json[] {
  return [
    ...field('permission', op.hosts, op.notHosts, httpOnly(hostRule, tcp)),
    ...field('permission', op.ports, op.notPorts, (p) => portRule(Number(p), ports)),
    ...field(
      'permission',
      op.methods,
      op.notMethods,
      httpOnly((m) => ({ header: headerMatcher(':method', m) }), tcp),
    ),
    ...field(
      'permission',
      op.paths,
      op.notPaths,
      httpOnly((p) => ({ url_path: { path: pathMatcher(p) } }), tcp),
    ),
  ]
}

function sourceIds(src: Source, namespace: string, tcp: TcpAction | null): Json[] {
  return [
    ...field('principal', src.principals, src.notPrincipals, principalId),
    ...field(
      'principal',
      src.requestPrincipals,
      src.notRequestPrincipals,
      httpOnly((v) => authnMetadata(['request.auth.principal'], { string_match: stringMatcher(v) }), tcp),
    ),
    ...field('principal', src.namespaces, src.notNamespaces, namespaceId),
    ...field('principal', src.serviceAccounts, src.notServiceAccounts, (v) => serviceAccountId(v, namespace)),
    ...field('principal', src.ipBlocks, src.notIpBlocks, (v) => ({ direct_remote_ip: cidr(v) })),
    ...field('principal', src.remoteIpBlocks, src.notRemoteIpBlocks, (v) => ({ remote_ip: cidr(v) })),
  ]
}

/** Whether a `when` key is about the destination (permission) or the source and request (principal). */
function conditionSide(key: string): Side {
  return key === 'destination.ip' ||
    key === 'destination.port' ||
    key === 'connection.sni' ||
    key.startsWith('experimental.envoy.filters.')
    ? 'permission'
    : 'principal'
}

function conditionMatcher(key: string, v: string, namespace: string, ports: ListenerPorts): Json {
  switch (key) {
    case 'source.ip':
      return { direct_remote_ip: cidr(v) }
    case 'remote.ip':
      return { remote_ip: cidr(v) }
    case 'source.namespace':
      return namespaceId(v)
    case 'source.principal':
      return principalId(v)
    case 'source.serviceAccount':
      return serviceAccountId(v, namespace)
    case 'request.auth.principal':
    case 'request.auth.presenter':
      return authnMetadata([key], { string_match: stringMatcher(v) })
    case 'request.auth.audiences':
      return authnMetadata([key], { list_match: { one_of: { string_match: stringMatcher(v) } } })
    case 'destination.ip':
      return { destination_ip: cidr(v) }
    case 'destination.port':
      return portRule(Number(v), ports)
    case 'connection.sni':
      return { requested_server_name: stringMatcher(v) }
  }
  const names = bracketed(key)
  if (key.startsWith('request.headers[')) return { header: headerMatcher(names[0] ?? '', v) }
  if (key.startsWith('request.auth.claims['))
    return authnMetadata(['request.auth.claims', ...names], {
      list_match: { one_of: { string_match: stringMatcher(v) } },
    })
  // experimental.envoy.filters.<filter>[<key>]...: the metadata of another filter
  const filter = key.slice('experimental.'.length, key.indexOf('['))
  return { metadata: { filter, path: names.map((k) => ({ key: k })), value: { string_match: stringMatcher(v) } } }
}

/** `a[b][c]` → ['b', 'c'] */
function bracketed(key: string): string[] {
  return [...key.matchAll(/\[([^\]]*)\]/g)].map((m) => m[1]!)
}

function authnMetadata(path: string[], value: Json): Json {
  return { metadata: { filter: AUTHN_METADATA, path: path.map((key) => ({ key })), value } }
}

function quote(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')
}

/** Istio's value matching: `*` any non-empty value, `prefix*`, `*suffix`, else exact; `prefix` is prepended. */
export function stringMatcher(v: string, prefix = ''): Json {
  if (v === '*') return { safe_regex: { regex: prefix === '' ? '.+' : `${quote(prefix)}.+` } }
  if (v.startsWith('*')) {
    return prefix === '' ? { suffix: v.slice(1) } : { safe_regex: { regex: `${quote(prefix)}.*${quote(v.slice(1))}` } }
  }
  if (v.endsWith('*')) return { prefix: prefix + v.slice(0, -1) }
  return { exact: prefix + v }
}

function headerMatcher(name: string, v: string): Json {
  if (v === '*') return { name, present_match: true }
  return { name, string_match: stringMatcher(v) }
}

function principalId(v: string): Json {
  return { authenticated: { principal_name: stringMatcher(v, 'spiffe://') } }
}

function namespaceId(v: string): Json {
  const ns = v.split('*').map(quote).join('.*')
  return { authenticated: { principal_name: { safe_regex: { regex: `.*/ns/${ns}/.*` } } } }
}

/** `ns/sa`, or `sa` in the policy's namespace. */
function serviceAccountId(v: string, namespace: string): Json {
  const slash = v.indexOf('/')
  const ns = slash < 0 ? namespace : v.slice(0, slash)
  const sa = slash < 0 ? v : v.slice(slash + 1)
  return {
    authenticated: { principal_name: { safe_regex: { regex: `spiffe://[^/]+/ns/${quote(ns)}/sa/${quote(sa)}` } } },
  }
}

/**
 * A host matches `:authority` case-insensitively, exactly as written (Istio's): a host written without a port does
 * not match a request whose authority has one (list both, `example.com` and `example.com:8080`); `*suffix` and
 * `prefix*` compare the rest literally.
 */
function hostRule(v: string): Json {
  if (v === '*') return { header: { name: ':authority', present_match: true } }
  let regex: string
  if (v.startsWith('*')) regex = `.*${quote(v.slice(1))}`
  else if (v.endsWith('*')) regex = `${quote(v.slice(0, -1))}.*`
  else regex = quote(v)
  return { header: { name: ':authority', safe_regex_match: { regex: `(?i)${regex}` } } }
}

/** Istio's path: `*`, `prefix*`, `*suffix`, exact, or a template with `{*}` (one segment) and `{**}` (the rest). */
export function pathMatcher(v: string): Json {
  if (v.includes('{*}') || v.includes('{**}')) {
    const regex = v
      .split(/(\{\*\*\}|\{\*\})/)
      .map((part) => (part === '{**}' ? '.*' : part === '{*}' ? '[^/]+' : quote(part)))
      .join('')
    return { safe_regex: { regex } }
  }
  return stringMatcher(v)
}

const NEVER: Json = { not_rule: { any: true } }

/** A workload port: the listener's own port when it is the one named, else nothing (this listener never serves it). */
function portRule(port: number, ports: ListenerPorts): Json {
  if (port === ports.workloadPort || port === ports.servicePort) return { destination_port: ports.listenPort }
  return ports.listenPort === ports.workloadPort ? { destination_port: port } : NEVER
}

function cidr(v: string): Json {
  const slash = v.indexOf('/')
  if (slash < 0) return { address_prefix: v, prefix_len: v.includes(':') ? 128 : 32 }
  return { address_prefix: v.slice(0, slash), prefix_len: Number(v.slice(slash + 1)) }
}
