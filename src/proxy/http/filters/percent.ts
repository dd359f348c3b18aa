/** Envoy's FractionalPercent as a probability, shared by the filters that sample requests. */
import type { FractionalPercent } from '../../../config/envoy.js'

const DENOMINATORS = { HUNDRED: 100, TEN_THOUSAND: 10_000, MILLION: 1_000_000 } as const

/** A share of requests in [0, 1]; `unset` when the field is absent (0 for most of Envoy's fields: the proto default). */
export function fraction(p: FractionalPercent | undefined, unset = 0): number {
  if (p === undefined) return unset
  return Math.min(1, (p.numerator ?? 0) / DENOMINATORS[p.denominator ?? 'HUNDRED'])
}
