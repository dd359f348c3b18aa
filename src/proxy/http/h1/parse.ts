/**
 * A strict HTTP/1.1 message head parser and chunked body decoder, working on Buffers.
 *
 * Strictness is the point: a proxy that is lenient where its upstream is strict (or the reverse) can be used to
 * smuggle requests. Everything RFC 9112 calls an error is an error here: bare CR or LF, obs-fold, whitespace
 * before a colon, Content-Length and Transfer-Encoding together, any transfer coding but a single `chunked`,
 * Transfer-Encoding in HTTP/1.0, invalid or conflicting Content-Length, a missing or repeated Host.
 */
import { Buffer } from 'node:buffer'
import { Headers } from '../headers.js'

export class HttpParseError extends Error {
  override name = 'HttpParseError'
  /** The status a server answers with (400, 431, 501, 505). */
  readonly status: number
  /** A short machine-readable reason, used for `x-loom-reason` and logs. */
  readonly reason: string
  constructor(status: number, reason: string, message: string) {
    super(message)
    this.status = status
    this.reason = reason
  }
}

const bad = (reason: string, message: string) => new HttpParseError(400, reason, message)

// RFC 9110 tchar
const TCHAR = new Uint8Array(256)
for (const c of "!#$%&'*+-.^_`|~") TCHAR[c.charCodeAt(0)] = 1
for (let c = 0x30; c <= 0x39; c++) TCHAR[c] = 1
for (let c = 0x41; c <= 0x5a; c++) TCHAR[c] = 1
for (let c = 0x61; c <= 0x7a; c++) TCHAR[c] = 1

/** Field value bytes: VCHAR, SP, HTAB, obs-text. No CTLs (so no CR, LF, NUL), no DEL. */
const VCHAR = new Uint8Array(256)
VCHAR[0x09] = 1
for (let c = 0x20; c <= 0x7e; c++) VCHAR[c] = 1
for (let c = 0x80; c <= 0xff; c++) VCHAR[c] = 1

/** Request-target bytes: visible ASCII only (no spaces, no CTLs); obs-text is not allowed in a URI. */
const TARGET = new Uint8Array(256)
for (let c = 0x21; c <= 0x7e; c++) TARGET[c] = 1

export interface Limits {
  /** Maximum bytes of a message head (request line plus headers). Over it: 431. */
  maxHeadBytes: number
  /** Maximum number of header fields. Over it: 431. */
  maxHeaders: number
}

export const DEFAULT_LIMITS: Limits = { maxHeadBytes: 60 * 1024, maxHeaders: 100 }

/**
 * Finds the end of a message head in `buf` (the index just past the blank line), searching from `from`.
 * Returns -1 when more bytes are needed. Throws on a bare LF when the head is not complete yet (so a client using
 * LF-only line ends is told 400 at once rather than waiting for a limit) and when the head would exceed
 * `limits.maxHeadBytes`. A complete head is not checked here: the head parsers look at every byte of it anyway.
 */
export function findHeadEnd(buf: Buffer, start: number, from: number, limits: Limits): number {
  const stop = Math.min(buf.length, start + limits.maxHeadBytes + 4)
  const first = Math.max(from, start)
  // Horspool search for CR LF CR LF: look at the byte where a match would end; a letter (most bytes of a head)
  // cannot be in the pattern, so the next 4 positions cannot end a match either
  let i = first + 3
  while (i < stop) {
    const c = buf[i]
    if (c === 0x0a) {
      if (buf[i - 1] === 0x0d && buf[i - 2] === 0x0a && buf[i - 3] === 0x0d) {
        if (i + 1 - start > limits.maxHeadBytes) break
        return i + 1
      }
      i += 2
    } else if (c === 0x0d) i += 1
    else i += 4
  }
  for (let j = first; j < stop; j++) {
    if (buf[j] === 0x0a && (j === start || buf[j - 1] !== 0x0d)) throw bad('bare_lf', 'bare LF in message head')
  }
  if (buf.length - start > limits.maxHeadBytes) {
    throw new HttpParseError(431, 'headers_too_large', 'request headers too large')
  }
  return -1
}

export interface RequestHead {
  method: string
  /** The request-target as received. */
  target: string
  /** Path and query in origin form (`/a?b`); `*` for OPTIONS *; `host:port` for CONNECT. */
  path: string
  /** host[:port] from the absolute-form target, else from Host; lower-cased. */
  authority: string
  /** 0 for HTTP/1.0, 1 for HTTP/1.1 */
  versionMinor: number
  headers: Headers
  /** -1 when the request has no Content-Length */
  contentLength: number
  chunked: boolean
  keepAlive: boolean
  /** Lower-cased Upgrade token when the request asks for an upgrade (Connection: upgrade), else null. */
  upgrade: string | null
  expectContinue: boolean
}

