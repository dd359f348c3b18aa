/**
 * Slow start (Envoy's slow_start_config on ROUND_ROBIN and LEAST_REQUEST): a host that has just joined the
 * cluster, or has just passed an active health check after failing, takes a growing share of its weight over the
 * slow start window:
 *
 *     weight × max(min_weight_percent / 100, time_factor^(1 / aggression)),  time_factor = max(elapsed, 1 ms) / window
 *
 * A level whose hosts are all past their window gets the policy's own load balancer, so slow start costs nothing
 * once no host is warming up. While one is, picks go through an EDF schedule whose weights are re-evaluated each
 * time a host is scheduled again (as Envoy's EDF does), plus one clock read per pick.
 */
import type { SlowStartConfig } from '../../../config/envoy.js'
import { parseDurationMs } from '../../../core/duration.js'
import type { Host } from '../host.js'
import { EdfScheduler } from './edf.js'
import type { LbFactory, LoadBalancer } from './types.js'

export interface SlowStart {
  windowMs: number
  aggression: number
  /** min_weight_percent as a fraction (default 0.1) */
  minWeight: number
}

/** Milliseconds on a monotonic clock; `performance.now()` unless a test injects its own. */
export type Clock = () => number

const defaultClock: Clock = () => performance.now()

/** The compiled settings, or null when slow start is off (no config, or a zero window). */
export function slowStartSettings(config: SlowStartConfig | undefined): SlowStart | null {
  if (config === undefined) return null
  const windowMs = config.slow_start_window === undefined ? 0 : (parseDurationMs(config.slow_start_window) ?? 0)
  if (windowMs <= 0) return null
  const a = config.aggression?.default_value
  const minPercent = config.min_weight_percent?.value
  return {
    windowMs,
    aggression: a !== undefined && a > 0 && Number.isFinite(a) ? a : 1,
    minWeight: (minPercent ?? 10) / 100,
  }
}

/** The share of its weight a host gets `elapsedMs` after it started warming up: in (0, 1], 1 past the window. */
export function slowStartFactor(elapsedMs: number, s: SlowStart): number {
  if (!(elapsedMs < s.windowMs)) return 1
  const timeFactor = Math.max(elapsedMs, 1) / s.windowMs
  const f = s.aggression === 1 ? timeFactor : timeFactor ** (1 / s.aggression)
  return Math.max(f, s.minWeight)
}

/**
 * Wraps a policy's factory with slow start. `leastRequest` makes the warming-up weights Envoy's least-request
 * weights (weight / (active requests + 1)) before the factor. A host that has no `healthyAt` yet gets the time of
 * the build it first appears in (it has just joined, or just become healthy); degraded hosts are not slowed.
 */
export function withSlowStart(inner: LbFactory, s: SlowStart, leastRequest: boolean, clock = defaultClock): LbFactory {
  return (hosts) => {
    const now = clock()
    let end = Number.NEGATIVE_INFINITY
    for (const h of hosts) {
      if (h.healthStatus === 'DEGRADED') continue
      if (Number.isNaN(h.healthyAt)) h.healthyAt = now
      end = Math.max(end, h.healthyAt + s.windowMs)
    }
    if (end <= now) return inner(hosts)
    return new SlowStartLb(hosts, inner, s, leastRequest, end, clock, now)
  }
}

class SlowStartLb implements LoadBalancer {
  readonly #hosts: readonly Host[]
  readonly #inner: LbFactory
  readonly #s: SlowStart
  readonly #leastRequest: boolean
  /** when the last host's window ends */
  readonly #end: number
  readonly #clock: Clock
  readonly #edf: EdfScheduler
  #after: LoadBalancer | null = null

  constructor(
    hosts: readonly Host[],
    inner: LbFactory,
    s: SlowStart,
    leastRequest: boolean,
    end: number,
    clock: Clock,
    now: number,
  ) {
    this.#hosts = hosts
    this.#inner = inner
    this.#s = s
    this.#leastRequest = leastRequest
    this.#end = end
    this.#clock = clock
    this.#edf = new EdfScheduler(
      hosts.map((h) => this.#weight(h, now)),
      true,
    )
  }

  /** The host's effective weight now. */
  #weight(h: Host, now: number): number {
    const base = this.#leastRequest ? h.weight / (h.activeRequests + 1) : h.weight
    if (h.healthStatus === 'DEGRADED') return base
    return base * slowStartFactor(now - h.healthyAt, this.#s)
  }

  pick(hash: number | undefined): Host {
    const now = this.#clock()
    if (now >= this.#end) {
      this.#after ??= this.#inner(this.#hosts)
      return this.#after.pick(hash)
    }
    const host = this.#hosts[this.#edf.peek()]!
    this.#edf.advance(this.#weight(host, now))
    return host
  }
}
