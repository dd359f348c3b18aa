/**
 * `loom analyze`: problems in a mesh config that validation cannot see because they span resources or the
 * registry, and config Loom accepts but does not translate yet. Like Istio's analyzers, every message names the
 * resource (`Kind/namespace/name`) and the field path.
 *
 * errors: destination hosts that are not in the registry, subsets no DestinationRule defines, destination ports
 *   the service does not have, gateways that do not exist, two VirtualServices for one host on the mesh (only the
 *   oldest applies).
 * warnings: rules shadowed by an earlier catch-all, DestinationRules for unknown hosts, subsets without endpoints,
 *   several VirtualServices for one host on a gateway (their routes merge), ambiguous destination ports, and every
 *   kind and field accepted but not enforced yet (the table in `not-enforced.ts`), first for each resource;
 *   GlobalRateLimit hosts no service answers to, and hosts two unmatched limits cover (ratelimit/analyze.ts).
 */
import { isIP } from 'node:net'
import {
  type AuthorizationPolicySpec,
  type DestinationRuleSpec,
  type GatewaySpec,
  type GlobalRateLimitSpec,
  type HTTPMatchRequest,
  keyOf,
  type Resource,
  type ServiceEntrySpec,
  type TrafficPolicy,
  type VirtualServiceSpec,
  type WorkloadEntrySpec,
} from '../../api/index.js'
import { analyzeGlobalRateLimits } from '../ratelimit/analyze.js'
import { hostMatches, isWildcard, labelsMatch, resolveHost } from '../registry/hostname.js'
import { configOrder, isHttpProtocol, type Service } from '../registry/registry.js'
import { httpOnlyFields } from './authz.js'
import type { Diagnostic } from './diagnostic.js'
import { terminatingTls } from './listeners.js'
import { resolveProvider } from './ext-authz.js'
import { notEnforced } from './not-enforced.js'
import { resolveGatewayName, virtualServiceGateways } from './routes.js'
import { type MeshConfig, resolveMeshConfig } from './scope.js'
import { cmp } from './util.js'

export { type Diagnostic, formatDiagnostic, locate, type Origins } from './diagnostic.js'

/**
 * Diagnostics for `resources` with the registry's `services`. With `only` (resource keys), only those resources'
 * diagnostics are computed (the others still count: an older VirtualService for the same host, and so on).
 */
