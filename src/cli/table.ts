/**
 * A plain-text table for the CLI: columns padded to their widest cell plus `gap` spaces, the last cell of a row
 * never padded, trailing spaces trimmed. A row shorter than the first may let its last cell run across the
 * columns it lacks: such a cell does not widen its column.
 */
export function table(rows: readonly (readonly string[])[], gap = 2): string {
  if (rows.length === 0) return ''
  const n = rows[0]!.length
  const widths = rows[0]!.map((_, i) =>
    Math.max(...rows.filter((r) => r.length === n || i < r.length - 1).map((r) => (r[i] ?? '').length)),
  )
  return `${rows
    .map((r) =>
      r
        .map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]! + gap)))
        .join('')
        .trimEnd(),
    )
    .join('\n')}\n`
}
