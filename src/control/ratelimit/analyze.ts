/**
 * `loom analyze` for GlobalRateLimits: a host no service in the registry answers to (the limit is on no caller's
 * route until one does), and a host another limit already covers with no match (requests then count against both,
 * and the smaller rate wins).
 */
import type { GlobalRateLimitSpec, Resource } from '../../api/index.js'
import { hostSubsetOf, isWildcard } from '../registry/hostname.js'

type Report = (level: 'error' | 'warning', r: Resource, path: string, message: string) => void

export function analyzeGlobalRateLimits(
  limits: readonly Resource<GlobalRateLimitSpec>[],
  knownHosts: readonly string[],
  resolve: (host: string, namespace: string) => string,
  report: Report,
): void {
  const unmatched = new Map<string, Resource>()
  for (const l of limits) {
    const ns = l.metadata.namespace
    ;(l.spec.hosts ?? []).forEach((raw, i) => {
      const h = resolve(raw, ns)
      const path = `spec.hosts[${i}]`
      const known = isWildcard(h) ? knownHosts.some((k) => hostSubsetOf(k, h)) : knownHosts.includes(h)
      if (!known) {
        const what = isWildcard(h) ? `no service in the registry is under ${h}` : `${h} is not in the registry`
        report('warning', l, path, `${what}; the limit applies to no route yet`)
      }
      if (l.spec.match !== undefined) return
      const first = unmatched.get(h)
      if (first === undefined) unmatched.set(h, l)
      else
        report(
          'warning',
          l,
          path,
          `${h} is also limited by ${first.kind}/${first.metadata.namespace}/${first.metadata.name}; requests count against both`,
        )
    })
  }
}
