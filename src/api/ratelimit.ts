/**
 * Loom's own kind for what Istio has no API for: a rate limit that holds across every caller of a service.
 *
 * ```yaml
 * apiVersion: loom.dev/v1alpha1
 * kind: GlobalRateLimit
 * metadata: { name: reviews-limit, namespace: default }
 * spec:
 *   hosts: [reviews]                 # destination hosts, as Istio names them (short names resolve in this namespace)
 *   match:                           # optional: the requests the limit counts (all of them without it)
 *     pathPrefix: /api
 *     method: POST
 *     headers: { x-tenant: { exact: free } }
 *   requestsPerSecond: 60            # or: requests: 600, interval: 1m
 *   burst: 60                        # tokens the whole mesh may spend at once (default: one second's worth)
 *   onControlPlaneUnavailable: KeepLastShare   # or AllowAll, DenyAll
 * ```
 */
import type { ConfigIssue } from '../core/errors.js'
import {
  bool,
  destinationHostError,
  duration,
  enumOf,
  Issues,
  field,
  HTTP_METHODS,
  headerNameError,
  opt,
  parseDurationMs,
  StringMatch,
  str,
} from './common.js'
import { v } from '../config/schema.js'
import type { SpecContext } from './networking.js'

export const LOOM_GROUP = 'loom.dev'

export const UNAVAILABLE_MODES = ['KeepLastShare', 'AllowAll', 'DenyAll'] as const
export type UnavailableMode = (typeof UNAVAILABLE_MODES)[number]

const positiveNumber = v.pipe(
  v.number(),
  v.check((n: number) => Number.isFinite(n) && n > 0, 'must be a number greater than 0'),
)
const positiveInt = v.pipe(
  v.number(),
  v.check((n: number) => Number.isInteger(n) && n >= 1 && n <= 0xffffffff, 'must be an integer of at least 1'),
)

export const GlobalRateLimitMatch = v.strictObject({
  pathPrefix: opt(str),
  method: opt(str),
  headers: opt(v.record(v.string(), StringMatch)),
  /** the match applies inverted: count the requests it does not match */
  invert: opt(bool),
})
export type GlobalRateLimitMatch = v.InferOutput<typeof GlobalRateLimitMatch>

export const GlobalRateLimitSpec = v.strictObject({
  hosts: v.array(v.string()),
  match: opt(GlobalRateLimitMatch),
  requestsPerSecond: opt(positiveNumber),
  requests: opt(positiveInt),
  interval: opt(duration),
  burst: opt(positiveInt),
  onControlPlaneUnavailable: opt(enumOf(UNAVAILABLE_MODES)),
})
export type GlobalRateLimitSpec = v.InferOutput<typeof GlobalRateLimitSpec>

/** The limit's rate in requests per second (the spec has passed `checkGlobalRateLimit`). */
export function ratePerSecond(spec: GlobalRateLimitSpec): number {
  if (spec.requestsPerSecond !== undefined) return spec.requestsPerSecond
  const ms = parseDurationMs(spec.interval ?? '1s') ?? 1000
  return ((spec.requests ?? 0) * 1000) / ms
}

/** The mesh-wide burst: `burst`, else one second's worth of the rate (at least 1). */
export function burstOf(spec: GlobalRateLimitSpec): number {
  return spec.burst ?? Math.max(1, Math.ceil(ratePerSecond(spec)))
}

/** The rules the schema cannot state: hosts, one way of giving the rate, the match's method and header names. */
export function checkGlobalRateLimit(spec: GlobalRateLimitSpec, _ctx: SpecContext): ConfigIssue[] {
  const issues = new Issues()
  const hosts = spec.hosts ?? []
  if (hosts.length === 0) issues.add('spec.hosts', 'at least one host is required')
  const seen = new Set<string>()
  hosts.forEach((h, i) => {
    issues.add(field('spec.hosts', i), destinationHostError(h))
    if (seen.has(h)) issues.add(field('spec.hosts', i), `duplicate host ${JSON.stringify(h)}`)
    seen.add(h)
  })
  const perSecond = spec.requestsPerSecond !== undefined
  const perInterval = spec.requests !== undefined
  if (perSecond && perInterval)
    issues.add('spec.requests', 'only one of requestsPerSecond, requests (with interval) may be set')
  else if (!perSecond && !perInterval)
    issues.add('spec', 'one of requestsPerSecond, requests (with interval) is required')
  if (perInterval && spec.interval === undefined) issues.add('spec.interval', 'required with requests')
  if (!perInterval && spec.interval !== undefined) issues.add('spec.interval', 'only meaningful with requests')
  if (spec.interval !== undefined) {
    const ms = parseDurationMs(spec.interval)
    if (ms !== null && ms < 1000) issues.add('spec.interval', 'must be at least 1s')
    if (ms !== null && ms > 86_400_000) issues.add('spec.interval', 'must be at most 24h')
  }
  const m = spec.match
  if (m !== undefined) {
    if (m.pathPrefix !== undefined && !m.pathPrefix.startsWith('/'))
      issues.add('spec.match.pathPrefix', 'must start with /')
    if (m.method !== undefined && !HTTP_METHODS.has(m.method))
      issues.add(
        'spec.match.method',
        `invalid method ${JSON.stringify(m.method)}; expected one of ${[...HTTP_METHODS].join(', ')}`,
      )
    for (const name of Object.keys(m.headers ?? {})) {
      const p = field('spec.match.headers', name)
      issues.add(p, headerNameError(name))
      if (name !== name.toLowerCase()) issues.add(p, 'header names must be lowercase')
    }
  }
  return issues.list
}
