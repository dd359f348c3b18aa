/**
 * Path normalization before routing: the HTTP connection manager's `normalize_path`, `merge_slashes` and
 * `path_with_escaped_slashes_action`, with Envoy's semantics, so the router, the filters and the upstream all see
 * one spelling of a path (`//admin`, `/./admin`, `/%61dmin` and `/x/../admin` are all `/admin`).
 *
 * Only the path is touched; the query (from the first `?`) is kept byte for byte. The steps run in Envoy's order:
 *
 * 1. **Escaped slashes** (`path_with_escaped_slashes_action`, default `KEEP_UNCHANGED`): `%2F`/`%2f` become `/` and
 *    `%5C`/`%5c` become `\`. `REJECT_REQUEST`: a path holding one is answered 400; `UNESCAPE_AND_REDIRECT`: 307 to the
 *    normalized path (400 for gRPC, whose clients do not follow redirects); `UNESCAPE_AND_FORWARD`: it goes on.
 * 2. **`normalize_path`** (RFC 3986 §6, as Envoy's Chromium-derived canonicalizer does it):
 *    - percent-encoded unreserved characters (`A-Z a-z 0-9 - . _ ~`) are decoded (`%61dmin` → `admin`); every other
 *      escape is kept as written, hex case included (Envoy does no case normalization: `%2f` stays `%2f`);
 *    - dot segments are removed (RFC 3986 §5.2.4), `.` and `..` spelled `%2e`/`%2E` too; `..` above the root is
 *      dropped (`/../a` → `/a`);
 *    - a raw `\` is a `/` (`/a\..\b` → `/b`), as in Envoy;
 *    - characters a URI may not hold raw (controls, space, `"`, `#`, `<`, `>`, `^`, `` ` ``, `{`, `|`, `}`, DEL and
 *      non-ASCII) are percent-encoded;
 *    - a NUL, raw or `%00`, cannot be normalized: 400. A `%` not followed by two hex digits is kept (Envoy passes
 *      it), and made `%25` where decoding the characters after it would have formed a new escape (`%%30%30` →
 *      `%2500`), so the result never decodes differently a second time.
 * 3. **`merge_slashes`**: runs of `/` become one.
 *
 * Compiled once per connection manager; null when all three are off, so such a connection manager pays one null
 * check per request. A path that needs no change costs one scan over its characters and allocates nothing.
 */

export type EscapedSlashesAction =
  | 'IMPLEMENTATION_SPECIFIC_DEFAULT'
  | 'KEEP_UNCHANGED'
  | 'REJECT_REQUEST'
  | 'UNESCAPE_AND_REDIRECT'
  | 'UNESCAPE_AND_FORWARD'

export interface PathNormalizationConfig {
  normalize_path?: boolean | undefined
  merge_slashes?: boolean | undefined
  path_with_escaped_slashes_action?: EscapedSlashesAction | undefined
}

/** The verdicts of `PathNormalizer.apply`. */
export const PATH_OK = 0
/** the path cannot be normalized, or holds an escaped slash under REJECT_REQUEST: 400 */
export const PATH_REJECT = 1
/** the path held an escaped slash under UNESCAPE_AND_REDIRECT: 307 to `PathNormalizer.path` */
export const PATH_REDIRECT = 2
export type PathVerdict = typeof PATH_OK | typeof PATH_REJECT | typeof PATH_REDIRECT

const SLASH = 0x2f
const BACKSLASH = 0x5c
const DOT = 0x2e
const PERCENT = 0x25
const QUESTION = 0x3f

// Character classes (Envoy's table of URI path characters, ASCII)
const PASS = 0
/** a percent-encoded form of it is decoded: RFC 3986 unreserved */
const UNRESERVED = 1
/** must be percent-encoded when raw */
const ESCAPE = 2
/** cannot be normalized (NUL) */
const INVALID = 3
/** `.`, `%`, `\`: handled on their own */
const SPECIAL = 4

