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

const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3600_000, d: 86_400_000 }

/**
 * Durations as flags take them, Go style: `24h`, `90m`, `1h30m`, `3600s`, `2d`, `1.5h`. Returns milliseconds, or
 * null if the text is not one.
 */
export function parseFlagDurationMs(text: string): number | null {
  if (!/^(?:\d+(?:\.\d+)?(?:ms|s|m|h|d))+$/.test(text)) return null
  let ms = 0
  for (const m of text.matchAll(/(\d+(?:\.\d+)?)(ms|s|m|h|d)/g)) ms += Number(m[1]) * UNIT_MS[m[2]!]!
  return ms
}
