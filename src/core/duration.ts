/**
 * Durations in proto3 JSON form, as Envoy's YAML uses them: `"1.5s"`, `"0.250s"`, `"30s"`.
 * Returns milliseconds, or null if the text is not a valid duration.
 */
export function parseDurationMs(text: string): number | null {
  const m = /^(\d{1,12})(?:\.(\d{1,9}))?s$/.exec(text)
  if (m === null) return null
  const secs = Number(m[1])
  const frac = m[2] === undefined ? 0 : Number(`0.${m[2]}`)
  return (secs + frac) * 1000
}

export function formatDurationMs(ms: number): string {
  return `${(ms / 1000).toString()}s`
}
