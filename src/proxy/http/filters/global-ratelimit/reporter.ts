/**
 * The proxy's link to the control plane for global rate limits: one RateLimitShares stream on the xDS address,
 * opened when the first limit appears in the config (a proxy without global limits opens nothing). Every window it
 * reports each limit's requests admitted and denied since the last report and renews the limits' expiry; every
 * assignment that comes back sets the limits' buckets to this proxy's shares. A limit new to the proxy is reported
 * at once (over an empty window), so its first share arrives without waiting for the next window.
 *
 * When the stream breaks it is reopened with exponential backoff (0.5 s doubling to 10 s); meanwhile the shares
 * stand until their `valid_ms`, then each limit's `on_control_plane_unavailable` applies (shares.ts).
 */
import type * as grpc from '@grpc/grpc-js'
import { log } from '../../../../core/log.js'
import {
  type RateLimitSharesClient,
  rateLimitSharesClient,
  type ShareAssignment,
  type ShareReport,
} from '../../../../xds/ratelimit-service.js'
import { type GlobalLimits, globalLimits, type LimitState } from './shares.js'

export interface ShareReporterOptions {
  /** host:port of the control plane's xDS (gRPC) server */
  server: string
  nodeId: string
  /** TLS to the control plane (default plain text) */
  credentials?: grpc.ChannelCredentials | undefined
  limits?: GlobalLimits
  windowMs?: number
}

export class ShareReporter {
  private readonly opts: ShareReporterOptions
  private readonly limits: GlobalLimits
  private readonly windowMs: number
  private client: RateLimitSharesClient | null = null
  private call: grpc.ClientDuplexStream<ShareReport, ShareAssignment> | null = null
  private timer: NodeJS.Timeout | null = null
  private retry: NodeJS.Timeout | null = null
  private attempt = 0
  private lastReport = performance.now()
  private readonly fresh = new Set<LimitState>()
  private freshPending = false
  private closed = false

  constructor(opts: ShareReporterOptions) {
    this.opts = opts
    this.limits = opts.limits ?? globalLimits
    this.windowMs = opts.windowMs ?? 1000
  }

  /** Hooks into the limits: the stream opens when the first one appears. */
  attach(): this {
    this.limits.onNewLimit = (s) => this.limitAdded(s)
    if (this.limits.states().length > 0) this.start()
    return this
  }

  private limitAdded(s: LimitState): void {
    this.start()
    this.fresh.add(s)
    if (this.freshPending) return
    this.freshPending = true
    setImmediate(() => {
      this.freshPending = false
      const usage = [...this.fresh].map((f) => ({ name: f.name, admitted: 0, denied: 0 }))
      this.fresh.clear()
      this.write({ node_id: this.opts.nodeId, window_ms: 0, usage })
    })
  }

  private start(): void {
    if (this.client !== null || this.closed) return
    this.client = rateLimitSharesClient(this.opts.server, this.opts.credentials)
    this.connect()
    this.timer = setInterval(() => this.tick(), this.windowMs)
    this.timer.unref()
  }

  private connect(): void {
    if (this.closed || this.client === null) return
    const call = this.client.StreamShares()
    this.call = call
    let ended = false
    const onEnd = (why: string) => {
      if (ended) return
      ended = true
      if (this.call === call) this.call = null
      if (this.closed) return
      const delay = Math.min(10_000, 500 * 2 ** this.attempt++)
      log('warn', 'ratelimit', 'share stream ended, reconnecting', { why, inMs: delay })
      this.retry = setTimeout(() => this.connect(), delay)
      this.retry.unref()
    }
    call.on('data', (a: ShareAssignment) => {
      this.attempt = 0
      this.assign(a)
    })
    call.on('error', (e: grpc.ServiceError) => onEnd(e.details ?? e.message))
    call.on('end', () => onEnd('stream closed by the control plane'))
    // say who this is and which limits it has, over an empty window
    const usage = this.limits.states().map((s) => ({ name: s.name, admitted: 0, denied: 0 }))
    this.write({ node_id: this.opts.nodeId, window_ms: 0, usage })
  }

  private assign(a: ShareAssignment): void {
    const now = performance.now()
    const valid = a.valid_ms ?? 3 * this.windowMs
    for (const sh of a.shares ?? []) {
      const s = this.limits.find(sh.name)
      if (s === undefined) continue
      s.assign(sh.requests_per_second ?? 0, sh.burst ?? 1, sh.proxies ?? 0, valid, now)
    }
  }

  private tick(): void {
    const now = performance.now()
    const windowMs = Math.max(1, Math.round(now - this.lastReport))
    this.lastReport = now
    const usage = []
    for (const s of this.limits.states()) {
      s.checkExpiry(now, 3 * this.windowMs, this.limits.createdAt(s.name))
      const { admitted, denied } = s.take()
      usage.push({ name: s.name, admitted, denied })
    }
    this.write({ node_id: this.opts.nodeId, window_ms: windowMs, usage })
  }

  private write(r: ShareReport): void {
    if (this.call === null) return
    try {
      this.call.write(r)
    } catch (err) {
      log('debug', 'ratelimit', 'report failed', { error: String(err) })
    }
  }

  close(): void {
    this.closed = true
    if (this.timer !== null) clearInterval(this.timer)
    if (this.retry !== null) clearTimeout(this.retry)
    this.call?.cancel()
    this.call = null
    this.client?.close()
    if (this.limits.onNewLimit !== null) this.limits.onNewLimit = null
  }
}
