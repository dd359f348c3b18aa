/** Numbers as the dashboard shows them (the same units as `loom stat`). */

export function rps(v: number | null | undefined): string {
  if (v === null || v === undefined) return '-'
  return v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2)
}

/** A share 0..1 as a percentage. */
export function percent(v: number | null | undefined): string {
  if (v === null || v === undefined) return '-'
  return `${(v * 100).toFixed(v >= 0.9995 || v === 0 ? 0 : 1)}%`
}

export function ms(v: number | null | undefined): string {
  if (v === null || v === undefined) return '-'
  return v >= 1000 ? `${(v / 1000).toFixed(2)}s` : `${v >= 10 ? v.toFixed(0) : v.toFixed(1)}ms`
}

/** Health of a success rate: ok ≥ 99%, warn ≥ 95%, bad below; none without traffic. */
export function health(successRate: number | null | undefined): 'ok' | 'warn' | 'bad' | 'none' {
  if (successRate === null || successRate === undefined) return 'none'
  return successRate >= 0.99 ? 'ok' : successRate >= 0.95 ? 'warn' : 'bad'
}

export function ago(iso: string | null | undefined): string {
  if (!iso) return '-'
  const s = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000))
  return s < 90 ? `${s}s ago` : s < 5400 ? `${Math.round(s / 60)}m ago` : `${Math.round(s / 3600)}h ago`
}
