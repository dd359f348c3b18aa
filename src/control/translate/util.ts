/**
 * Small helpers the translator's modules share: the JSON object type of Envoy resources, Istio durations in proto3
 * JSON form, Istio's cluster names, and orderings.
 */

import { parseDurationNs } from '../../api/index.js'

/** An Envoy resource or sub-message in proto3 JSON form (snake_case fields). */
export type Json = Record<string, unknown>

/**
 * An Istio duration (`"0.5s"`, `"3m"`, `"1h30m"`, `"250ms"`: Go's syntax) as a proto3 JSON duration (`"0.5s"`,
 * `"180s"`), or null if it is not a non-negative duration.
 */
export function protoDuration(text: string | undefined): string | null {
  if (typeof text !== 'string') return null
  const ns = parseDurationNs(text)
  if (ns === null || ns < 0n) return null
  const whole = ns / 1_000_000_000n
  const frac = (ns % 1_000_000_000n).toString().padStart(9, '0').replace(/0+$/, '')
  return frac === '' ? `${whole}s` : `${whole}.${frac}s`
}

/** Istio's cluster name: `outbound|9080|v1|reviews.default.svc.cluster.local`, `inbound|9080||`. */
export function clusterName(direction: 'outbound' | 'inbound', port: number, subset: string, host: string): string {
  return `${direction}|${port}|${subset}|${host}`
}

export function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0
}

/** JSON with object keys sorted, so equal content always gives equal text (for versions and de-duplication). */
export function canonicalJson(value: unknown): string {
  return JSON.stringify(value, (_k, v: unknown) => {
    if (v === null || typeof v !== 'object' || Array.isArray(v)) return v
    const out: Json = {}
    for (const k of Object.keys(v as Json).sort()) out[k] = (v as Json)[k]
    return out
  })
}

/** Parses `region/zone/subzone` (any part may be missing) into an Envoy Locality with all three fields set. */
export function locality(text: string): { region: string; zone: string; sub_zone: string } {
  const [region = '', zone = '', subZone = ''] = text.split('/')
  return { region, zone, sub_zone: subZone }
}

/**
 * Istio's origin metadata (`filter_metadata.istio.config`, the resource's API path), on routes and clusters: not
 * read by the proxy; `loom explain` names the resource a decision came from with it.
 */
export function istioOrigin(kind: 'virtual-service' | 'destination-rule', namespace: string, name: string): Json {
  return {
    filter_metadata: {
      istio: { config: `/apis/networking.istio.io/v1alpha3/namespaces/${namespace}/${kind}/${name}` },
    },
  }
}
