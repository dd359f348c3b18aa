/**
 * The VHDS layout (Envoy's Virtual Host Discovery Service) for proxies that ask for it: a Loom sidecar whose node
 * metadata has `LOOM_VHDS: "true"` (every virtual host, subscribed as a wildcard: what Loom proxies on delta xDS
 * ask for) or `LOOM_ON_DEMAND: "true"` (the virtual hosts it asks for) gets its outbound HTTP route configuration without
 * inline virtual hosts, with `vhds` (over ADS) instead, and each virtual host as its own VirtualHost resource named
 * `<route configuration>/<virtual host>`. A change to one VirtualService then reaches the proxy as one small
 * resource, and the proxy may hold only the virtual hosts it asks for (by alias, `<route configuration>/<host>`,
 * which the xDS server resolves against the virtual hosts' domains).
 *
 * A post-step on a translated snapshot: nothing else in the translator knows about it. The split of a route
 * configuration is memoized on the route configuration object, so proxies that share one outbound translation share
 * the resulting objects too (and the xDS cache encodes each once).
 */
import { type ResourceMap, type Snapshot, TYPE_URL, type TypeUrl } from '../../xds/snapshot.js'
import { ADS } from './clusters.js'
import { OUTBOUND_ROUTE } from './listeners.js'
import { contentVersion, type TranslateNode } from './translate.js'
import type { Json } from './util.js'

/** The node metadata key a proxy sets to `"true"` to get the VHDS layout and on-demand virtual hosts. */
export const ON_DEMAND_METADATA = 'LOOM_ON_DEMAND'

/** Whether a node asked for VHDS and on-demand virtual hosts (a sidecar with full listeners). */
export function onDemand(node: TranslateNode): boolean {
  if (node.kind !== 'sidecar' || node.generator !== 'envoy') return false
  const v = node.metadata?.[ON_DEMAND_METADATA]
  return v === 'true' || v === true
}

/**
 * The node metadata key a proxy sets to `"true"` to get the VHDS layout with every virtual host it can see (it
 * subscribes to VirtualHosts as a wildcard): a VirtualService change is then one small resource, not the whole route
 * configuration. Loom proxies on delta xDS set it.
 */
export const VHDS_METADATA = 'LOOM_VHDS'

/** Whether a node gets the VHDS layout: it asked for it, or for on-demand virtual hosts. */
export function wantsVhds(node: TranslateNode): boolean {
  if (node.kind !== 'sidecar' || node.generator !== 'envoy') return false
  const v = node.metadata?.[VHDS_METADATA]
  return v === 'true' || v === true || onDemand(node)
}

/** The name of a virtual host's VirtualHost resource. */
export function virtualHostResourceName(routeConfig: string, vhost: string): string {
  return `${routeConfig}/${vhost}`
}

interface Split {
  readonly routeConfig: Json
  readonly vhosts: Json[]
  readonly items: ResourceMap
  readonly version: string
}

const splits = new WeakMap<object, Split>()

const resources = new WeakMap<object, { routeConfig: string; resource: Json }>()

/** A virtual host as a VirtualHost resource: one object per virtual host object (those are shared by proxies). */
function virtualHostResource(routeConfig: string, vh: Json): Json {
  const have = resources.get(vh)
  if (have !== undefined && have.routeConfig === routeConfig) return have.resource
  const resource = { ...vh, name: virtualHostResourceName(routeConfig, vh.name as string) }
  resources.set(vh, { routeConfig, resource })
  return resource
}

/**
 * One object for equal split route configurations: what is left of one once its virtual hosts are out (a name, a
 * few flags, `vhds`) is the same for most proxies, whatever virtual hosts each has, and the xDS cache then hashes
 * it once (it knows an object it has seen). Bounded: a few distinct ones are expected.
 */
const routeConfigs = new Map<string, Json>()
function sharedRouteConfig(rc: Json): Json {
  const key = JSON.stringify(rc)
  const have = routeConfigs.get(key)
  if (have !== undefined) return have
  if (routeConfigs.size >= 256) routeConfigs.clear()
  routeConfigs.set(key, rc)
  return rc
}

/** The route configuration with `vhds` in place of its virtual hosts, and those as VirtualHost resources. */
export function splitRouteConfig(rc: Json): Split {
  let s = splits.get(rc)
  if (s !== undefined) return s
  const name = rc.name as string
  const { virtual_hosts, ...rest } = rc
  const vhosts = ((virtual_hosts ?? []) as Json[]).map((vh) => virtualHostResource(name, vh))
  const items: ResourceMap = new Map()
  for (const vh of vhosts) items.set(vh.name as string, vh)
  let version: string | null = null
  s = {
    routeConfig: sharedRouteConfig({ ...rest, vhds: { config_source: ADS } }),
    vhosts,
    items,
    // computed on first read, as the translator's own versions are: the xDS cache versions snapshots by itself
    get version() {
      version ??= contentVersion(vhosts)
      return version
    },
  }
  splits.set(rc, s)
  return s
}

/**
 * The snapshot as a VHDS proxy (on demand or not) gets it: its outbound route configuration split (above), the VirtualHost type
 * added. Other nodes' snapshots are returned as they are.
 */
export function vhdsLayout(snapshot: Snapshot, node: TranslateNode): Snapshot {
  if (!wantsVhds(node)) return snapshot
  const routes = snapshot.resources.get(TYPE_URL.route)
  const rc = routes?.items.get(OUTBOUND_ROUTE)
  if (routes === undefined || rc === undefined) return snapshot
  const split = splitRouteConfig(rc)
  const items: ResourceMap = new Map(routes.items)
  items.set(OUTBOUND_ROUTE, split.routeConfig)
  const resources = new Map<TypeUrl, { version: string; items: ResourceMap }>(snapshot.resources)
  // versions on first read only (hashing a proxy's whole route configuration for every rebuild cost seconds)
  let routesVersion: string | null = null
  resources.set(TYPE_URL.route, {
    get version() {
      routesVersion ??= contentVersion([{ vhds: routes.version }])
      return routesVersion
    },
    items,
  })
  resources.set(TYPE_URL.virtualHost, {
    get version() {
      return split.version
    },
    items: split.items,
  })
  return { resources }
}

/**
 * Route configurations with their VirtualHost resources put back inline (what a proxy holding every virtual host
 * routes by): for tools that read a snapshot as a whole (`loom explain`). Without VirtualHosts, `routes` as they are.
 */
export function inlineVirtualHosts(routes: readonly Json[], vhosts: readonly Json[]): Json[] {
  if (vhosts.length === 0) return [...routes]
  return routes.map((rc) => {
    if (rc.vhds === undefined) return rc
    const prefix = `${rc.name as string}/`
    const own = vhosts
      .filter((v) => (v.name as string).startsWith(prefix))
      .map((v) => ({ ...v, name: (v.name as string).slice(prefix.length) }))
    const { vhds: _, ...rest } = rc
    return { ...rest, virtual_hosts: [...((rc.virtual_hosts as Json[] | undefined) ?? []), ...own] }
  })
}
