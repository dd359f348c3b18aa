/**
 * Latency-aware load balancing: peak-EWMA with power of two choices, as Finagle and Linkerd do it. Each host keeps
 * an estimate of its response latency (time from sending the request to the response headers):
 *
 * - a sample above the current estimate replaces it (the peak), so a slow host is noticed at once;
 * - a sample below it pulls the estimate toward the sample by 1 − e^(−Δ/τ), Δ the time since the previous update;
 * - between samples the estimate decays toward zero with the time constant τ (`decay_time`), so a host that was
 *   slow and then left alone is tried again later instead of never;
 * - a failure before the response headers (connect failure, reset, timeout) may raise the estimate, never lower
 *   it, so a host that fails fast does not look fast (a host with no sample yet counts it as at least default_rtt).
 *
 * A pick draws two distinct hosts at random and takes the cheaper, where
 * cost = estimate × (requests in flight + 1) / weight. A host with no sample yet costs nothing while it has nothing
 * in flight (it is tried first, as Finagle does), and more than any sampled host once it has: one probe at a time
 * until it has answered once.
 *
 * The estimate lives on the host (`host.latency`), so it survives load balancer rebuilds; the data path feeds it
 * (`src/proxy/http/latency-sample.ts`) only for clusters with this policy.
 */
import type { PeakEwmaConfig } from '../../../config/envoy.js'
import { parseDurationMs } from '../../../core/duration.js'
import type { Host } from '../host.js'
import type { LbFactory, LoadBalancer } from './types.js'

export interface PeakEwmaSettings {
  /** τ, ms (default 10 s, as Linkerd) */
  decayMs: number
  /** the estimate of a host with no sample yet, ms (default 30 ms, as Linkerd) */
  defaultRttMs: number
}

export const peakEwmaDefaults: PeakEwmaSettings = Object.freeze({ decayMs: 10_000, defaultRttMs: 30 })

/** Above any real latency estimate: the cost of a host with no sample that already has a request in flight. */
const UNPROBED_PENALTY = 1e12

export function peakEwmaSettings(config: PeakEwmaConfig): PeakEwmaSettings {
  const ms = (d: string | undefined, fallback: number) =>
    d === undefined ? fallback : (parseDurationMs(d) ?? fallback)
  return {
    decayMs: ms(config.decay_time, peakEwmaDefaults.decayMs),
    defaultRttMs: ms(config.default_rtt, peakEwmaDefaults.defaultRttMs),
  }
}

/** One host's latency estimate. Times are ms on one monotonic clock (`performance.now()` on the data path). */
export class HostLatency {
  readonly #decayMs: number
  readonly #defaultRttMs: number
  #value = 0
  #stamp = 0
  #sampled = false

  constructor(s: PeakEwmaSettings) {
    this.#decayMs = s.decayMs
    this.#defaultRttMs = s.defaultRttMs
  }

  /** Whether a response has been seen. */
  get sampled(): boolean {
    return this.#sampled
  }

  /** The estimate at `now`, decayed since the last update; NaN before the first sample. */
  estimate(now: number): number {
    if (!this.#sampled) return Number.NaN
    const dt = now - this.#stamp
    return dt > 0 ? this.#value * Math.exp(-dt / this.#decayMs) : this.#value
  }

  /** A response's latency (request sent → response headers), observed at `now`. */
  observe(rttMs: number, now: number): void {
    const rtt = rttMs > 0 ? rttMs : 0
    if (!this.#sampled) {
      this.#sampled = true
      this.#value = rtt
      this.#stamp = now
      return
    }
    const dt = now - this.#stamp
    const w = dt > 0 ? Math.exp(-dt / this.#decayMs) : 1
    const current = this.#value * w
    this.#value = rtt >= current ? rtt : current * w + rtt * (1 - w)
    this.#stamp = now
  }

  /**
   * A request that ended without response headers after `elapsedMs`: raises the estimate, never lowers it (a host
   * with no sample yet counts it as at least default_rtt).
   */
  observeFailure(elapsedMs: number, now: number): void {
    const floor = this.#sampled ? this.estimate(now) : this.#defaultRttMs
    if (this.#sampled && !(elapsedMs > floor)) return
    this.#sampled = true
    this.#value = elapsedMs > floor ? elapsedMs : floor
    this.#stamp = now
  }
}

/** The cost of sending one more request to `host` at `now`. */
export function peakEwmaCost(host: Host, now: number): number {
  const pending = host.activeRequests
  const lat = host.latency
  // a host with no sample yet is tried first while idle (cost 0), as Finagle does: with default_rtt instead, hosts
  // faster than default_rtt would keep a new host from ever being sampled at low concurrency
  if (lat === null || !lat.sampled) return pending > 0 ? UNPROBED_PENALTY + pending : 0
  return (lat.estimate(now) * (pending + 1)) / host.weight
}

export type Random = () => number

const defaultClock = () => performance.now()

/**
 * The factory. Hosts get their `latency` estimate the first time they are in a build (they keep it across
 * rebuilds, and a host that leaves the cluster takes it along).
 */
export function peakEwma(s: PeakEwmaSettings, random: Random = Math.random, clock = defaultClock): LbFactory {
  return (hosts) => {
    for (const h of hosts) h.latency ??= new HostLatency(s)
    return new PeakEwmaLb(hosts, random, clock)
  }
}

export class PeakEwmaLb implements LoadBalancer {
  readonly #hosts: readonly Host[]
  readonly #random: Random
  readonly #clock: () => number

  constructor(hosts: readonly Host[], random: Random, clock: () => number) {
    this.#hosts = hosts
    this.#random = random
    this.#clock = clock
  }

  pick(): Host {
    const hosts = this.#hosts
    const n = hosts.length
    if (n === 1) return hosts[0]!
    const i = Math.floor(this.#random() * n)
    // a second host, distinct from the first
    let j = Math.floor(this.#random() * (n - 1))
    if (j >= i) j++
    const a = hosts[i]!
    const b = hosts[j]!
    const now = this.#clock()
    return peakEwmaCost(b, now) < peakEwmaCost(a, now) ? b : a
  }
}
