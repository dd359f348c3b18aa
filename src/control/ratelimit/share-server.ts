/**
 * The control plane's side of the global rate limits: the RateLimitShares streams (one per proxy), the demand
 * each proxy reported for each limit, and the rebalancing that turns demand into shares (allocate.ts).
 *
 * Every window (default 1 s) and whenever a proxy reports a limit for the first time or goes away, each limit's
 * budget (its GlobalRateLimit's rate) is divided between the proxies that reported it within the last
 * `expiryWindows` windows, and every stream gets its shares. A proxy that stops reporting (its stream open but
 * silent) loses its share after those windows; one whose stream ends loses it at once. Assignments say how long
 * they hold (`valid_ms`); past that, the proxy applies the limit's `onControlPlaneUnavailable`.
 */
import type * as grpc from '@grpc/grpc-js'
import { burstOf, type GlobalRateLimitSpec, ratePerSecond, type Resource } from '../../api/index.js'
import { log } from '../../core/log.js'
import type { LimitUsage, ShareAssignment, ShareReport } from '../../xds/ratelimit-service.js'
import { allocate, DEFAULT_FLOOR_FRACTION } from './allocate.js'

type ShareCall = grpc.ServerDuplexStream<ShareReport, ShareAssignment>

export interface ShareServerOptions {
  windowMs?: number
  expiryWindows?: number
  floorFraction?: number
}

interface LimitBudget {
  rate: number
  burst: number
}

interface Usage {
  /** requests per second offered in the last reported window */
  demand: number
  /** Date.now() of the last report */
  at: number
}

class ShareStream {
  nodeId = ''
  /** per limit name: the last report */
  readonly usage = new Map<string, Usage>()
  constructor(readonly call: ShareCall) {}
}

/** One limit as `/debug/ratelimits` shows it. */
export interface LimitStatus {
  name: string
  requestsPerSecond: number
  burst: number
  proxies: { node: string; demand: number; share: number }[]
}

export class ShareServer {
  readonly windowMs: number
  readonly expiryWindows: number
  readonly floorFraction: number
  private readonly streams = new Set<ShareStream>()
  private budgets = new Map<string, LimitBudget>()
  private readonly last = new Map<string, Map<ShareStream, number>>()
  private timer: NodeJS.Timeout | null = null
  private pending = false
  private closed = false

  constructor(opts: ShareServerOptions = {}) {
    this.windowMs = opts.windowMs ?? 1000
    this.expiryWindows = opts.expiryWindows ?? 3
    this.floorFraction = opts.floorFraction ?? DEFAULT_FLOOR_FRACTION
  }

  /** The gRPC handlers (for XdsServer.addService). */
  handlers(): grpc.UntypedServiceImplementation {
    return { StreamShares: (call: ShareCall) => this.open(call) }
  }

  /** The limits as the store has them: `namespace/name` → rate and burst. */
  setResources(resources: readonly Resource[]): void {
    const next = new Map<string, LimitBudget>()
    for (const r of resources) {
      if (r.kind !== 'GlobalRateLimit') continue
      const spec = r.spec as GlobalRateLimitSpec
      next.set(`${r.metadata.namespace}/${r.metadata.name}`, { rate: ratePerSecond(spec), burst: burstOf(spec) })
    }
    this.budgets = next
    this.schedule()
  }

  private open(call: ShareCall): void {
    if (this.closed) {
      call.end()
      return
    }
    const s = new ShareStream(call)
    this.streams.add(s)
    this.startTimer()
    let gone = false
    const drop = () => {
      if (gone) return
      gone = true
      this.streams.delete(s)
      if (s.usage.size > 0) this.schedule()
      if (this.streams.size === 0) this.stopTimer()
    }
    call.on('data', (r: ShareReport) => this.report(s, r))
    call.on('end', () => {
      drop()
      call.end()
    })
    call.on('error', drop)
    call.on('cancelled', drop)
    call.on('close', drop)
  }

