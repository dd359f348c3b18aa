/**
 * Live request tap (`GET /tap` on the admin endpoint, what `loom tap` reads through the control plane): every HTTP
 * request that ends on one of the proxy's connection managers while somebody taps is written, as one JSON line, to
 * each tap whose filters it passes.
 *
 * - Nobody tapping costs a stream one property read (`active`, checked when the stream ends); the line is built
 *   only when a tap is open, from the access log entry of hcm.ts, with `type: "request"`, `direction` (`inbound` on
 *   a sidecar's inbound listeners, else `outbound`), `source` and `destination` (SPIFFE ids when mTLS tells them,
 *   else addresses) in front.
 * - Filters (query parameters): `method` (exact, any case), `path` (prefix), `authority` (exact, with or without
 *   the port), `to` (the destination service: the host of the outbound cluster `outbound|port|subset|host`, else of
 *   the authority; `ratings` matches `ratings.default.svc.cluster.local`), `direction`; `max` (end the stream
 *   after that many lines) and `max_rps` (lines per second; past it, requests are skipped and counted).
 * - A slow reader does not hold the proxy's memory: past MAX_BUFFERED bytes waiting to be sent, lines are dropped
 *   and counted; once the reader catches up a `{"type":"dropped","count":N,"reason":"slow_reader"|"max_rps"}` line
 *   says how many were lost.
 * - The stream ends when the client goes away (the tap is removed at once), after `max` lines, or when the proxy
 *   shuts down.
 */
import type { IncomingMessage, ServerResponse } from 'node:http'

/** Bytes a tap may have waiting to be sent before lines are dropped. */
export const MAX_BUFFERED = 256 * 1024

export interface TapFilter {
  method: string | null
  pathPrefix: string | null
  authority: string | null
  to: string | null
  direction: 'inbound' | 'outbound' | null
  /** lines before the stream ends; 0: no limit */
  max: number
  /** lines per second; 0: no limit */
  maxRps: number
}

/** The filter of a `/tap` query; a message for a bad parameter. */
export function parseTapQuery(q: URLSearchParams): TapFilter | string {
  const count = (name: string): number | string => {
    const v = q.get(name)
    if (v === null || v === '') return 0
    const n = Number(v)
    return Number.isInteger(n) && n >= 0 ? n : `${name} must be a whole number, got "${v}"`
  }
  const max = count('max')
  if (typeof max === 'string') return max
  const maxRps = count('max_rps')
  if (typeof maxRps === 'string') return maxRps
  const direction = q.get('direction')
  if (direction !== null && direction !== 'inbound' && direction !== 'outbound')
    return `direction must be inbound or outbound, got "${direction}"`
  const s = (name: string) => {
    const v = q.get(name)
    return v === null || v === '' ? null : v
  }
  return {
    method: s('method')?.toUpperCase() ?? null,
    pathPrefix: s('path'),
    authority: s('authority')?.toLowerCase() ?? null,
    to: s('to')?.toLowerCase() ?? null,
    direction,
    max,
    maxRps,
  }
}

/** The destination service a request went to: the outbound cluster's host, else the authority's host. */
export function destinationService(entry: Readonly<Record<string, unknown>>): string | null {
  const cluster = entry.upstream_cluster
  if (typeof cluster === 'string' && cluster.startsWith('outbound|')) {
    const host = cluster.split('|')[3]
    if (host !== undefined && host !== '') return host.toLowerCase()
  }
  const authority = entry.authority
  return typeof authority === 'string' ? hostOf(authority) : null
}

function hostOf(authority: string): string {
  const a = authority.toLowerCase()
  if (a.startsWith('[')) return a.slice(0, a.indexOf(']') + 1)
  const i = a.lastIndexOf(':')
  return i > 0 ? a.slice(0, i) : a
}

export function tapMatches(f: TapFilter, direction: string, entry: Readonly<Record<string, unknown>>): boolean {
  if (f.direction !== null && f.direction !== direction) return false
  if (f.method !== null && entry.method !== f.method) return false
  if (f.pathPrefix !== null && !(typeof entry.path === 'string' && entry.path.startsWith(f.pathPrefix))) return false
  if (f.authority !== null) {
    const a = typeof entry.authority === 'string' ? entry.authority.toLowerCase() : ''
    if (a !== f.authority && hostOf(a) !== f.authority) return false
  }
  if (f.to !== null) {
    const d = destinationService(entry)
    if (d === null || (d !== f.to && !d.startsWith(`${f.to}.`))) return false
  }
  return true
}