const CLASS = new Uint8Array(128)
for (let c = 0; c < 0x20; c++) CLASS[c] = ESCAPE
CLASS[0] = INVALID
for (const ch of ' "#<>?^`{|}\x7f') CLASS[ch.charCodeAt(0)] = ESCAPE
for (let c = 0x30; c <= 0x39; c++) CLASS[c] = UNRESERVED
for (let c = 0x41; c <= 0x5a; c++) CLASS[c] = UNRESERVED
for (let c = 0x61; c <= 0x7a; c++) CLASS[c] = UNRESERVED
for (const ch of '-_~') CLASS[ch.charCodeAt(0)] = UNRESERVED
CLASS[DOT] = SPECIAL
CLASS[PERCENT] = SPECIAL
CLASS[BACKSLASH] = SPECIAL

const HEX = '0123456789ABCDEF'

// What the scan for "does this path need any work" does on a character
const S_PLAIN = 0
/** the query starts: the path is done */
const S_STOP = 1
/** the path needs work */
const S_CHANGE = 2
/** `/` under merge_slashes: work if another follows */
const S_SLASH = 3
/** `.` under normalize_path: work if it makes a `.` or `..` segment */
const S_DOT = 4
const S_PERCENT = 5

function hexValue(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30
  const l = c | 0x20
  return l >= 0x61 && l <= 0x66 ? l - 0x57 : -1
}

/** The byte a `%XY` at `i` encodes, or -1 when `i` does not start a valid escape before `end`. */
function escapeAt(p: string, i: number, end: number): number {
  if (i + 3 > end) return -1
  const hi = hexValue(p.charCodeAt(i + 1))
  if (hi < 0) return -1
  const lo = hexValue(p.charCodeAt(i + 2))
  return lo < 0 ? -1 : (hi << 4) | lo
}

function classOf(c: number): number {
  return c < 0x80 ? CLASS[c]! : ESCAPE
}

/** `.` (1), `%2e`/`%2E` (3), or 0. */
function dotAt(p: string, i: number, end: number): number {
  const c = p.charCodeAt(i)
  if (c === DOT) return 1
  if (c === PERCENT && i + 3 <= end && p.charCodeAt(i + 1) === 0x32 && (p.charCodeAt(i + 2) | 0x20) === 0x65) return 3
  return 0
}

function isSlash(c: number): boolean {
  return c === SLASH || c === BACKSLASH
}

function percentEncode(c: number): string {
  if (c <= 0xff) return `%${HEX[c >> 4]}${HEX[c & 15]}`
  let s = ''
  for (const b of Buffer.from(String.fromCharCode(c), 'utf8')) s += `%${HEX[b >> 4]}${HEX[b & 15]}`
  return s
}

/** Step 1: `%2F`/`%2f` → `/`, `%5C`/`%5c` → `\`; `p` itself when there is none. */
export function unescapeSlashes(p: string): string {
  let out: string | null = null
  let from = 0
  const n = p.length
  for (let i = p.indexOf('%'); i >= 0 && i + 2 < n; i = p.indexOf('%', i + 1)) {
    const v = escapeAt(p, i, n)
    if (v !== SLASH && v !== BACKSLASH) continue
    out = (out ?? '') + p.slice(from, i) + (v === SLASH ? '/' : '\\')
    from = i + 3
    i += 2
  }
  return out === null ? p : out + p.slice(from)
}

/**
 * Rewinds `out` (which ends with `/`) to the slash before its last segment, never above the first character:
 * what `..` does.
 */
function backUp(out: string): string {
  let i = out.length - 1
  if (i === 0) return out
  i--
  while (i > 0 && out.charCodeAt(i) !== SLASH) i--
  return out.slice(0, i + 1)
}

/**
 * After an unreserved escape was decoded within two characters of an earlier `%` that began no valid escape: if
 * that `%` now begins one (`%%30%30` → `%00`), it becomes `%25`, so decoding the result again changes nothing.
 */