export function analyze(
  resources: readonly Resource[],
  services: readonly Service[],
  meshConfig?: MeshConfig,
  only?: ReadonlySet<string>,
): Diagnostic[] {
  const mesh = resolveMeshConfig(meshConfig)
  const sorted = [...resources].sort(configOrder)
  services = [...services].sort((a, b) => cmp(a.hostname, b.hostname) || cmp(a.namespace, b.namespace))
  const known = new Set(services.map((s) => s.hostname))
  const resolve = (h: string, ns: string) => resolveHost(h, ns, (x) => known.has(x), mesh.domainSuffix)
  const out: Diagnostic[] = []
  const want = (r: Resource) => only === undefined || only.has(keyOf(r))
  const report = (level: Diagnostic['level'], r: Resource, path: string, message: string) => {
    if (want(r)) out.push({ level, message, resource: keyOf(r), path })
  }
  const of = <S>(kind: string) => sorted.filter((r) => r.kind === kind) as Resource<S>[]
  const unenforced = (r: Resource) => {
    for (const { path, message } of notEnforced(r)) report('warning', r, path, message)
  }

  const drs = of<DestinationRuleSpec>('DestinationRule')
  const gateways = new Set(
    of<GatewaySpec>('Gateway').map((g) => resolveGatewayName(g.metadata.name, g.metadata.namespace)),
  )
  // by hostname, the first of each (services are sorted by hostname, then namespace)
  const byHost = new Map<string, Service[]>()
  for (const s of services) {
    const list = byHost.get(s.hostname)
    if (list === undefined) byHost.set(s.hostname, [s])
    else list.push(s)
  }
  const serviceFor = (fqdn: string) => byHost.get(fqdn)?.[0]
  const subsetDefined = (fqdn: string, subset: string) =>
    drs.some(
      (dr) =>
        hostMatches(fqdn, resolve(dr.spec.host ?? '', dr.metadata.namespace)) &&
        (dr.spec.subsets ?? []).some((s) => s.name === subset),
    )

  // === VirtualServices ===
  const claims = new Map<string, Resource<VirtualServiceSpec>>()
  for (const vs of of<VirtualServiceSpec>('VirtualService')) {
    const selected = want(vs)
    if (selected) unenforced(vs)
    const ns = vs.metadata.namespace
    const spec = vs.spec
    const bound = virtualServiceGateways(vs)
    ;(selected ? (spec.gateways ?? []) : []).forEach((g, i) => {
      const name = resolveGatewayName(g, ns)
      if (name !== 'mesh' && !gateways.has(name))
        report('error', vs, `spec.gateways[${i}]`, `gateway ${name} not found`)
    })
    for (const g of bound) {
      for (const raw of spec.hosts ?? []) {
        const h = resolve(raw, ns)
        const key = `${g}|${h}`
        const first = claims.get(key)
        if (first === undefined) claims.set(key, vs)
        else if (g === 'mesh')
          report(
            'error',
            vs,
            'spec.hosts',
            `host ${h} is also routed by ${keyOf(first)} on the mesh; only the oldest applies`,
          )
        else
          report(
            'warning',
            vs,
            'spec.hosts',
            `host ${h} is also routed by ${keyOf(first)} on gateway ${g}; routes merge`,
          )
      }
    }
    if (!selected) continue

    let catchAll: string | null = null
    ;(spec.http ?? []).forEach((http, i) => {
      const p = `spec.http[${i}]`
      if (catchAll !== null) report('warning', vs, p, `unreachable: ${catchAll} already matches every request`)
      if (catchAll === null) {
        const ms = http.match ?? []
        const j = ms.length === 0 ? -1 : ms.findIndex(matchesEverything)
        if (ms.length === 0) catchAll = p
        else if (j >= 0) {
          catchAll = `${p}.match[${j}]`
          if (j < ms.length - 1)
            report('warning', vs, `${p}.match[${j + 1}]`, `unreachable: ${catchAll} matches every request`)
        }
      }
      const dests = http.route ?? []
      dests.forEach((d, k) => {
        const dp = `${p}.route[${k}].destination`
        const h = resolve(d.destination.host, ns)
        if (isWildcard(h)) return
        const svc = serviceFor(h)
        if (svc === undefined) {
          report('error', vs, `${dp}.host`, `destination host ${h} not found in the registry`)
          return
        }
        const subset = d.destination.subset
        if (subset !== undefined && subset !== '' && !subsetDefined(h, subset)) {
          report('error', vs, `${dp}.subset`, `subset ${subset} of ${h} is not defined by any DestinationRule`)
        }
        const port = d.destination.port?.number
        if (port !== undefined && !svc.ports.some((sp) => sp.number === port)) {
          report('error', vs, `${dp}.port`, `${h} has no port ${port}`)
        } else if (port === undefined && svc.ports.length > 1) {
          report(
            'warning',
            vs,
            `${dp}.port`,
            `${h} has several ports; without destination.port the request's port is used`,
          )
        }
        const authority = Object.keys({ ...d.headers?.request?.set, ...d.headers?.request?.add }).some((n) =>
          ['host', ':authority'].includes(n.toLowerCase()),
        )
        if (authority && dests.length > 1) {
          report(
            'warning',
            vs,
            `${p}.route[${k}].headers`,
            'rewriting the authority per weighted destination is not supported yet',
          )
        }
      })
    })
  }

  // === DestinationRules ===
  const drHosts = new Map<string, Resource<DestinationRuleSpec>>()
  for (const dr of drs) {
    const h = resolve(dr.spec.host ?? '', dr.metadata.namespace)
    const key = `${dr.metadata.namespace}|${h}`
    const first = drHosts.get(key)
    if (first === undefined) drHosts.set(key, dr)
    if (!want(dr)) continue
    unenforced(dr)
    const svc = serviceFor(h)
    if (svc === undefined && !(isWildcard(h) && services.some((s) => hostMatches(s.hostname, h)))) {
      report('warning', dr, 'spec.host', `no service ${h} in the registry`)
    }
    if (first !== undefined && first.spec.trafficPolicy !== undefined && dr.spec.trafficPolicy !== undefined) {
      report(
        'warning',
        dr,
        'spec.trafficPolicy',
        `${keyOf(first)} is older and also sets a traffic policy for ${h}; it wins`,
      )
    }
    // localityLbSetting: Istio's warning that failover needs outlier detection in the same policy (or Envoy never
    // leaves priority 0), and DNS services, whose clusters Loom does not rewrite per locality
    const dns = svc !== undefined && svc.resolution !== 'NONE' && svc.resolution !== 'STATIC'
    const localityChecks = (tp: TrafficPolicy | undefined, p: string) => {
      const check = (q: { loadBalancer?: TrafficPolicy['loadBalancer']; outlierDetection?: unknown }, at: string) => {
        const l = q.loadBalancer?.localityLbSetting
        if (l === undefined) return
        const lp = `${at}.loadBalancer.localityLbSetting`
        if (dns && l.enabled !== false) {
          report('warning', dr, lp, `${h} is resolved by DNS: locality load balancing is not applied to it yet`)
        }
        if (q.outlierDetection !== undefined) return
        if ((l.failover ?? []).length > 0 || (l.failoverPriority ?? []).length > 0) {
          report(
            'warning',
            dr,
            lp,
            'outlier detection policy must be provided for failover; without outlierDetection it is ignored',
          )
        }
      }
      if (tp === undefined) return
      check(tp, p)
      ;(tp.portLevelSettings ?? []).forEach((pl, i) => {
        check(pl, `${p}.portLevelSettings[${i}]`)
      })
    }
    localityChecks(dr.spec.trafficPolicy, 'spec.trafficPolicy')
    ;(dr.spec.subsets ?? []).forEach((s, i) => {
      localityChecks(s.trafficPolicy, `spec.subsets[${i}].trafficPolicy`)
    })
    ;(dr.spec.subsets ?? []).forEach((s, i) => {
      if (svc !== undefined && !svc.endpoints.some((e) => labelsMatch(s.labels ?? {}, e.labels))) {
        report('warning', dr, `spec.subsets[${i}]`, `subset ${s.name} selects no endpoint of ${h}`)
      }
    })
  }

  // === Gateways ===
  for (const gw of of<GatewaySpec>('Gateway')) {
    if (!want(gw)) continue
    unenforced(gw)
    const firstTls = new Map<number, boolean>()
    ;(gw.spec.servers ?? []).forEach((s, i) => {
      const p = `spec.servers[${i}]`
      const protocol = (s.port.protocol ?? '').toUpperCase()
      if (protocol === 'HTTPS') {
        if (!terminatingTls(s)) {
          const mode = s.tls?.mode ?? 'SIMPLE'
          const why =
            mode === 'SIMPLE' || mode === 'MUTUAL'
              ? 'a SIMPLE or MUTUAL server needs credentialName, or serverCertificate and privateKey'
              : `TLS mode ${mode} is not supported yet`
          report('warning', gw, `${p}.tls`, `${why}; the server gets no listener`)
          return
        }
      } else if (!['HTTP', 'HTTP2', 'GRPC', 'GRPC-WEB'].includes(protocol)) {
        report('warning', gw, `${p}.port.protocol`, `${protocol} servers are not supported yet; no listener`)
        return
      }
      const tls = terminatingTls(s)
      const seen = firstTls.get(s.port.number)
      if (seen === undefined) firstTls.set(s.port.number, tls)
      else if (seen !== tls)
        report('warning', gw, p, `port ${s.port.number} mixes TLS and plain-text servers; this one is left out`)
    })
  }

  // === ServiceEntries and WorkloadEntries ===
  const entries = of<ServiceEntrySpec>('ServiceEntry')
  for (const se of entries) {
    if (!want(se)) continue
    unenforced(se)
    const resolution = se.spec.resolution ?? 'NONE'
    if (resolution === 'NONE' && (se.spec.endpoints ?? []).length === 0 && se.spec.workloadSelector === undefined) {
      se.spec.hosts.forEach((h, i) => {
        if (isWildcard(h))
          report('warning', se, `spec.hosts[${i}]`, `wildcard host ${h} with resolution NONE gets no cluster`)
      })
    }
    if (resolution === 'STATIC' || resolution === 'NONE') {
      const hosts = new Set(se.spec.hosts.map((h) => h.toLowerCase()))
      const bad = new Set<string>()
      for (const h of hosts) {
        for (const s of byHost.get(h) ?? []) {
          if (s.namespace !== se.metadata.namespace) continue
          for (const e of s.endpoints) if (isIP(e.address) === 0) bad.add(e.address)
        }
      }
      for (const a of [...bad].sort()) {
        report('warning', se, 'spec.endpoints', `endpoint address ${a} is not an IP; use resolution DNS to reach it`)
      }
    }
  }
  for (const we of of<WorkloadEntrySpec>('WorkloadEntry')) {
    if (!want(we)) continue
    unenforced(we)
    const selected = entries.some(
      (se) =>
        se.metadata.namespace === we.metadata.namespace &&
        se.spec.workloadSelector !== undefined &&
        labelsMatch(se.spec.workloadSelector.labels ?? {}, we.spec.labels ?? {}),
    )
    if (!selected) report('warning', we, 'spec.labels', 'no ServiceEntry in the namespace selects this workload')
  }

  // === Sidecars and the security kinds ===
  for (const r of sorted) {
    if (!want(r)) continue
    if (['Sidecar', 'PeerAuthentication', 'AuthorizationPolicy', 'RequestAuthentication'].includes(r.kind))
      unenforced(r)
  }
  for (const ap of of<AuthorizationPolicySpec>('AuthorizationPolicy')) {
    if (want(ap)) httpRulesOnTcp(ap, services, mesh.rootNamespace, (path, m) => report('warning', ap, path, m))
  }
  // CUSTOM providers, against the control plane's mesh config (without one, as in `loom analyze --local`, unknown)
  if (meshConfig !== undefined) {
    for (const ap of of<AuthorizationPolicySpec>('AuthorizationPolicy')) {
      if (!want(ap) || ap.spec?.action !== 'CUSTOM') continue
      const r = resolveProvider(mesh, { allServices: services }, ap.spec.provider?.name ?? '')
      if ('error' in r)
        report('error', ap, 'spec.provider.name', `${r.error}: the requests this policy's rules match are denied`)
    }
  }

  // === GlobalRateLimits ===
  analyzeGlobalRateLimits(of<GlobalRateLimitSpec>('GlobalRateLimit'), [...known], resolve, (level, r, path, m) =>
    report(level, r, path, m),
  )
  return out
}

