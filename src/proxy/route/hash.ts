/**
 * Request hashing for RING_HASH / MAGLEV from a route's `hash_policy`. Each policy may produce a 32-bit hash;
 * several are combined as Envoy does (previous value rotated left by one, xor the new one), and a `terminal`
 * policy that produced a value ends the walk.
 */
import type { HashPolicy } from '../../config/envoy.js'
import { parseDurationMs } from '../../core/duration.js'
import type { ConfigIssue } from '../../core/errors.js'
import { asciiLower, parseQuery } from './strings.js'
import { headerValues, type RequestView } from './view.js'

export const FNV_OFFSET = 0x811c9dc5
const FNV_PRIME = 0x01000193

/** FNV-1a, 32 bits, over the UTF-16 code units of `s`, from state `h` (not finalised: a signed int32). */
export function fnv(h: number, s: string): number {
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), FNV_PRIME)
  return h
}

/** murmur3's finaliser, so that similar keys spread over the whole 32-bit space */
export function mix(h: number): number {
  h ^= h >>> 16
  h = Math.imul(h, 0x85ebca6b)
  h ^= h >>> 13
  h = Math.imul(h, 0xc2b2ae35)
  h ^= h >>> 16
  return h >>> 0
}

/** FNV-1a over the UTF-16 code units, finalised with murmur3's mixer: a uint32. */
export function hashString(s: string): number {
  return mix(fnv(FNV_OFFSET, s))
}

/** Several values hashed as one key, independent of their order (as Envoy does for repeated headers). */
export function hashValues(values: string[]): number {
  if (values.length === 1) return hashString(values[0]!)
  const sorted = values.slice().sort()
  let h = FNV_OFFSET
  for (const v of sorted) h = Math.imul(fnv(h, v) ^ 0xff, FNV_PRIME)
  return mix(h)
}

/** Rotate left by one and xor, in 32 bits. */
export function combineHash(prev: number, next: number): number {
  return (((prev << 1) | (prev >>> 31)) ^ next) >>> 0
}

/**
 * The value of the first cookie called `name` in the request's Cookie headers, without surrounding double
 * quotes; undefined when absent or empty.
 */
export function cookieValue(req: RequestView, name: string): string | undefined {
  const l = req.headers.list
  for (let i = 0; i < l.length; i += 2) {
    if (l[i] !== 'cookie') continue
    const header = l[i + 1]!
    let start = 0
    while (start < header.length) {
      let end = header.indexOf(';', start)
      if (end < 0) end = header.length
      let k = start
      while (k < end && header.charCodeAt(k) === 32) k++
      const eq = header.indexOf('=', k)
      if (eq >= 0 && eq < end && eq - k === name.length && header.startsWith(name, k)) {
        let v = header.slice(eq + 1, end)
        if (v.length >= 2 && v.charCodeAt(0) === 34 && v.charCodeAt(v.length - 1) === 34) v = v.slice(1, -1)
        if (v !== '') return v
      }
      start = end + 1
    }
  }
  return undefined
}

const HEADER = 0
const COOKIE = 1
const SOURCE_IP = 2
const QUERY = 3

interface Policy {
  kind: number
  name: string
  terminal: boolean
  /** cookie policies: generate the cookie when missing (ttl set); seconds, 0 = session cookie */
  cookieTtlS: number | null
  cookiePath: string
}

export interface CookieToSet {
  name: string
  value: string
  /** a complete Set-Cookie header value */
  setCookie: string
}

export class HashPolicies {
  private readonly policies: Policy[]

  constructor(policies: Policy[]) {
    this.policies = policies
  }

  get size(): number {
    return this.policies.length
  }

  /**
   * The combined hash, or undefined when no policy produced a value. With `cookieOut`, a cookie policy that
   * has a ttl and finds its cookie missing generates one from the source IP (hashing on it) and reports it
   * there, for the response's Set-Cookie.
   */
  hash(req: RequestView, sourceIp: string, cookieOut?: CookieToSet[]): number | undefined {
    let h: number | undefined
    let query: Map<string, string> | undefined
    for (const p of this.policies) {
      let v: number | undefined
      switch (p.kind) {
        case HEADER: {
          const values = headerValues(req, p.name)
          if (values.length > 0) v = hashValues(values)
          break
        }
        case COOKIE: {
          const c = cookieValue(req, p.name)
          if (c !== undefined) v = hashString(c)
          else if (p.cookieTtlS !== null) {
            const value = generatedCookieValue(sourceIp)
            v = hashString(value)
            cookieOut?.push({ name: p.name, value, setCookie: setCookie(p, value) })
          }
          break
        }
        case SOURCE_IP:
          if (sourceIp !== '') v = hashString(sourceIp)
          break
        default: {
          query ??= parseQuery(req.path)
          const q = query.get(p.name)
          if (q !== undefined) v = hashString(q)
        }
      }
      if (v !== undefined) h = h === undefined ? v : combineHash(h, v)
      if (p.terminal && h !== undefined) break
    }
    return h
  }
}

function generatedCookieValue(sourceIp: string): string {
  return hashString(sourceIp).toString(16).padStart(8, '0')
}

function setCookie(p: Policy, value: string): string {
  let s = `${p.name}="${value}"`
  if (p.cookieTtlS !== null && p.cookieTtlS > 0) s += `; Max-Age=${p.cookieTtlS}`
  if (p.cookiePath !== '') s += `; Path=${p.cookiePath}`
  return `${s}; HttpOnly`
}

const cookieNameRe = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/
const cookiePathRe = /^[\x20-\x3a\x3c-\x7e]*$/

export function compileHashPolicies(list: HashPolicy[], prefix: string, issues: ConfigIssue[]): HashPolicies {
  const out: Policy[] = []
  list.forEach((hp, i) => {
    const path = `${prefix}[${i}]`
    const terminal = hp.terminal === true
    if (hp.header !== undefined) {
      out.push({ kind: HEADER, name: asciiLower(hp.header.header_name), terminal, cookieTtlS: null, cookiePath: '' })
    } else if (hp.cookie !== undefined) {
      const c = hp.cookie
      if (!cookieNameRe.test(c.name)) issues.push({ path: `${path}.cookie.name`, message: 'not a valid cookie name' })
      if (c.path !== undefined && !cookiePathRe.test(c.path)) {
        issues.push({ path: `${path}.cookie.path`, message: 'cookie path may not contain ";" or control characters' })
      }
      let ttl: number | null = null
      if (c.ttl !== undefined) ttl = Math.floor((parseDurationMs(c.ttl) ?? 0) / 1000)
      out.push({ kind: COOKIE, name: c.name, terminal, cookieTtlS: ttl, cookiePath: c.path ?? '' })
    } else if (hp.connection_properties !== undefined) {
      // source_ip: false produces nothing, as in Envoy.
      if (hp.connection_properties.source_ip) {
        out.push({ kind: SOURCE_IP, name: '', terminal, cookieTtlS: null, cookiePath: '' })
      }
    } else if (hp.query_parameter !== undefined) {
      out.push({ kind: QUERY, name: hp.query_parameter.name, terminal, cookieTtlS: null, cookiePath: '' })
    }
  })
  return new HashPolicies(out)
}
