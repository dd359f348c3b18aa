import type { Headers } from '../http/headers.js'
import { parseQuery, pathEnd } from './strings.js'

/** What the router needs to know about a request. */
export interface RequestView {
  /** host[:port] as received (Host header or :authority), any case */
  authority: string
  /** request target in origin form including the query, e.g. '/a/b?x=1' */
  path: string
  method: string
  /** lower-case names */
  headers: Headers
}

/**
 * Per-match scratch state, reused across calls (matching is synchronous): the end of the path part and the
 * parsed query are computed at most once per request, and only if a route needs them.
 */
export class MatchContext {
  req: RequestView = { authority: '', path: '', method: '', headers: undefined as unknown as Headers }
  private end = -1
  private query: Map<string, string> | null = null

  reset(req: RequestView): void {
    this.req = req
    this.end = -1
    this.query = null
  }

  /** Index where the path part of the target ends (first `?` or `#`). */
  pathEnd(): number {
    if (this.end < 0) this.end = pathEnd(this.req.path)
    return this.end
  }

  /** The path without query or fragment. */
  pathOnly(): string {
    const end = this.pathEnd()
    return end === this.req.path.length ? this.req.path : this.req.path.slice(0, end)
  }

  queryParams(): Map<string, string> {
    if (this.query === null) this.query = parseQuery(this.req.path)
    return this.query
  }
}

/**
 * The value of a request header as Envoy's matchers see it: several values are joined with ','. The HTTP/2
 * pseudo-headers `:authority` (also reachable as `host`), `:path` and `:method` come from the request line.
 * `name` must be lower case.
 */
export function headerValue(req: RequestView, name: string): string | undefined {
  if (name.charCodeAt(0) === 58 /* : */) {
    if (name === ':authority') return req.authority
    if (name === ':path') return req.path
    if (name === ':method') return req.method
  } else if (name === 'host') return req.authority
  const l = req.headers.list
  let first: string | undefined
  let joined: string | undefined
  for (let i = 0; i < l.length; i += 2) {
    if (l[i] !== name) continue
    const v = l[i + 1]!
    if (first === undefined) first = v
    else joined = `${joined ?? first},${v}`
  }
  return joined ?? first
}

/** Every value of a header, for hashing. */
export function headerValues(req: RequestView, name: string): string[] {
  if (name === ':authority' || name === 'host') return [req.authority]
  if (name === ':path') return [req.path]
  if (name === ':method') return [req.method]
  return req.headers.getAll(name)
}