/**
 * An AuthorizationPolicy rule with HTTP-only fields, on a workload that serves a TCP port: Istio's TCP semantics
 * leave the rule out of an ALLOW (it admits no connection there) and drop the fields from a DENY (it refuses more).
 */
function httpRulesOnTcp(
  ap: Resource<AuthorizationPolicySpec>,
  services: readonly Service[],
  rootNamespace: string,
  warn: (path: string, message: string) => void,
): void {
  const spec = ap.spec ?? {}
  const action = spec.action ?? 'ALLOW'
  if (action === 'CUSTOM' || spec.targetRef !== undefined || spec.targetRefs !== undefined) return
  const rules = (spec.rules ?? []).map((r, i) => [i, httpOnlyFields(r)] as const).filter(([, f]) => f.length > 0)
  if (rules.length === 0) return
  const ns = ap.metadata.namespace
  const sel = spec.selector?.matchLabels ?? {}
  const tcp = new Set<string>()
  for (const s of services) {
    if (ns !== rootNamespace && s.namespace !== ns) continue
    for (const p of s.ports) {
      if (isHttpProtocol(p.protocol) || p.protocol === 'UDP') continue
      if (s.endpoints.some((e) => e.servicePort === p.number && labelsMatch(sel, e.labels)))
        tcp.add(`${s.hostname}:${p.number}`)
    }
  }
  if (tcp.size === 0) return
  const where = [...tcp].sort().slice(0, 3).join(', ') + (tcp.size > 3 ? ', ...' : '')
  for (const [i, fields] of rules) {
    warn(
      `spec.rules[${i}]`,
      `this rule reads HTTP requests (${fields.join(', ')}) and the policy applies to TCP ports (${where}): there, ` +
        (action === 'ALLOW'
          ? 'the rule is left out, so it admits no connection (Istio)'
          : 'those fields are dropped and the rest of the rule applies to every connection (Istio)'),
    )
  }
}

/** A match that every request satisfies (so later rules never run). */
function matchesEverything(m: HTTPMatchRequest): boolean {
  const uriAll =
    m.uri === undefined ||
    m.uri.prefix === '/' ||
    m.uri.prefix === '' ||
    m.uri.regex === '.*' ||
    (m.uri.exact === undefined && m.uri.prefix === undefined && m.uri.regex === undefined)
  const empty = (o: object | undefined) => o === undefined || Object.keys(o).length === 0
  return (
    uriAll &&
    empty(m.headers) &&
    empty(m.withoutHeaders) &&
    empty(m.queryParams) &&
    empty(m.sourceLabels) &&
    m.method === undefined &&
    m.authority === undefined &&
    m.scheme === undefined &&
    m.port === undefined &&
    (m.gateways ?? []).length === 0 &&
    (m.sourceNamespace ?? '') === ''
  )
}
