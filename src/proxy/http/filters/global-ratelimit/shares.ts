/**
 * A proxy's side of the global rate limits: one `LimitState` per limit name (the GlobalRateLimit's
 * `namespace/name`), process-wide, so config updates (a new route table compiles new filter configs) keep the
 * bucket, the counts and the share. The state holds the token bucket the filter consumes from, refilled at this
 * proxy's share of the mesh-wide rate; the counts of requests admitted and denied since the last report; and what
 * to do when the control plane has not renewed the share in time.
 */

/** How the filter treats a limit's requests now. */
export const ENFORCE = 0
export const ALLOW_ALL = 1
export const DENY_ALL = 2
export type LimitMode = typeof ENFORCE | typeof ALLOW_ALL | typeof DENY_ALL

export type UnavailableMode = 'KEEP_LAST_SHARE' | 'ALLOW_ALL' | 'DENY_ALL'

/** A token bucket refilled continuously at `rate` tokens per second, up to `capacity`. */
export class ShareBucket {
  rate: number
  capacity: number
  tokens: number
  private last: number

  constructor(rate: number, capacity: number, now: number) {
    this.rate = rate
    this.capacity = Math.max(1, capacity)
    this.tokens = this.capacity
    this.last = now
  }

  private refill(now: number): void {
    const elapsed = now - this.last
    if (elapsed > 0) {
      const t = this.tokens + (elapsed * this.rate) / 1000
      this.tokens = t > this.capacity ? this.capacity : t
    }
    this.last = now
  }

  /** Takes a token if a whole one is there. */
  consume(now: number): boolean {
    this.refill(now)
    if (this.tokens < 1) return false
    this.tokens -= 1
    return true
  }

  /** A new rate and capacity; the tokens on hand stay (down to the new capacity). */
  set(rate: number, capacity: number, now: number): void {
    this.refill(now)
    this.rate = rate
    this.capacity = Math.max(1, capacity)
    if (this.tokens > this.capacity) this.tokens = this.capacity
  }

  /** Whole seconds until the next token (0 when one is there). */
  resetSeconds(now: number): number {
    this.refill(now)
    if (this.tokens >= 1) return 0
    if (this.rate <= 0) return 1
    return Math.max(1, Math.ceil(((1 - this.tokens) * 1000) / this.rate / 1000))
  }
}

export class LimitState {
  readonly name: string
  /** the mesh-wide rate and burst, from the config */
  totalRate: number
  totalBurst: number
  unavailable: UnavailableMode
  readonly bucket: ShareBucket
  mode: LimitMode = ENFORCE
  admitted = 0
  denied = 0
  /** performance.now() of the last share received (-1: none yet) */
  shareAt = -1
  /** how long the last share holds (from the assignment) */
  validMs = 0
  /** proxies sharing the limit, as of the last assignment (0: unknown) */
  proxies = 0

  constructor(name: string, rate: number, burst: number, unavailable: UnavailableMode, now: number) {
    this.name = name
    this.totalRate = rate
    this.totalBurst = burst
    this.unavailable = unavailable
    // until the control plane answers, the proxy enforces the whole limit on its own
    this.bucket = new ShareBucket(rate, burst, now)
  }

  /** A share from the control plane. */
  assign(rate: number, burst: number, proxies: number, validMs: number, now: number): void {
    this.bucket.set(rate, burst, now)
    this.shareAt = now
    this.validMs = validMs
    this.proxies = proxies
    this.mode = ENFORCE
  }

  /**
   * Called every window: past the share's validity (or, before any share, `validMs` after the limit appeared),
   * the limit's `on_control_plane_unavailable` applies; KEEP_LAST_SHARE keeps enforcing the bucket as it is.
   */
  checkExpiry(now: number, defaultValidMs: number, createdAt: number): void {
    const since = this.shareAt < 0 ? createdAt : this.shareAt
    const valid = this.shareAt < 0 ? defaultValidMs : this.validMs
    if (now - since <= valid) return
    this.mode = this.unavailable === 'ALLOW_ALL' ? ALLOW_ALL : this.unavailable === 'DENY_ALL' ? DENY_ALL : ENFORCE
  }

  /** The counts since the last call, reset. */
  take(): { admitted: number; denied: number } {
    const out = { admitted: this.admitted, denied: this.denied }
    this.admitted = 0
    this.denied = 0
    return out
  }
}

/** Every limit this process has seen, by name. */
export class GlobalLimits {
  private readonly byName = new Map<string, { state: LimitState; createdAt: number }>()
  /** called when a limit first appears (the reporter reports at once, so the share comes without a window's wait) */
  onNewLimit: ((state: LimitState) => void) | null = null

  /** The state for a limit named in config; the config's rate, burst and mode replace the old ones. */
  get(name: string, rate: number, burst: number, unavailable: UnavailableMode): LimitState {
    const e = this.byName.get(name)
    if (e !== undefined) {
      const s = e.state
      if (s.totalRate !== rate || s.totalBurst !== burst) {
        s.totalRate = rate
        s.totalBurst = burst
        // before any share, the bucket is the whole limit: follow the new one
        if (s.shareAt < 0) s.bucket.set(rate, burst, performance.now())
      }
      s.unavailable = unavailable
      return s
    }
    const now = performance.now()
    const state = new LimitState(name, rate, burst, unavailable, now)
    this.byName.set(name, { state, createdAt: now })
    this.onNewLimit?.(state)
    return state
  }

  states(): LimitState[] {
    return [...this.byName.values()].map((e) => e.state)
  }

  createdAt(name: string): number {
    return this.byName.get(name)?.createdAt ?? 0
  }

  find(name: string): LimitState | undefined {
    return this.byName.get(name)?.state
  }
}

/** The process's limits: shared by every connection manager and route table. */
export const globalLimits = new GlobalLimits()