class Tap {
  readonly filter: TapFilter
  private readonly res: ServerResponse
  private readonly hub: TapHub
  private sent = 0
  private dropped = 0
  private limited = 0
  private windowStart = 0
  private inWindow = 0
  private closed = false

  constructor(hub: TapHub, filter: TapFilter, res: ServerResponse) {
    this.hub = hub
    this.filter = filter
    this.res = res
    res.on('drain', () => this.reportLosses())
  }

  offer(line: string): void {
    if (this.closed) return
    const f = this.filter
    if (f.maxRps > 0) {
      const now = performance.now()
      if (now - this.windowStart >= 1000) {
        this.windowStart = now
        this.inWindow = 0
      }
      if (++this.inWindow > f.maxRps) {
        this.limited++
        return
      }
    }
    if (this.res.writableLength > MAX_BUFFERED) {
      this.dropped++
      return
    }
    this.reportLosses()
    this.res.write(line)
    if (f.max > 0 && ++this.sent >= f.max) this.end()
  }

  private reportLosses(): void {
    if (this.closed) return
    if (this.dropped > 0 && this.res.writableLength <= MAX_BUFFERED) {
      this.res.write(`{"type":"dropped","count":${this.dropped},"reason":"slow_reader"}\n`)
      this.dropped = 0
    }
    if (this.limited > 0) {
      this.res.write(`{"type":"dropped","count":${this.limited},"reason":"max_rps"}\n`)
      this.limited = 0
    }
  }

  end(): void {
    if (this.closed) return
    this.closed = true
    this.hub.remove(this)
    this.res.end()
  }

  gone(): void {
    this.closed = true
    this.hub.remove(this)
  }
}

export class TapHub {
  /** whether any tap is open: the only thing a stream reads when nobody taps */
  active = false
  private readonly taps = new Set<Tap>()
  /** the proxy's own SPIFFE id (its certificate's), or null */
  private readonly self: () => string | null

  constructor(self: () => string | null = () => null) {
    this.self = self
  }

  /** Serves `GET /tap?...`: the response stays open, one JSON line per matching request. */
  serve(req: IncomingMessage, res: ServerResponse, query: URLSearchParams): void {
    const filter = parseTapQuery(query)
    if (typeof filter === 'string') {
      res.writeHead(400, { 'content-type': 'text/plain; charset=utf-8' })
      res.end(`${filter}\n`)
      return
    }
    res.writeHead(200, { 'content-type': 'application/x-ndjson', 'cache-control': 'no-cache' })
    res.flushHeaders()
    const tap = new Tap(this, filter, res)
    this.taps.add(tap)
    this.active = true
    // the client went away (or the stream ended): the tap stops at once
    res.once('close', () => tap.gone())
    req.resume()
  }

  remove(t: Tap): void {
    this.taps.delete(t)
    this.active = this.taps.size > 0
  }

  /** Ends every tap (the proxy is shutting down). */
  closeAll(): void {
    for (const t of [...this.taps]) t.end()
  }

  /** Offers one finished request to the taps (called only while `active`). */
  publish(direction: 'inbound' | 'outbound', entry: Readonly<Record<string, unknown>>): void {
    let line: string | null = null
    for (const t of this.taps) {
      if (!tapMatches(t.filter, direction, entry)) continue
      line ??= this.line(direction, entry)
      t.offer(line)
    }
  }

  private line(direction: 'inbound' | 'outbound', entry: Readonly<Record<string, unknown>>): string {
    const self = this.self()
    const source =
      direction === 'inbound'
        ? (entry.downstream_peer_principal ?? entry.downstream_remote_address ?? null)
        : (self ?? entry.downstream_remote_address ?? null)
    const destination =
      direction === 'inbound'
        ? (self ?? entry.downstream_local_address ?? null)
        : (entry.upstream_peer_principal ?? entry.upstream_host ?? null)
    const head = JSON.stringify({ type: 'request', direction, source, destination })
    const body = JSON.stringify(entry)
    return `${head.slice(0, -1)},${body.slice(1)}\n`
  }
}
