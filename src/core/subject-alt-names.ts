/** Node's certificate `subjectaltname` text, parsed once for every place that reads a peer's names. */

/**
 * Splits Node's `subjectaltname` ("DNS:a.example, IP Address:10.0.0.1, URI:spiffe://x"). Node quotes a value that
 * holds a comma or quote as a JSON string (`DNS:"a,b"`).
 */
export function parseSubjectAltNames(text: string): { type: string; value: string }[] {
  const out: { type: string; value: string }[] = []
  let i = 0
  while (i < text.length) {
    const colon = text.indexOf(':', i)
    if (colon < 0) break
    const type = text.slice(i, colon).trim()
    let value: string
    let end: number
    if (text[colon + 1] === '"') {
      end = colon + 2
      while (end < text.length && text[end] !== '"') end += text[end] === '\\' ? 2 : 1
      const raw = text.slice(colon + 1, end + 1)
      try {
        value = JSON.parse(raw) as string
      } catch {
        value = raw
      }
      end = text.indexOf(', ', end)
    } else {
      end = text.indexOf(', ', colon)
      value = text.slice(colon + 1, end < 0 ? text.length : end)
    }
    out.push({ type, value })
    if (end < 0) break
    i = end + 2
  }
  return out
}