export interface ResponseHead {
  status: number
  reason: string
  versionMinor: number
  headers: Headers
  contentLength: number
  chunked: boolean
  keepAlive: boolean
}

/**
 * Header names common enough to intern: recognised in place (as sent in canonical or lower case) so the usual names
 * cost no string allocations. The parser hashes a name's bytes (case folded) while it checks them; the hash picks
 * the one candidate to compare.
 */
interface KnownName {
  readonly lower: string
  readonly canonical: string
  readonly len: number
}
const NAME_SLOTS = 512
const KNOWN_NAMES: (KnownName | undefined)[] = new Array(NAME_SLOTS).fill(undefined)

/** One step of the name hash: `c | 0x20` folds ASCII letters to lower case. */
function hashStep(h: number, c: number): number {
  return (Math.imul(h, 31) + (c | 0x20)) | 0
}

function nameSlot(h: number): number {
  return (h ^ (h >>> 7)) & (NAME_SLOTS - 1)
}

function nameHash(lower: string): number {
  let h = 0
  for (let i = 0; i < lower.length; i++) h = hashStep(h, lower.charCodeAt(i))
  return h
}

/** the name hash of `x-forwarded-client-cert`: a head none of whose names hash so has no such header */
const XFCC_HASH = nameHash('x-forwarded-client-cert')

for (const lower of [
  'host',
  'user-agent',
  'accept',
  'accept-encoding',
  'accept-language',
  'connection',
  'content-length',
  'content-type',
  'date',
  'server',
  'cookie',
  'set-cookie',
  'authorization',
  'cache-control',
  'etag',
  'expires',
  'last-modified',
  'location',
  'vary',
  'via',
  'x-request-id',
  'x-forwarded-for',
  'x-forwarded-proto',
  'referer',
  'origin',
  'keep-alive',
  'transfer-encoding',
  'te',
  'upgrade',
  'pragma',
  'range',
  'if-none-match',
  'if-modified-since',
  'content-encoding',
  'grpc-status',
  'grpc-message',
  'traceparent',
  'x-b3-traceid',
  'x-b3-spanid',
  'x-b3-parentspanid',
  'x-b3-sampled',
  'x-envoy-upstream-service-time',
  'expect',
]) {
  const canonical = lower.replace(/(^|-)([a-z])/g, (_m, d: string, c: string) => d + c.toUpperCase())
  const h = nameHash(lower)
  // a name whose slot is taken is still parsed right, only without interning
  KNOWN_NAMES[nameSlot(h)] ??= { lower, canonical, len: lower.length }
}

/** The lower-cased name `s[start, end)`, whose bytes hashed to `h`. */
function headerName(s: string, start: number, end: number, h: number): string {
  const k = KNOWN_NAMES[nameSlot(h)]
  if (k !== undefined && k.len === end - start && (s.startsWith(k.canonical, start) || s.startsWith(k.lower, start))) {
    return k.lower
  }
  return s.slice(start, end).toLowerCase()
}

/**
 * Parses header lines starting at `pos` until the blank line. Names are lower-cased. The bytes are read from `b`
 * (`s` is `b` from `base` on, as latin1): typed array loads cost a fraction of String#charCodeAt; names and values
 * are then cut from `s`. Returns whether a name hashed as `x-forwarded-client-cert` does (false: there is none).
 */
