/**
 * Locality load balancing (DestinationRule `loadBalancer.localityLbSetting`, and the mesh-wide default), as Istio's
 * pilot writes it: the EDS load assignment of a cluster is rewritten per proxy, from where the proxy is.
 *
 * - Which setting applies: the DestinationRule's (none at all with `enabled: false`), else the mesh's (Istio's
 *   default `{enabled: true}`; `meshConfig.localityLbSetting: {enabled: false}` turns it off).
 * - `distribute` (applies with or without outlier detection): the first entry whose `from` matches the proxy's
 *   locality sets each locality's load_balancing_weight: a `to` entry's weight is split among the localities it
 *   matches in proportion to their own weights (rounded up); localities no entry matches keep no endpoint. Entries
 *   are taken in the order written (Istio's Go map order is random; Loom's is the declared one).
 * - failover (only when the cluster has outlier detection, otherwise Envoy would never leave priority 0):
 *   `failoverPriority` first splits each locality's endpoints into priorities by how many of the listed labels, in
 *   order, match the proxy's (a `label=value` entry compares with that value instead of the proxy's); then
 *   (or without `failoverPriority`) the locality's own priority: 0 region/zone/subzone all match, 1 region and zone,
 *   2 region, 3 none, 4 a region that a `failover` entry for the proxy's region does not name as its `to`. The two
 *   combine as `5 × label priority + locality priority`; the priorities in use are renumbered 0, 1, 2...
 * - The cluster gets `common_lb_config.locality_weighted_lb_config` when `distribute` is set, or when failover
 *   applies with `failover` or `failoverPriority` set (Istio's rule: otherwise locality weights would change what
 *   LEAST_REQUEST and the others do).
 *
 * Endpoint and proxy labels are augmented with the topology labels Istio derives from a locality
 * (`topology.kubernetes.io/region`, `topology.kubernetes.io/zone`, `topology.istio.io/subzone`), so
 * `failoverPriority` can name them. A proxy's locality is its labels' topology labels when it has any, else its xDS
 * node.locality.
 *
 * Only EDS clusters are rewritten (STRICT_DNS clusters keep their shared load assignment and get no
 * locality_weighted_lb_config). The rewrite depends only on the proxy's locality and, with `failoverPriority`, the
 * values of the labels it names, so the translator computes it once per such group (`localityGroupKey`).
 */
import type { LoadBalancerSettings } from './types.js'
import type { Json } from './util.js'

export type LocalitySetting = NonNullable<LoadBalancerSettings['localityLbSetting']>

export interface EnvoyLocality {
  region: string
  zone: string
  sub_zone: string
}

export const TOPOLOGY_REGION = 'topology.kubernetes.io/region'
export const TOPOLOGY_ZONE = 'topology.kubernetes.io/zone'
export const TOPOLOGY_SUBZONE = 'topology.istio.io/subzone'

/** Istio's GetLocalityLbSetting: the DestinationRule's setting, else the mesh's; null when locality LB is off. */
export function localitySetting(mesh: LocalitySetting | null, dr: LocalitySetting | undefined): LocalitySetting | null {
  if (dr !== undefined) return dr.enabled === false ? null : dr
  if (mesh === null || mesh.enabled === false) return null
  return mesh
}

/** What one EDS cluster's assignment needs to be rewritten per proxy. */
export interface LocalityPlan {
  /** the ClusterLoadAssignment's cluster_name */
  cluster: string
  setting: LocalitySetting
  /** the cluster has outlier detection: failover applies */
  failover: boolean
  /** `address:port` → the endpoint's labels with its topology labels (only with failoverPriority) */
  labels: Map<string, Record<string, string>>
}

const has = (a: readonly unknown[] | undefined) => a !== undefined && a.length > 0

/** The plan for a cluster, or null when the setting changes nothing (no distribute, and no failover to apply). */
export function localityPlan(
  cluster: string,
  setting: LocalitySetting | null,
  outlierDetection: boolean,
  endpointLabels: () => Map<string, Record<string, string>>,
): LocalityPlan | null {
  if (setting === null) return null
  if (!has(setting.distribute) && !outlierDetection) return null
  const labels =
    !has(setting.distribute) && has(setting.failoverPriority)
      ? endpointLabels()
      : new Map<string, Record<string, string>>()
  return { cluster, setting, failover: outlierDetection, labels }
}

