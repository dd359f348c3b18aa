/**
 * VHDS aliases: a client asks for a virtual host it does not have by subscribing to `<route configuration>/<host>`
 * (Envoy's on-demand VHDS). The server resolves the alias to the VirtualHost resource (named
 * `<route configuration>/<virtual host>`) whose domains match the host, by Envoy's virtual host matching: an exact
 * domain first, then the longest suffix wildcard (`*.example.com`), then the longest prefix wildcard (`api.*`), then
 * `*`. Matching ignores case. An alias that matches nothing is not found (answered in `removed_resources`).
 *
 * The index of a VirtualHost set's domains is built once per set (a snapshot's map) and shared by every stream.
 */
import type { CachedResource } from './cache.js'

interface DomainIndex {
  exact: Map<string, string>
  /** `*.x` / `*x` domains: the suffix after `*`, longest first */
  suffixes: [string, string][]
  /** `x.*` / `x*` domains: the prefix before `*`, longest first */
  prefixes: [string, string][]
  any?: string
}

const indexes = new WeakMap<ReadonlyMap<string, CachedResource>, Map<string, DomainIndex>>()

/** Per route configuration name, the domains of its virtual hosts. */
function indexOf(items: ReadonlyMap<string, CachedResource>): Map<string, DomainIndex> {
  let byConfig = indexes.get(items)
  if (byConfig !== undefined) return byConfig
  byConfig = new Map()
  for (const [name, r] of items) {
    const slash = name.indexOf('/')
    if (slash <= 0) continue
    const rc = name.slice(0, slash)
    let ix = byConfig.get(rc)
    if (ix === undefined) byConfig.set(rc, (ix = { exact: new Map(), suffixes: [], prefixes: [] }))
    const domains = (r.resource.domains ?? []) as unknown[]
    for (const d of domains) {
      if (typeof d !== 'string' || d === '') continue
      const k = d.toLowerCase()
      if (k === '*') ix.any ??= name
      else if (k.startsWith('*')) ix.suffixes.push([k.slice(1), name])
      else if (k.endsWith('*')) ix.prefixes.push([k.slice(0, -1), name])
      else if (!ix.exact.has(k)) ix.exact.set(k, name)
    }
  }
  for (const ix of byConfig.values()) {
    ix.suffixes.sort((a, b) => b[0].length - a[0].length)
    ix.prefixes.sort((a, b) => b[0].length - a[0].length)
  }
  indexes.set(items, byConfig)
  return byConfig
}

/**
 * The VirtualHost resource an alias `<route configuration>/<host>[:port]` resolves to in `items`, or undefined
 * when no virtual host of that route configuration matches (or the name is not an alias).
 */
export function resolveAlias(items: ReadonlyMap<string, CachedResource>, alias: string): string | undefined {
  const slash = alias.indexOf('/')
  if (slash <= 0 || slash === alias.length - 1) return undefined
  const ix = indexOf(items).get(alias.slice(0, slash))
  if (ix === undefined) return undefined
  const host = alias.slice(slash + 1).toLowerCase()
  const e = ix.exact.get(host)
  if (e !== undefined) return e
  for (const [s, name] of ix.suffixes) if (host.length > s.length && host.endsWith(s)) return name
  for (const [p, name] of ix.prefixes) if (host.length > p.length && host.startsWith(p)) return name
  return ix.any
}