function parseFields(b: Buffer, base: number, s: string, pos: number, limits: Limits, list: string[]): boolean {
  const len = s.length
  let xfcc = false
  let i = base + pos
  const stop = base + len
  for (;;) {
    if (i >= stop) throw bad('truncated_head', 'truncated message head')
    let c = b[i]!
    if (c === 0x0d) {
      if (b[i + 1] !== 0x0a) throw bad('bare_cr', 'bare CR in message head')
      return xfcc
    }
    if (c === 0x20 || c === 0x09) throw bad('obs_fold', 'obsolete line folding or whitespace before a header')
    const nameStart = i
    let h = 0
    while (i < stop && TCHAR[(c = b[i]!)] === 1) {
      h = hashStep(h, c)
      i++
    }
    if (i === nameStart) throw bad('invalid_header_name', 'invalid character in header name')
    if (c !== 0x3a) {
      if (c === 0x20 || c === 0x09) throw bad('space_before_colon', 'whitespace between header name and colon')
      if (c === 0x0a) throw bad('bare_lf', 'bare LF in message head')
      throw bad('invalid_header_name', 'invalid character in header name')
    }
    const name = headerName(s, nameStart - base, i - base, h)
    if (h === XFCC_HASH) xfcc = true
    i++
    // leading OWS
    while (i < stop && ((c = b[i]!) === 0x20 || c === 0x09)) i++
    const valueStart = i
    let valueEnd = i
    while (i < stop) {
      c = b[i]!
      if (c === 0x0d) break
      if (VCHAR[c] !== 1) {
        if (c === 0x0a) throw bad('bare_lf', 'bare LF in message head')
        throw bad('invalid_header_value', 'invalid character in header value')
      }
      i++
      if (c !== 0x20 && c !== 0x09) valueEnd = i
    }
    if (i >= stop || b[i + 1] !== 0x0a) throw bad('bare_cr', 'bare CR in message head')
    i += 2
    if (list.length >= limits.maxHeaders * 2) {
      throw new HttpParseError(431, 'too_many_headers', 'too many request headers')
    }
    list.push(name, s.slice(valueStart - base, valueEnd - base))
  }
}

/** The value of a string of 1 to 15 ASCII digits, else -1. */
function digitsValue(s: string): number {
  const n = s.length
  if (n === 0 || n > 15) return -1
  let v = 0
  for (let i = 0; i < n; i++) {
    const d = s.charCodeAt(i) - 0x30
    if (d < 0 || d > 9) return -1
    v = v * 10 + d
  }
  return v
}

/** Content-Length: 1*DIGIT, or a list of identical values. Returns -1 if absent. */
function contentLengthOf(list: string[]): number {
  let value = -1
  for (let i = 0; i < list.length; i += 2) {
    if (list[i] !== 'content-length') continue
    const raw = list[i + 1]!
    const simple = digitsValue(raw)
    if (simple !== -1) {
      if (value !== -1 && simple !== value) throw bad('conflicting_content_length', 'conflicting Content-Length values')
      value = simple
      continue
    }
    for (const part of raw.split(',')) {
      const p = part.trim()
      if (p.length === 0 || p.length > 15 || !/^[0-9]+$/.test(p)) {
        throw bad('invalid_content_length', 'invalid Content-Length')
      }
      const n = Number(p)
      if (value !== -1 && n !== value) throw bad('conflicting_content_length', 'conflicting Content-Length values')
      value = n
    }
  }
  return value
}

/** Transfer-Encoding must be one field whose value is exactly `chunked`. Returns whether present. */
function chunkedOf(list: string[]): boolean {
  let seen = false
  for (let i = 0; i < list.length; i += 2) {
    if (list[i] !== 'transfer-encoding') continue
    if (seen) throw new HttpParseError(400, 'invalid_transfer_encoding', 'more than one Transfer-Encoding field')
    seen = true
    if (list[i + 1]!.toLowerCase() !== 'chunked') {
      throw bad('unsupported_transfer_encoding', 'unsupported Transfer-Encoding (only chunked)')
    }
  }
  return seen
}

/** The lower-cased tokens of every Connection field. */
function connectionTokens(list: string[]): string | null {
  let out: string | null = null
  for (let i = 0; i < list.length; i += 2) {
    if (list[i] === 'connection') {
      const v = list[i + 1]!.toLowerCase()
      out = out === null ? v : `${out},${v}`
    }
  }
  return out
}

/** Whether the comma-separated, lower-cased list `tokens` holds `token` (surrounding whitespace ignored). */
export function hasToken(tokens: string, token: string): boolean {
  if (tokens === token) return true
  const n = token.length
  let i = tokens.indexOf(token)
  while (i !== -1) {
    let b = i - 1
    while (b >= 0 && (tokens.charCodeAt(b) === 0x20 || tokens.charCodeAt(b) === 0x09)) b--
    let a = i + n
    while (a < tokens.length && (tokens.charCodeAt(a) === 0x20 || tokens.charCodeAt(a) === 0x09)) a++
    if ((b < 0 || tokens.charCodeAt(b) === 0x2c) && (a >= tokens.length || tokens.charCodeAt(a) === 0x2c)) return true
    i = tokens.indexOf(token, i + 1)
  }
  return false
}

const HTTP_PREFIX = 'HTTP/1.'