/** Whether the cluster gets `common_lb_config.locality_weighted_lb_config` (Istio's applyLocalityLoadBalancer). */
export function localityWeighted(setting: LocalitySetting | null, outlierDetection: boolean): boolean {
  if (setting === null) return false
  return has(setting.distribute) || (outlierDetection && (has(setting.failover) || has(setting.failoverPriority)))
}

/** `labels` plus the topology labels of `locality` (`region/zone/subzone`), as Istio's AugmentLabels adds them. */
export function withTopologyLabels(labels: Record<string, string>, locality: EnvoyLocality): Record<string, string> {
  const out = { ...labels }
  if (locality.region !== '') out[TOPOLOGY_REGION] = locality.region
  if (locality.zone !== '') out[TOPOLOGY_ZONE] = locality.zone
  if (locality.sub_zone !== '') out[TOPOLOGY_SUBZONE] = locality.sub_zone
  return out
}

/** A proxy's locality: from its topology labels when it has any (Istio reads the registry's first), else the node's. */
export function proxyLocality(labels: Record<string, string>, node: Partial<EnvoyLocality> | undefined): EnvoyLocality {
  if (
    labels[TOPOLOGY_REGION] !== undefined ||
    labels[TOPOLOGY_ZONE] !== undefined ||
    labels[TOPOLOGY_SUBZONE] !== undefined
  ) {
    return {
      region: labels[TOPOLOGY_REGION] ?? '',
      zone: labels[TOPOLOGY_ZONE] ?? '',
      sub_zone: labels[TOPOLOGY_SUBZONE] ?? '',
    }
  }
  return { region: node?.region ?? '', zone: node?.zone ?? '', sub_zone: node?.sub_zone ?? '' }
}

/** Istio's LocalityMatch: `region[/zone[/subzone]]`, `*` matching anything from there on. */
export function localityMatches(l: EnvoyLocality, rule: string): boolean {
  const [region = '', zone = '', subzone = ''] = rule.split('/', 3)
  if (region === '*') return true
  if (l.region !== region) return false
  if (zone === '' || zone === '*') return true
  if (l.zone !== zone) return false
  return subzone === '' || subzone === '*' || l.sub_zone === subzone
}

/** Istio's LbPriority: 0 same subzone, 1 same zone, 2 same region, 3 other region. */
export function lbPriority(proxy: EnvoyLocality, ep: EnvoyLocality): number {
  if (proxy.region !== ep.region) return 3
  if (proxy.zone !== ep.zone) return 2
  return proxy.sub_zone === ep.sub_zone ? 0 : 1
}

/** The proxy as the rewrite sees it. */
export interface LocalityProxy {
  locality: EnvoyLocality
  /** the proxy's labels with its topology labels */
  labels: Record<string, string>
}

/** The label names failoverPriority entries use, per plan list (computed once, not per proxy). */
const priorityNames = new WeakMap<readonly LocalityPlan[], string[]>()

/** The key proxies share a rewrite under: their locality and the values of the labels failoverPriority names. */
export function localityGroupKey(proxy: LocalityProxy, plans: readonly LocalityPlan[]): string {
  let names = priorityNames.get(plans)
  if (names === undefined) {
    const set = new Set<string>()
    for (const p of plans) for (const l of p.setting.failoverPriority ?? []) set.add(l.split('=')[0]!)
    names = [...set].sort()
    priorityNames.set(plans, names)
  }
  const l = proxy.locality
  const key: string[] = [l.region, l.zone, l.sub_zone]
  for (const n of names) key.push(n, proxy.labels[n] ?? '\u0000')
  return JSON.stringify(key)
}

interface Group {
  locality: EnvoyLocality
  load_balancing_weight?: number
  priority?: number
  lb_endpoints: Json[]
}

