/**
 * Regexes from configuration, always run by RE2 (linear time, no backtracking), never by JS RegExp.
 * Envoy's `safe_regex` uses RE2 syntax; re2-wasm accepts JS-flavoured source and translates it, so the few
 * places where the two differ (`\Q...\E` quoting, `\u`/`\c` escapes) are handled here before compiling.
 */
import { createRequire } from 'node:module'
import type { RE2 } from 're2-wasm'

// Loaded on first use: the wasm module costs several MB of memory, which a proxy without regexes should not pay.
let RE2Ctor: typeof RE2 | null = null
function re2Class(): typeof RE2 {
  if (RE2Ctor === null) RE2Ctor = (createRequire(import.meta.url)('re2-wasm') as { RE2: typeof RE2 }).RE2
  return RE2Ctor
}

type Wrapper = { delete?: () => void }

// re2-wasm keeps each compiled program in the wasm heap and never frees it. Config reloads compile new
// regexes, so free a program once the RE2 object that owns it is garbage.
const registry = new FinalizationRegistry<Wrapper>((w) => {
  try {
    w.delete?.()
  } catch {
    // already freed
  }
})

function newRe2(source: string, flags: string): RE2 {
  const re = new (re2Class())(source, flags)
  const wrapper = (re as unknown as { wrapper?: Wrapper }).wrapper
  if (wrapper !== undefined && typeof wrapper.delete === 'function') registry.register(re, wrapper)
  return re
}

const META = new Set(['\\', '.', '+', '*', '?', '(', ')', '|', '[', ']', '{', '}', '^', '$'])

/**
 * Rewrites RE2 source so that re2-wasm's JS-to-RE2 translation is a no-op on it:
 * expands `\Q...\E` into escaped literals (the translation would otherwise escape `/` inside them),
 * and rejects `\u`/`\c`, which RE2 does not have but the translation would accept.
 */
function prepare(pattern: string): string {
  let out = ''
  let i = 0
  while (i < pattern.length) {
    const c = pattern[i]!
    if (c !== '\\') {
      out += c
      i++
      continue
    }
    const n = pattern[i + 1]
    if (n === undefined) throw new SyntaxError('trailing \\')
    if (n === 'u' || n === 'c') throw new SyntaxError(`invalid escape sequence: \\${n}`)
    if (n === 'Q') {
      let end = pattern.indexOf('\\E', i + 2)
      if (end < 0) end = pattern.length
      for (const ch of pattern.slice(i + 2, end)) out += META.has(ch) ? `\\${ch}` : ch
      i = end + 2
      continue
    }
    out += c + n
    i += 2
  }
  return out
}

function reason(err: unknown): string {
  const msg = err instanceof Error ? err.message : String(err)
  const at = msg.lastIndexOf('/u: ')
  return at >= 0 ? msg.slice(at + 4) : msg
}

export type RegexResult<T> = { ok: true; value: T } | { ok: false; error: string }

/** A regex that must match the whole input (Envoy's `safe_regex` semantics). */
export class FullMatchRegex {
  readonly source: string
  private readonly re: RE2
  constructor(source: string, re: RE2) {
    this.source = source
    this.re = re
  }
  test(input: string): boolean {
    return this.re.test(input)
  }
}

/** Checks `pattern` alone first, so a stray `)` cannot escape the anchoring group. */
function validate(pattern: string): RegexResult<string> {
  try {
    const src = prepare(pattern)
    newRe2(src, 'u')
    return { ok: true, value: src }
  } catch (err) {
    return { ok: false, error: `RE2 rejected the regex: ${reason(err)}` }
  }
}

export function compileFullMatch(pattern: string): RegexResult<FullMatchRegex> {
  const v = validate(pattern)
  if (!v.ok) return v
  try {
    return { ok: true, value: new FullMatchRegex(pattern, newRe2(`^(?:${v.value})$`, 'u')) }
  } catch (err) {
    return { ok: false, error: `RE2 rejected the regex: ${reason(err)}` }
  }
}

/**
 * `regex_rewrite`: every non-overlapping match is replaced by the substitution, as RE2::GlobalReplace does
 * (an empty match right after the previous match is skipped). In the substitution `\0`..`\9` refer to capture
 * groups and `\\` is a backslash; any other backslash sequence is an error.
 */
