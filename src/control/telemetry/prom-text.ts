/**
 * A small reader of the Prometheus text exposition format (version 0.0.4), for the families the control plane
 * gathers from its proxies. It reads only the samples whose metric name is wanted (a histogram family's `_bucket`,
 * `_sum` and `_count` samples go by the family's name), skips comments, `# TYPE` / `# HELP` lines and every other
 * metric without parsing its labels, and hands each sample on as it is read: nothing is built for the lines it skips.
 *
 * A sample line is `name{label="value",...} value [timestamp]`; label values may hold `\\`, `\"` and `\n` escapes
 * and any other character, `}` and `,` included. Values are floats, `NaN`, `+Inf` or `-Inf`. A malformed line is
 * skipped and counted, never fatal: one proxy's odd line must not hide the rest of its metrics.
 */

/** What a histogram sample is, by the suffix of its name. */
export type SampleKind = 'value' | 'bucket' | 'sum' | 'count'

export interface Sample {
  /** the family: the metric name, without `_bucket` / `_sum` / `_count` for a histogram's samples */
  family: string
  kind: SampleKind
  /** the text between the braces as it was on the line ('' without labels): a cheap key for the series */
  labelText: string
  value: number
}

/** How a wanted family is read: a plain sample (counter, gauge) or a histogram's three kinds of samples. */
export type FamilyType = 'counter' | 'histogram'

export interface ParseResult {
  /** lines that looked like a sample of a wanted family but could not be read */
  malformed: number
}

/**
 * Reads `text`, calling `onSample` for every sample of a family in `families` (name → type). Histogram families
 * match `<family>_bucket`, `<family>_sum` and `<family>_count`; counter families match their name exactly.
 */
export function parsePrometheusText(
  text: string,
  families: ReadonlyMap<string, FamilyType>,
  onSample: (s: Sample) => void,
): ParseResult {
  let malformed = 0
  let pos = 0
  const end = text.length
  while (pos < end) {
    let eol = text.indexOf('\n', pos)
    if (eol < 0) eol = end
    const start = pos
    pos = eol + 1
    const c = text.charCodeAt(start)
    // '#' comments, blank lines, and lines of other families are skipped by their first characters only
    if (c === 35 || c === 10 || c === 13 || start === eol) continue
    let nameEnd = start
    while (nameEnd < eol) {
      const ch = text.charCodeAt(nameEnd)
      if (ch === 123 /* { */ || ch === 32 /* space */ || ch === 9) break
      nameEnd++
    }
    const name = text.slice(start, nameEnd)
    let family = name
    let kind: SampleKind = 'value'
    let type = families.get(name)
    if (type === undefined) {
      const us = name.lastIndexOf('_')
      if (us < 0) continue
      const suffix = name.slice(us + 1)
      if (suffix !== 'bucket' && suffix !== 'sum' && suffix !== 'count') continue
      family = name.slice(0, us)
      if (families.get(family) !== 'histogram') continue
      kind = suffix
      type = 'histogram'
    } else if (type === 'histogram') continue // a histogram family's bare name is not one of its samples
    let labelText = ''
    let p = nameEnd
    if (text.charCodeAt(p) === 123) {
      const close = closingBrace(text, p + 1, eol)
      if (close < 0) {
        malformed++
        continue
      }
      labelText = text.slice(p + 1, close)
      p = close + 1
    }
    while (p < eol && (text.charCodeAt(p) === 32 || text.charCodeAt(p) === 9)) p++
    let vEnd = p
    while (vEnd < eol && text.charCodeAt(vEnd) !== 32 && text.charCodeAt(vEnd) !== 9 && text.charCodeAt(vEnd) !== 13)
      vEnd++
    const value = parseValue(text.slice(p, vEnd))
    if (value === null) {
      malformed++
      continue
    }
    onSample({ family, kind, labelText, value })
  }
  return { malformed }
}

/** The index of the `}` closing a label set that starts at `from` (after `{`), skipping quoted values; -1 if none. */
function closingBrace(text: string, from: number, eol: number): number {
  let inQuote = false
  for (let i = from; i < eol; i++) {
    const ch = text.charCodeAt(i)
    if (inQuote) {
      if (ch === 92 /* \ */) i++
      else if (ch === 34 /* " */) inQuote = false
    } else if (ch === 34) inQuote = true
    else if (ch === 125 /* } */) return i
  }
  return -1
}

function parseValue(s: string): number | null {
  if (s === '') return null
  if (s === 'NaN') return Number.NaN
  if (s === '+Inf' || s === 'Inf') return Number.POSITIVE_INFINITY
  if (s === '-Inf') return Number.NEGATIVE_INFINITY
  const v = Number(s)
  return Number.isNaN(v) ? null : v
}

/**
 * The labels of a label text (`a="1",b="x\"y"`), unescaped, in their order; null when the text is not a label set.
 * Called once per new series, not per sample.
 */
export function parseLabels(text: string): [string, string][] | null {
  const out: [string, string][] = []
  let i = 0
  const n = text.length
  while (i < n) {
    while (i < n && (text[i] === ' ' || text[i] === ',')) i++
    if (i >= n) break
    const eq = text.indexOf('=', i)
    if (eq < 0) return null
    const name = text.slice(i, eq).trim()
    if (!/^[a-zA-Z_][a-zA-Z0-9_]*$/.test(name)) return null
    i = eq + 1
    if (text[i] !== '"') return null
    i++
    let value = ''
    let closed = false
    while (i < n) {
      const ch = text[i]!
      if (ch === '\\') {
        const next = text[i + 1]
        value += next === 'n' ? '\n' : (next ?? '')
        i += 2
      } else if (ch === '"') {
        closed = true
        i++
        break
      } else {
        value += ch
        i++
      }
    }
    if (!closed) return null
    out.push([name, value])
  }
  return out
}

/** A label value escaped for the text format (the inverse of parseLabels' unescaping). */
export function escapeLabelValue(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n')
}