/** The assignment `cla` as `proxy` gets it under `plan`. `cla` is not modified. */
export function applyLocality(cla: Json, plan: LocalityPlan, proxy: LocalityProxy): Json {
  const groups = ((cla.endpoints ?? []) as Group[]).map((g) => ({ ...g }))
  const s = plan.setting
  if (has(s.distribute)) applyDistribute(groups, s.distribute!, proxy.locality)
  else if (plan.failover) {
    let out = groups
    if (has(s.failoverPriority)) {
      out = applyFailoverPriority(groups, plan.labels, proxy.labels, s.failoverPriority!)
      if (has(s.failover)) applyFailover(out, s.failover!, proxy.locality)
    } else applyFailover(out, s.failover ?? [], proxy.locality)
    return { ...cla, endpoints: out.map(tidy) }
  }
  return { ...cla, endpoints: groups.map(tidy) }
}

/** Priority 0 is the default: left out, so an unchanged assignment stays byte for byte what it was. */
function tidy(g: Group): Json {
  const out: Json = { ...g }
  if (out.priority === 0) delete out.priority
  return out
}

function applyDistribute(
  groups: Group[],
  distribute: NonNullable<LocalitySetting['distribute']>,
  proxy: EnvoyLocality,
) {
  const rule = distribute.find((d) => localityMatches(proxy, d.from ?? ''))
  if (rule === undefined) return
  const unmatched = new Set(groups.map((_, i) => i))
  for (const [to, weight] of Object.entries(rule.to ?? {})) {
    const matched: number[] = []
    let total = 0
    for (const i of unmatched) {
      if (!localityMatches(groups[i]!.locality, to)) continue
      matched.push(i)
      total += groups[i]!.load_balancing_weight ?? 1
    }
    for (const i of matched) {
      unmatched.delete(i)
      const own = groups[i]!.load_balancing_weight ?? 1
      const w = Math.ceil((own * weight) / total)
      if (w > 0) groups[i]!.load_balancing_weight = w
    }
  }
  for (const i of unmatched) groups[i]!.lb_endpoints = []
}

function applyFailover(groups: Group[], failover: NonNullable<LocalitySetting['failover']>, proxy: EnvoyLocality) {
  for (const g of groups) {
    let p = lbPriority(proxy, g.locality)
    if (p === 3) {
      const f = failover.find((x) => x.from === proxy.region)
      if (f !== undefined && g.locality.region !== f.to) p = 4
    }
    g.priority = (g.priority ?? 0) * 5 + p
  }
  renumber(groups)
}

function applyFailoverPriority(
  groups: Group[],
  endpointLabels: Map<string, Record<string, string>>,
  proxyLabels: Record<string, string>,
  priorities: readonly string[],
): Group[] {
  // Istio returns the assignment as it is for a proxy without labels
  if (Object.keys(proxyLabels).length === 0) return groups
  const names: string[] = []
  const overrides = new Map<string, string>()
  for (const entry of priorities) {
    const parts = entry.split('=')
    names.push(parts[0]!)
    if (parts.length === 2) overrides.set(parts[0]!, parts[1]!)
  }
  const out: Group[] = []
  for (const g of groups) {
    const byPriority = new Map<number, Json[]>()
    for (const lbe of g.lb_endpoints) {
      const labels = endpointLabels.get(endpointKey(lbe)) ?? {}
      let p = 0
      for (let j = 0; j < names.length; j++) {
        const n = names[j]!
        if ((overrides.get(n) ?? proxyLabels[n]) !== labels[n]) {
          p = names.length - j
          break
        }
      }
      let list = byPriority.get(p)
      if (list === undefined) byPriority.set(p, (list = []))
      list.push(lbe)
    }
    for (const p of [...byPriority.keys()].sort((a, b) => a - b)) {
      const members = byPriority.get(p)!
      out.push({
        ...g,
        priority: p,
        load_balancing_weight: members.reduce((n, e) => n + ((e.load_balancing_weight as number | undefined) ?? 1), 0),
        lb_endpoints: members,
      })
    }
  }
  renumber(out)
  return out
}

/** Priorities must run 0..N without gaps: the ones in use, in order, become 0, 1, 2... */
function renumber(groups: Group[]) {
  const used = [...new Set(groups.map((g) => g.priority ?? 0))].sort((a, b) => a - b)
  const index = new Map(used.map((p, i) => [p, i]))
  for (const g of groups) g.priority = index.get(g.priority ?? 0)!
}

/** `address:port` of an lb_endpoint. */
export function endpointKey(lbe: Json): string {
  const sa = ((lbe.endpoint as Json).address as Json).socket_address as { address: string; port_value: number }
  return `${sa.address}:${sa.port_value}`
}