export class RegexRewriter {
  readonly source: string
  private readonly re: RE2
  /** literal strings and group numbers, in order */
  private readonly parts: (string | number)[]

  constructor(source: string, re: RE2, parts: (string | number)[]) {
    this.source = source
    this.re = re
    this.parts = parts
  }

  replaceAll(input: string): string {
    // re2-wasm positions count code points, not UTF-16 units: map them when the input has astral characters.
    const offsets = codePointOffsets(input)
    const at = (cp: number) => (offsets === null ? cp : offsets[cp]!)
    const cpLength = offsets === null ? input.length : offsets.length - 1
    const re = this.re
    let out = ''
    let p = 0
    let lastEnd = -1
    let count = 0
    while (p <= cpLength) {
      re.lastIndex = p
      const m = re.exec(input)
      if (m === null) break
      const start = m.index
      const text = m[0] ?? ''
      if (start === lastEnd && text.length === 0) {
        // Disallow an empty match where the previous match ended: copy one code point and move on.
        if (p < cpLength) out += input.slice(at(p), at(p + 1))
        p++
        continue
      }
      if (start > p) out += input.slice(at(p), at(start))
      for (const part of this.parts) out += typeof part === 'string' ? part : (m[part] ?? '')
      p = offsets === null ? start + text.length : start + countCodePoints(text)
      lastEnd = p
      count++
    }
    if (count === 0) return input
    if (p < cpLength) out += input.slice(at(p))
    return out
  }
}

/** UTF-16 offset of each code point (plus the end), or null when the two coincide (no surrogates). */
function codePointOffsets(s: string): number[] | null {
  let i = 0
  while (i < s.length) {
    const c = s.charCodeAt(i)
    if (c >= 0xd800 && c <= 0xdfff) break
    i++
  }
  if (i === s.length) return null
  const offsets: number[] = []
  for (let j = 0; j < s.length; ) {
    offsets.push(j)
    j += (s.codePointAt(j) ?? 0) > 0xffff ? 2 : 1
  }
  offsets.push(s.length)
  return offsets
}

function countCodePoints(s: string): number {
  let n = 0
  for (let j = 0; j < s.length; n++) j += (s.codePointAt(j) ?? 0) > 0xffff ? 2 : 1
  return n
}

function parseSubstitution(sub: string, groups: number): RegexResult<(string | number)[]> {
  const parts: (string | number)[] = []
  let lit = ''
  for (let i = 0; i < sub.length; i++) {
    const c = sub[i]!
    if (c !== '\\') {
      lit += c
      continue
    }
    const n = sub[i + 1]
    i++
    if (n === '\\') lit += '\\'
    else if (n !== undefined && n >= '0' && n <= '9') {
      const g = n.charCodeAt(0) - 48
      if (g > groups) {
        return { ok: false, error: `\\${g} refers to capture group ${g}, but the pattern has ${groups}` }
      }
      if (lit !== '') parts.push(lit)
      lit = ''
      parts.push(g)
    } else {
      const what = n === undefined ? 'a trailing \\' : `\\${n}`
      return { ok: false, error: `invalid substitution: ${what} (use \\1..\\9 for groups, \\\\ for a backslash)` }
    }
  }
  if (lit !== '') parts.push(lit)
  return { ok: true, value: parts }
}

export type RewriteResult =
  | { ok: true; value: RegexRewriter }
  | { ok: false; field: 'pattern' | 'substitution'; error: string }

export function compileRewrite(pattern: string, substitution: string): RewriteResult {
  const v = validate(pattern)
  if (!v.ok) return { ok: false, field: 'pattern', error: v.error }
  let re: RE2
  let groups: number
  try {
    re = newRe2(v.value, 'gu')
    // Count capture groups: an alternative that always matches the empty string yields every group slot.
    groups = (newRe2(`(?:${v.value})|`, 'u').exec('')?.length ?? 1) - 1
  } catch (err) {
    return { ok: false, field: 'pattern', error: `RE2 rejected the regex: ${reason(err)}` }
  }
  const parts = parseSubstitution(substitution, groups)
  if (!parts.ok) return { ok: false, field: 'substitution', error: parts.error }
  return { ok: true, value: new RegexRewriter(pattern, re, parts.value) }
}