function guardNestedEscape(p: string, next: number, end: number, pct: number, out: string): string {
  const length = out.length
  const last = out[length - 1]!
  const appendNext = pct === length - 2
  let o = out
  if (appendNext) {
    if (next === end || p.charCodeAt(next) >= 0x80) return out
    o += p[next]
  }
  if (escapeAt(o, pct, o.length) < 0) return out
  // `%` c1 c2 → `%25` c1 (and c2, unless it is the next input character, which the caller still reads)
  const c1 = o[pct + 1]!
  return appendNext ? `${o.slice(0, pct)}%25${c1}` : `${o.slice(0, pct)}%25${c1}${last}`
}

/** Step 2: RFC 3986 normalization of a path (no query) that starts with `/`; null when it cannot be normalized. */
export function normalizePath(p: string): string | null {
  const end = p.length
  let out = ''
  let ok = true
  /** where in `out` the last `%` that began no valid escape is */
  let badPercent = -10
  for (let i = 0; i < end; i++) {
    const c = p.charCodeAt(i)
    const cls = classOf(c)
    if (cls === PASS || cls === UNRESERVED) {
      out += p[i]
      continue
    }
    if (cls === ESCAPE) {
      out += percentEncode(c)
      continue
    }
    if (cls === INVALID) {
      out += '%00'
      ok = false
      continue
    }
    const dot = dotAt(p, i, end)
    if (dot > 0) {
      if (out.charCodeAt(out.length - 1) !== SLASH) {
        out += '.'
        i += dot - 1
        continue
      }
      // a segment that starts with a dot: `.`, `..`, or a name
      const after = i + dot
      let consumed = -1
      let up = false
      if (after === end) consumed = 0
      else if (isSlash(p.charCodeAt(after))) consumed = 1
      else {
        const dot2 = dotAt(p, after, end)
        if (dot2 > 0) {
          const after2 = after + dot2
          if (after2 === end) consumed = dot2
          else if (isSlash(p.charCodeAt(after2))) consumed = dot2 + 1
          up = consumed >= 0
        }
      }
      if (consumed < 0) {
        out += '.'
        i += dot - 1
        continue
      }
      if (up) out = backUp(out)
      i += dot + consumed - 1
    } else if (c === BACKSLASH) {
      out += '/'
    } else {
      // `%`
      const v = escapeAt(p, i, end)
      if (v < 0) {
        badPercent = out.length
        out += '%'
        continue
      }
      const vc = CLASS[v & 0x7f]!
      if (v < 0x80 && vc === UNRESERVED) {
        out += String.fromCharCode(v)
        i += 2
        if (badPercent >= out.length - 3) out = guardNestedEscape(p, i + 1, end, badPercent, out)
      } else {
        out += p.slice(i, i + 3)
        i += 2
        if (v === 0) ok = false
      }
    }
  }
  return ok ? out : null
}

/** Step 3: runs of `/` become one; `p` itself when there is none. */
export function mergeSlashes(p: string): string {
  let i = p.indexOf('//')
  if (i < 0) return p
  let out = ''
  let from = 0
  while (i >= 0) {
    out += p.slice(from, i + 1)
    from = i + 2
    while (p.charCodeAt(from) === SLASH) from++
    i = p.indexOf('//', from)
  }
  return out + p.slice(from)
}

export class PathNormalizer {
  readonly normalize: boolean
  readonly merge: boolean
  /** escaped slashes are decoded (any action but KEEP_UNCHANGED) */
  readonly unescape: boolean
  readonly slashesAction: 'REJECT_REQUEST' | 'UNESCAPE_AND_REDIRECT' | 'UNESCAPE_AND_FORWARD' | 'KEEP_UNCHANGED'
  /** The path (with its query) after the last `apply`: the very string given when nothing changed. */
  path = ''
  /** what the scan does on each Latin-1 character (S_*), for the steps this normalizer runs */
  private readonly scan = new Uint8Array(256)