/** Parses a request head: `buf[start, end)` must end with the blank line (see findHeadEnd). */
export function parseRequestHead(buf: Buffer, start: number, end: number, limits: Limits): RequestHead {
  const s = buf.latin1Slice(start, end)
  const len = s.length
  // method
  let pos = 0
  let c = 0
  while (pos < len && TCHAR[(c = s.charCodeAt(pos))] === 1) pos++
  if (pos === 0 || c !== 0x20) throw bad('invalid_method', 'invalid request method')
  const method = s.slice(0, pos)
  pos++
  const targetStart = pos
  while (pos < len && TARGET[s.charCodeAt(pos)] === 1) pos++
  if (pos === targetStart || s.charCodeAt(pos) !== 0x20) throw bad('invalid_target', 'invalid request target')
  const target = s.slice(targetStart, pos)
  pos++
  if (!s.startsWith(HTTP_PREFIX, pos)) throw bad('invalid_version', 'invalid HTTP version')
  const minor = s.charCodeAt(pos + 7) - 0x30
  if (minor !== 0 && minor !== 1) {
    throw new HttpParseError(505, 'unsupported_version', 'HTTP version not supported')
  }
  pos += 8
  if (s.charCodeAt(pos) !== 0x0d || s.charCodeAt(pos + 1) !== 0x0a)
    throw bad('invalid_request_line', 'invalid request line')
  pos += 2

  const list: string[] = []
  const xfcc = parseFields(buf, start, s, pos, limits, list)

  const contentLength = contentLengthOf(list)
  const chunked = chunkedOf(list)
  if (chunked && contentLength !== -1) {
    throw bad('content_length_and_chunked', 'both Content-Length and Transfer-Encoding')
  }
  if (chunked && minor === 0) throw bad('chunked_http10', 'Transfer-Encoding in an HTTP/1.0 request')

  // Host: exactly one in HTTP/1.1; at most one in HTTP/1.0
  let host: string | undefined
  for (let i = 0; i < list.length; i += 2) {
    if (list[i] !== 'host') continue
    if (host !== undefined) throw bad('duplicate_host', 'more than one Host header')
    host = list[i + 1]!
  }
  if (host === undefined && minor === 1) throw bad('missing_host', 'missing Host header')
  if (host !== undefined && !validAuthority(host)) throw bad('invalid_host', 'invalid Host header')

  let path = target
  let authority = host === undefined ? '' : host.toLowerCase()
  const t0 = target.charCodeAt(0)
  if (t0 !== 0x2f) {
    if (method === 'CONNECT') {
      if (!validAuthority(target)) throw bad('invalid_target', 'invalid CONNECT target')
      authority = target.toLowerCase()
    } else if (target === '*') {
      if (method !== 'OPTIONS') throw bad('invalid_target', 'asterisk-form target is only valid for OPTIONS')
    } else {
      // absolute-form: the URI's authority wins over Host (RFC 9112 §3.2.2)
      const m = /^(https?):\/\/([^/?#]+)([^#]*)$/i.exec(target)
      if (m === null || !validAuthority(m[2]!)) throw bad('invalid_target', 'invalid request target')
      authority = m[2]!.toLowerCase()
      path = m[3] === '' ? '/' : m[3]!
      if (path.charCodeAt(0) !== 0x2f) path = `/${path}`
    }
  } else if (target.includes('#')) {
    throw bad('invalid_target', 'fragment in request target')
  }

  const conn = connectionTokens(list)
  let keepAlive = minor === 1
  let upgrade: string | null = null
  if (conn !== null) {
    if (hasToken(conn, 'close')) keepAlive = false
    else if (minor === 0 && hasToken(conn, 'keep-alive')) keepAlive = true
    if (hasToken(conn, 'upgrade')) {
      for (let i = 0; i < list.length; i += 2) {
        if (list[i] === 'upgrade') {
          upgrade = list[i + 1]!.toLowerCase()
          break
        }
      }
    }
  }
  let expectContinue = false
  for (let i = 0; i < list.length; i += 2) {
    if (list[i] === 'expect' && list[i + 1]!.toLowerCase() === '100-continue') expectContinue = true
  }
  const headers = new Headers(list)
  if (!xfcc) headers.xfccAbsent = true
  return {
    method,
    target,
    path,
    authority,
    versionMinor: minor,
    headers,
    contentLength,
    chunked,
    keepAlive,
    upgrade,
    expectContinue,
  }
}

/** host[:port] with no userinfo, spaces or path characters. */
export function validAuthority(a: string): boolean {
  if (a.length === 0 || a.length > 255) return false
  for (let i = 0; i < a.length; i++) {
    const c = a.charCodeAt(i)
    // unreserved / sub-delims / ':' / '[' ']' (IPv6). No '@' (userinfo), '/', '?', '#', '%'-less controls.
    if (
      !(
        (c >= 0x61 && c <= 0x7a) ||
        (c >= 0x41 && c <= 0x5a) ||
        (c >= 0x30 && c <= 0x39) ||
        c === 0x2d ||
        c === 0x2e ||
        c === 0x5f ||
        c === 0x7e ||
        c === 0x3a ||
        c === 0x5b ||
        c === 0x5d
      )
    ) {
      return false
    }
  }
  return true
}

/** Parses a response head. Upstream framing errors throw HttpParseError (the proxy answers 502). */
export function parseResponseHead(buf: Buffer, start: number, end: number, limits: Limits): ResponseHead {
  const s = buf.latin1Slice(start, end)
  if (!s.startsWith(HTTP_PREFIX)) throw bad('invalid_version', 'invalid response version')
  const minor = s.charCodeAt(7) - 0x30
  if ((minor !== 0 && minor !== 1) || s.charCodeAt(8) !== 0x20) throw bad('invalid_version', 'invalid response version')
  const d0 = s.charCodeAt(9) - 0x30
  const d1 = s.charCodeAt(10) - 0x30
  const d2 = s.charCodeAt(11) - 0x30
  if (d0 < 1 || d0 > 5 || d1 < 0 || d1 > 9 || d2 < 0 || d2 > 9) throw bad('invalid_status', 'invalid status code')
  const status = d0 * 100 + d1 * 10 + d2
  let pos = 12
  let reason = ''
  if (s.charCodeAt(pos) === 0x20) {
    pos++
    const rs = pos
    while (pos < s.length && s.charCodeAt(pos) !== 0x0d) {
      if (VCHAR[s.charCodeAt(pos)] !== 1) throw bad('invalid_reason', 'invalid reason phrase')
      pos++
    }
    reason = s.slice(rs, pos)
  }
  if (s.charCodeAt(pos) !== 0x0d || s.charCodeAt(pos + 1) !== 0x0a)
    throw bad('invalid_status_line', 'invalid status line')
  pos += 2
  const list: string[] = []
  parseFields(buf, start, s, pos, limits, list)
  const contentLength = contentLengthOf(list)
  const chunked = list.indexOf('transfer-encoding') === -1 ? false : chunkedOf(list)
  if (chunked && contentLength !== -1) {
    throw bad('content_length_and_chunked', 'both Content-Length and Transfer-Encoding in response')
  }
  const conn = connectionTokens(list)
  let keepAlive = minor === 1
  if (conn !== null) {
    if (hasToken(conn, 'close')) keepAlive = false
    else if (minor === 0 && hasToken(conn, 'keep-alive')) keepAlive = true
  }
  return { status, reason, versionMinor: minor, headers: new Headers(list), contentLength, chunked, keepAlive }
}

// === chunked decoding ===

enum CS {
  Size,
  SizeLf,
  Ext,
  Data,
  DataCr,
  DataLf,
  Trailer,
  Done,
}

const HEX = new Int8Array(256).fill(-1)
for (let c = 0; c < 10; c++) HEX[0x30 + c] = c
for (let c = 0; c < 6; c++) {
  HEX[0x41 + c] = 10 + c
  HEX[0x61 + c] = 10 + c
}

/** Max bytes of chunk extensions per chunk, and of all trailer fields. */
const MAX_EXT = 4096
const MAX_TRAILERS = 16 * 1024

/**
 * Decodes a chunked body incrementally. `execute` consumes bytes and appends the data it finds as Buffer views
 * (no copies) to `out`; it stops at the end of the message and returns the offset just past it, so pipelined bytes
 * that follow stay with the caller.
 */
export class ChunkedDecoder {
  private state = CS.Size
  private size = 0
  private sizeDigits = 0
  private extBytes = 0
  private trailerBuf = ''
  trailers: Headers | null = null

  get done(): boolean {
    return this.state === CS.Done
  }

  reset(): void {
    this.state = CS.Size
    this.size = 0
    this.sizeDigits = 0
    this.extBytes = 0
    this.trailerBuf = ''
    this.trailers = null
  }

  execute(buf: Buffer, off: number, out: Buffer[]): number {
    const len = buf.length
    while (off < len) {
      switch (this.state) {
        case CS.Size: {
          const c = buf[off]!
          const h = HEX[c]!
          if (h !== -1) {
            if (++this.sizeDigits > 12) throw bad('chunk_size_overflow', 'chunk size too large')
            this.size = this.size * 16 + h
            off++
          } else if (this.sizeDigits === 0) {
            throw bad('invalid_chunk_size', 'invalid chunk size')
          } else if (c === 0x0d) {
            this.state = CS.SizeLf
            off++
          } else if (c === 0x3b) {
            this.state = CS.Ext
            this.extBytes = 0
            off++
          } else {
            // no BWS before extensions: stricter than the RFC allows, as llhttp
            throw bad('invalid_chunk_size', 'invalid chunk size')
          }
          break
        }
        case CS.Ext: {
          const c = buf[off]!
          if (c === 0x0d) {
            this.state = CS.SizeLf
          } else if (c === 0x0a || (c < 0x20 && c !== 0x09) || c === 0x7f) {
            throw bad('invalid_chunk_extension', 'invalid chunk extension')
          } else if (++this.extBytes > MAX_EXT) {
            throw bad('chunk_extension_too_large', 'chunk extensions too large')
          }
          off++
          break
        }
        case CS.SizeLf: {
          if (buf[off] !== 0x0a) throw bad('bare_cr', 'bare CR in chunk size line')
          off++
          if (this.size === 0) {
            this.state = CS.Trailer
            this.trailerBuf = ''
          } else this.state = CS.Data
          break
        }
        case CS.Data: {
          const n = Math.min(this.size, len - off)
          out.push(buf.subarray(off, off + n))
          off += n
          this.size -= n
          if (this.size === 0) this.state = CS.DataCr
          break
        }
        case CS.DataCr: {
          if (buf[off] !== 0x0d) throw bad('missing_chunk_crlf', 'missing CRLF after chunk data')
          this.state = CS.DataLf
          off++
          break
        }
        case CS.DataLf: {
          if (buf[off] !== 0x0a) throw bad('missing_chunk_crlf', 'missing CRLF after chunk data')
          this.state = CS.Size
          this.size = 0
          this.sizeDigits = 0
          off++
          break
        }
        case CS.Trailer: {
          // accumulate trailer section until CRLF CRLF (or a lone CRLF when there are none)
          const before = this.trailerBuf.length
          const chunk = buf.latin1Slice(off, Math.min(len, off + MAX_TRAILERS + 4 - before))
          this.trailerBuf += chunk
          if (this.trailerBuf.charCodeAt(0) === 0x0d && this.trailerBuf.length >= 2) {
            if (this.trailerBuf.charCodeAt(1) !== 0x0a) throw bad('bare_cr', 'bare CR after last chunk')
            this.state = CS.Done
            return off + (2 - before)
          }
          const end = this.trailerBuf.indexOf('\r\n\r\n')
          if (end === -1) {
            if (this.trailerBuf.length > MAX_TRAILERS)
              throw new HttpParseError(431, 'trailers_too_large', 'trailers too large')
            if (this.trailerBuf.length === 1 && this.trailerBuf.charCodeAt(0) === 0x0d) return len
            checkNoBareLf(this.trailerBuf)
            off += chunk.length
            break
          }
          const section = this.trailerBuf.slice(0, end + 4)
          checkNoBareLf(section)
          const list: string[] = []
          parseFields(
            Buffer.from(section, 'latin1'),
            0,
            section,
            0,
            { maxHeadBytes: MAX_TRAILERS, maxHeaders: 100 },
            list,
          )
          for (let i = 0; i < list.length; i += 2) {
            const n = list[i]
            if (n === 'content-length' || n === 'transfer-encoding' || n === 'host') {
              throw bad('forbidden_trailer', `${n} is not allowed in trailers`)
            }
          }
          this.trailers = new Headers(list)
          this.state = CS.Done
          return off + (end + 4 - before)
        }
        case CS.Done:
          return off
      }
    }
    return off
  }
}

function checkNoBareLf(s: string): void {
  for (let i = s.indexOf('\n'); i !== -1; i = s.indexOf('\n', i + 1)) {
    if (i === 0 || s.charCodeAt(i - 1) !== 0x0d) throw bad('bare_lf', 'bare LF in trailers')
  }
  for (let i = s.indexOf('\r'); i !== -1; i = s.indexOf('\r', i + 1)) {
    if (i + 1 < s.length && s.charCodeAt(i + 1) !== 0x0a) throw bad('bare_cr', 'bare CR in trailers')
  }
}
