/**
 * Allocation-free string helpers for the request path. Case-insensitive comparisons fold ASCII letters only,
 * as Envoy's (absl) `*IgnoreCase` functions do; `lower` arguments must already be ASCII-lower-cased.
 */

function fold(c: number): number {
  return c >= 65 && c <= 90 ? c + 32 : c
}

/** ASCII lower-casing; returns `s` itself when it has no upper-case ASCII letter. */
export function asciiLower(s: string): string {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i)
    if (c >= 65 && c <= 90) {
      let out = s.slice(0, i)
      for (let j = i; j < s.length; j++) out += String.fromCharCode(fold(s.charCodeAt(j)))
      return out
    }
  }
  return s
}

/** Whether `s[at..]` starts with `lower`, ignoring ASCII case. */
export function startsWithIgnoreCase(s: string, lower: string, at = 0): boolean {
  if (s.length - at < lower.length) return false
  for (let i = 0; i < lower.length; i++) {
    if (fold(s.charCodeAt(at + i)) !== lower.charCodeAt(i)) return false
  }
  return true
}

export function equalsIgnoreCase(s: string, lower: string): boolean {
  return s.length === lower.length && startsWithIgnoreCase(s, lower)
}

export function endsWithIgnoreCase(s: string, lower: string): boolean {
  return s.length >= lower.length && startsWithIgnoreCase(s, lower, s.length - lower.length)
}

export function containsIgnoreCase(s: string, lower: string): boolean {
  const last = s.length - lower.length
  for (let at = 0; at <= last; at++) if (startsWithIgnoreCase(s, lower, at)) return true
  return false
}

/** Index of the first `?` or `#` in a request target, or its length: where the path part ends. */
export function pathEnd(target: string): number {
  for (let i = 0; i < target.length; i++) {
    const c = target.charCodeAt(i)
    if (c === 63 /* ? */ || c === 35 /* # */) return i
  }
  return target.length
}

function hexVal(c: number): number {
  if (c >= 48 && c <= 57) return c - 48
  if (c >= 65 && c <= 70) return c - 55
  if (c >= 97 && c <= 102) return c - 87
  return -1
}

/**
 * Percent-decoding as Envoy does for query parameters: `%XX` becomes the byte XX, anything else (including
 * `+` and malformed escapes) is kept as is; the bytes are read as UTF-8.
 */
export function percentDecode(s: string): string {
  if (s.indexOf('%') < 0) return s
  try {
    return decodeURIComponent(s)
  } catch {
    // malformed escape or invalid UTF-8: decode what is well-formed, byte by byte
  }
  const bytes: number[] = []
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i)
    if (c === 37 && i + 2 < s.length) {
      const h = hexVal(s.charCodeAt(i + 1))
      const l = hexVal(s.charCodeAt(i + 2))
      if (h >= 0 && l >= 0) {
        bytes.push(h * 16 + l)
        i += 2
        continue
      }
    }
    if (c < 0x80) {
      bytes.push(c)
      continue
    }
    const cp = s.codePointAt(i)!
    const ch = String.fromCodePoint(cp)
    for (const b of Buffer.from(ch, 'utf8')) bytes.push(b)
    i += ch.length - 1
  }
  return Buffer.from(bytes).toString('utf8')
}

/**
 * The query of a request target as name → first value, names and values percent-decoded
 * (`?a=1&a=2&b` gives a → '1', b → ''). Empty when there is no query.
 */
export function parseQuery(target: string): Map<string, string> {
  const out = new Map<string, string>()
  const q = target.indexOf('?')
  if (q < 0) return out
  let end = target.indexOf('#', q)
  if (end < 0) end = target.length
  let start = q + 1
  while (start < end) {
    let amp = target.indexOf('&', start)
    if (amp < 0 || amp > end) amp = end
    if (amp > start) {
      const eq = target.indexOf('=', start)
      const hasEq = eq >= 0 && eq < amp
      const name = percentDecode(target.slice(start, hasEq ? eq : amp))
      if (!out.has(name)) out.set(name, hasEq ? percentDecode(target.slice(eq + 1, amp)) : '')
    }
    start = amp + 1
  }
  return out
}