  private constructor(normalize: boolean, merge: boolean, action: PathNormalizer['slashesAction']) {
    this.normalize = normalize
    this.merge = merge
    this.slashesAction = action
    this.unescape = action !== 'KEEP_UNCHANGED'
    const scan = this.scan
    scan[QUESTION] = S_STOP
    if (merge) scan[SLASH] = S_SLASH
    if (normalize || this.unescape) scan[PERCENT] = S_PERCENT
    if (normalize) {
      scan[DOT] = S_DOT
      scan[BACKSLASH] = S_CHANGE
      for (let c = 0; c < 0x100; c++) if (classOf(c) === ESCAPE || classOf(c) === INVALID) scan[c] = S_CHANGE
      scan[QUESTION] = S_STOP
    }
  }

  /** The connection manager's normalizer; null when it normalizes nothing (Envoy's defaults). */
  static compile(cfg: PathNormalizationConfig): PathNormalizer | null {
    const normalize = cfg.normalize_path ?? false
    const merge = cfg.merge_slashes ?? false
    const a = cfg.path_with_escaped_slashes_action
    const action = a === undefined || a === 'IMPLEMENTATION_SPECIFIC_DEFAULT' ? 'KEEP_UNCHANGED' : a
    if (!normalize && !merge && action === 'KEEP_UNCHANGED') return null
    return new PathNormalizer(normalize, merge, action)
  }

  /**
   * Normalizes `path` (origin form, query included; anything not starting with `/`, such as `*` or a CONNECT
   * authority, is left alone). The result is in `this.path`.
   */
  apply(path: string): PathVerdict {
    this.path = path
    if (path.charCodeAt(0) !== SLASH || !this.needsWork(path)) return PATH_OK
    const q = path.indexOf('?')
    const given = q < 0 ? path : path.slice(0, q)
    let p = given
    let escapedSlash = false
    if (this.unescape) {
      const u = unescapeSlashes(p)
      if (u !== p) {
        if (this.slashesAction === 'REJECT_REQUEST') return PATH_REJECT
        escapedSlash = true
        p = u
      }
    }
    if (this.normalize) {
      const n = normalizePath(p)
      if (n === null) return PATH_REJECT
      p = n
    }
    if (this.merge) p = mergeSlashes(p)
    if (p !== given) this.path = q < 0 ? p : p + path.slice(q)
    return escapedSlash && this.slashesAction === 'UNESCAPE_AND_REDIRECT' ? PATH_REDIRECT : PATH_OK
  }

  /**
   * One pass over the path (up to `?`): whether any step would change or reject it. False means the steps would
   * all return the path as it is (checked against them on random paths in the tests).
   */
  needsWork(p: string): boolean {
    const n = p.length
    const scan = this.scan
    for (let i = 0; i < n; i++) {
      const c = p.charCodeAt(i)
      if (c > 0xff) {
        if (this.normalize) return true
        continue
      }
      const k = scan[c]!
      if (k === S_PLAIN) continue
      if (k === S_STOP) return false
      if (k === S_CHANGE) return true
      if (k === S_SLASH) {
        if (p.charCodeAt(i + 1) === SLASH) return true
      } else if (k === S_DOT) {
        if (p.charCodeAt(i - 1) === SLASH && this.dotSegmentAt(p, i + 1, n)) return true
      } else {
        // `%`: a `?` in the next two characters is no hex digit, so the escape ends before the query
        const v = escapeAt(p, i, n)
        if (v < 0) continue
        if (this.unescape && (v === SLASH || v === BACKSLASH)) return true
        if (this.normalize && (v === 0 || (v < 0x80 && (CLASS[v] === UNRESERVED || v === DOT)))) return true
        i += 2
      }
    }
    return false
  }

  /** Whether a segment that starts with `.` just before `i` is `.` or `..` (raw dots; other spellings go slow). */
  private dotSegmentAt(p: string, i: number, n: number): boolean {
    if (i === n) return true
    let c = p.charCodeAt(i)
    if (c === SLASH || c === QUESTION) return true
    if (c !== DOT) return false
    if (i + 1 === n) return true
    c = p.charCodeAt(i + 1)
    return c === SLASH || c === QUESTION
  }
}
