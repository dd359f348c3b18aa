/**
 * Istio's hostname rules, shared by the registry and the translator.
 *
 * - A Kubernetes-style service `reviews` in namespace `default` is `reviews.default.svc.cluster.local`.
 * - In a VirtualService, DestinationRule or Sidecar, a short name (`reviews`) is relative to the resource's namespace;
 *   `reviews.default` and `reviews.default.svc` name that service when the registry has it; anything else (an FQDN, an
 *   IP, `*`, `*.example.com`) is taken as written.
 * - `*.example.com` matches `a.example.com` and `a.b.example.com`, never `example.com`; `*` matches everything.
 */
import { isIP } from 'node:net'

export const DEFAULT_DOMAIN_SUFFIX = 'cluster.local'

/** `reviews`, `default` → `reviews.default.svc.cluster.local` */
export function serviceFqdn(name: string, namespace: string, domainSuffix = DEFAULT_DOMAIN_SUFFIX): string {
  return `${name}.${namespace}.svc.${domainSuffix}`
}

export function isWildcard(host: string): boolean {
  return host.startsWith('*')
}

/**
 * The hostname `host` means when written in a resource of `namespace`. `known` says whether the registry has an
 * FQDN; it lets `reviews.default` resolve to `reviews.default.svc.cluster.local` without turning `example.com`
 * into `example.com.svc.cluster.local`.
 */
export function resolveHost(
  host: string,
  namespace: string,
  known: (fqdn: string) => boolean = () => false,
  domainSuffix = DEFAULT_DOMAIN_SUFFIX,
): string {
  const h = host.toLowerCase()
  if (isWildcard(h) || isIP(h) !== 0) return h
  if (!h.includes('.')) return serviceFqdn(h, namespace, domainSuffix)
  const parts = h.split('.')
  if (parts.length === 2 || (parts.length === 3 && parts[2] === 'svc')) {
    const fqdn = serviceFqdn(parts[0]!, parts[1]!, domainSuffix)
    if (known(fqdn)) return fqdn
  }
  return h
}

/** Every host that `a` matches is matched by `b` (Istio's `SubsetOf`). */
export function hostSubsetOf(a: string, b: string): boolean {
  if (b === '*') return true
  if (a === '*') return false
  if (isWildcard(b)) return a.slice(isWildcard(a) ? 1 : 0).endsWith(b.slice(1))
  return !isWildcard(a) && a === b
}

/** `a` and `b` have a host in common (Istio's `Matches`). */
export function hostMatches(a: string, b: string): boolean {
  return hostSubsetOf(a, b) || hostSubsetOf(b, a)
}

/**
 * Istio's intersection of two host lists: for every overlapping pair, the more specific of the two, once each, in
 * the order of `a`.
 */
export function intersectHosts(a: readonly string[], b: readonly string[]): string[] {
  const out: string[] = []
  for (const x of a) {
    for (const y of b) {
      const pick = hostSubsetOf(x, y) ? x : hostSubsetOf(y, x) ? y : null
      if (pick !== null && !out.includes(pick)) out.push(pick)
    }
  }
  return out
}

/**
 * Of several patterns that match a host, the most specific: an exact name, else the longest wildcard; ties go to
 * the first. Returns the index, or -1 if none matches.
 */
export function mostSpecificMatch(host: string, patterns: readonly string[]): number {
  let best = -1
  for (let i = 0; i < patterns.length; i++) {
    const p = patterns[i]!
    if (!hostSubsetOf(host, p)) continue
    if (!isWildcard(p)) return i
    if (best < 0 || p.length > patterns[best]!.length) best = i
  }
  return best
}

/**
 * The other names a client in `clientNamespace` may use for a Kubernetes-style FQDN, as Istio generates them:
 * in the same namespace `reviews`, `reviews.default.svc`, `reviews.default`; from another namespace
 * `reviews.default`, `reviews.default.svc`. Hosts outside `*.svc.<domainSuffix>` have no other names.
 */
export function shortNames(fqdn: string, clientNamespace: string, domainSuffix = DEFAULT_DOMAIN_SUFFIX): string[] {
  const suffix = `.svc.${domainSuffix}`
  if (!fqdn.endsWith(suffix)) return []
  const parts = fqdn.slice(0, -suffix.length).split('.')
  if (parts.length !== 2 || parts[0] === '' || parts[1] === '' || isWildcard(fqdn)) return []
  const [name, ns] = parts as [string, string]
  return ns === clientNamespace ? [name, `${name}.${ns}.svc`, `${name}.${ns}`] : [`${name}.${ns}`, `${name}.${ns}.svc`]
}

/**
 * Whether a resource in `namespace` with `exportTo` is visible from `fromNamespace`: `*` (the default) everywhere,
 * `.` in its own namespace, `~` nowhere, a name in that namespace.
 */
export function isExportedTo(
  namespace: string,
  exportTo: readonly string[] | undefined,
  fromNamespace: string,
): boolean {
  if (exportTo === undefined || exportTo.length === 0) return true
  for (const e of exportTo) {
    if (e === '*') return true
    if (e === '.' ? namespace === fromNamespace : e === fromNamespace) return true
  }
  return false
}

/** Every key/value of `selector` is in `labels` (an empty selector selects everything). */
export function labelsMatch(
  selector: Readonly<Record<string, string>> | undefined,
  labels: Readonly<Record<string, string>>,
) {
  if (selector === undefined) return true
  for (const k of Object.keys(selector)) if (labels[k] !== selector[k]) return false
  return true
}
