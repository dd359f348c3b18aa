/**
 * On-demand virtual hosts (Envoy's on-demand VHDS), for route configurations that name `vhds`: the proxy holds only
 * the virtual hosts it has asked for. A request whose Host matches none of them asks the control plane for
 * `<route configuration>/<host>` (a delta VirtualHost subscription to that alias) and waits, bounded, until the
 * server answers: with the virtual host (the request is routed again) or as removed (not found: 404 NR as for any
 * request without a route). Concurrent requests for the same host share one wait; requests for hosts the proxy
 * holds never come here.
 *
 * An alias is unsubscribed `idleMs` after the last request that asked for it (the proxy drops its virtual host; a
 * later request asks again, paying one wait); requests routed by a virtual host the proxy holds do not count as
 * asking, so that they pay nothing. The control plane's scope for the proxy follows what it subscribes to. On
 * reconnect the ADS client subscribes again to everything, so the scope survives.
 */
import { log } from '../../core/log.js'

export interface OnDemandOptions {
  /** replaces the VirtualHost subscription: the aliases to hold */
  subscribe(aliases: readonly string[]): void
  /** longest wait for an answer, ms (default 5000) */
  timeoutMs?: number
  /** an alias unused for this long is unsubscribed, ms (default 30 min; 0: never) */
  idleMs?: number
}

interface Waiting {
  promise: Promise<void>
  resolve: () => void
  timer: NodeJS.Timeout
}

export class OnDemandHosts {
  private readonly opts: OnDemandOptions
  readonly timeoutMs: number
  readonly idleMs: number
  /** alias → when a request last used it (performance.now() ms) */
  private readonly subscribed = new Map<string, number>()
  private readonly waiting = new Map<string, Waiting>()
  private sweeper?: NodeJS.Timeout
  /** counters: requests that waited, waits answered, waits that timed out */
  readonly stats = { requested: 0, answered: 0, timed_out: 0 }

  constructor(opts: OnDemandOptions) {
    this.opts = opts
    this.timeoutMs = opts.timeoutMs ?? 5000
    this.idleMs = opts.idleMs ?? 30 * 60_000
  }

  /** The alias a request's authority asks for in a route configuration. */
  static alias(routeConfig: string, authority: string): string {
    return `${routeConfig}/${authority.toLowerCase()}`
  }

  /**
   * Asks for the virtual host of `authority` in `routeConfig` and resolves when the control plane has answered (or
   * after `timeoutMs`). The caller routes again afterwards: a virtual host that came matches then.
   */
  request(routeConfig: string, authority: string): Promise<void> {
    const alias = OnDemandHosts.alias(routeConfig, authority)
    this.stats.requested++
    const w = this.waiting.get(alias)
    if (w !== undefined) return w.promise
    let resolve!: () => void
    const promise = new Promise<void>((r) => {
      resolve = r
    })
    const timer = setTimeout(() => {
      if (this.waiting.get(alias)?.promise !== promise) return
      this.waiting.delete(alias)
      this.stats.timed_out++
      log('warn', 'vhds', 'no answer for an on-demand virtual host in time', { alias, timeoutMs: this.timeoutMs })
      resolve()
    }, this.timeoutMs)
    timer.unref()
    this.waiting.set(alias, { promise, resolve, timer })
    const fresh = !this.subscribed.has(alias)
    this.subscribed.set(alias, performance.now())
    if (fresh) this.opts.subscribe([...this.subscribed.keys()])
    this.armSweeper()
    return promise
  }

  /** The control plane answered these aliases (with a virtual host, or as not found): their waits end. */
  answered(aliases: Iterable<string>): void {
    for (const a of aliases) {
      const w = this.waiting.get(a)
      if (w === undefined) continue
      this.waiting.delete(a)
      clearTimeout(w.timer)
      this.stats.answered++
      w.resolve()
    }
  }

  /** The aliases held now. */
  aliases(): string[] {
    return [...this.subscribed.keys()].sort()
  }

  /** Unsubscribes the aliases idle for longer than `idleMs`; returns them. */
  sweep(now = performance.now()): string[] {
    const gone: string[] = []
    for (const [a, at] of this.subscribed) {
      if (this.waiting.has(a) || now - at < this.idleMs) continue
      this.subscribed.delete(a)
      gone.push(a)
    }
    if (gone.length > 0) this.opts.subscribe([...this.subscribed.keys()])
    return gone
  }

  close(): void {
    clearInterval(this.sweeper)
    for (const w of this.waiting.values()) {
      clearTimeout(w.timer)
      w.resolve()
    }
    this.waiting.clear()
  }

  private armSweeper(): void {
    if (this.sweeper !== undefined || this.idleMs <= 0) return
    this.sweeper = setInterval(() => this.sweep(), Math.max(1000, Math.min(this.idleMs / 4, 60_000)))
    this.sweeper.unref()
  }
}