  private report(s: ShareStream, r: ShareReport): void {
    if (r.node_id !== undefined && r.node_id !== '') s.nodeId = r.node_id
    const windowMs = r.window_ms ?? 0
    const now = Date.now()
    let fresh = false
    for (const u of r.usage ?? ([] as LimitUsage[])) {
      const offered = Number(u.admitted ?? 0) + Number(u.denied ?? 0)
      const demand = windowMs > 0 ? (offered * 1000) / windowMs : 0
      const prev = s.usage.get(u.name)
      // a report over no window (the proxy just learned of the limit) says it is there, not how busy it is
      if (prev === undefined) fresh = true
      s.usage.set(u.name, { demand: windowMs > 0 || prev === undefined ? demand : prev.demand, at: now })
    }
    if (fresh) this.schedule()
  }

  /** A rebalancing soon (coalesced): a proxy arrived or left. */
  private schedule(): void {
    if (this.pending || this.closed) return
    this.pending = true
    setImmediate(() => {
      this.pending = false
      this.rebalance()
    })
  }

  private startTimer(): void {
    if (this.timer !== null) return
    this.timer = setInterval(() => this.rebalance(), this.windowMs)
    this.timer.unref()
  }

  private stopTimer(): void {
    if (this.timer !== null) clearInterval(this.timer)
    this.timer = null
  }

  /** Divides every limit's budget between its active proxies and sends each stream its shares. */
  rebalance(): void {
    if (this.closed) return
    const now = Date.now()
    const cutoff = now - this.expiryWindows * this.windowMs
    const shares = new Map<
      ShareStream,
      { name: string; requests_per_second: number; burst: number; proxies: number }[]
    >()
    this.last.clear()
    for (const [name, budget] of this.budgets) {
      const active: ShareStream[] = []
      for (const s of this.streams) {
        const u = s.usage.get(name)
        if (u === undefined) continue
        if (u.at < cutoff) {
          s.usage.delete(name)
          continue
        }
        active.push(s)
      }
      if (active.length === 0) continue
      const ids = new Map(active.map((s, i) => [String(i), s]))
      const alloc = allocate(
        budget.rate,
        active.map((s, i) => ({ id: String(i), demand: s.usage.get(name)!.demand })),
        this.floorFraction,
      )
      const byStream = new Map<ShareStream, number>()
      for (const [id, share] of alloc) {
        const s = ids.get(id)!
        byStream.set(s, share)
        let list = shares.get(s)
        if (list === undefined) shares.set(s, (list = []))
        list.push({
          name,
          requests_per_second: share,
          burst: Math.max(1, (budget.burst * share) / budget.rate),
          proxies: active.length,
        })
      }
      this.last.set(name, byStream)
    }
    const validMs = this.expiryWindows * this.windowMs
    for (const s of this.streams) {
      const list = shares.get(s)
      if (list === undefined) continue
      try {
        s.call.write({ shares: list, valid_ms: validMs })
      } catch (err) {
        log('debug', 'ratelimit', 'share write failed', { node: s.nodeId, error: String(err) })
      }
    }
  }

  /** Every limit with its proxies' demand and current share. */
  status(): LimitStatus[] {
    const out: LimitStatus[] = []
    for (const [name, b] of [...this.budgets].sort((x, y) => (x[0] < y[0] ? -1 : 1))) {
      const shares = this.last.get(name)
      const proxies = [...(shares ?? new Map<ShareStream, number>())].map(([s, share]) => ({
        node: s.nodeId,
        demand: Math.round((s.usage.get(name)?.demand ?? 0) * 1000) / 1000,
        share: Math.round(share * 1000) / 1000,
      }))
      proxies.sort((a, b) => (a.node < b.node ? -1 : a.node > b.node ? 1 : 0))
      out.push({ name, requestsPerSecond: b.rate, burst: b.burst, proxies })
    }
    return out
  }

  close(): void {
    this.closed = true
    this.stopTimer()
    for (const s of this.streams) s.call.end()
    this.streams.clear()
  }
}
