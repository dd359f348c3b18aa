/**
 * Envoy's outlier detection (`outlier_detection`) for one cluster: passive health from the results the data path
 * reports (response statuses, resets, connect failures), ejecting hosts from load balancing for a while.
 *
 * - Consecutive errors: `consecutive_5xx` (any 5xx), `consecutive_gateway_failure` (502, 503, 504) and, with
 *   `split_external_local_origin_errors`, `consecutive_local_origin_failure` (connect failures, timeouts and resets
 *   counted apart from the upstream's own answers). Without the split a local-origin failure counts as the status
 *   Envoy gives it: connect failure 503, reset or route timeout 504.
 * - Every `interval` (10 s): `success_rate` (hosts below mean - stdev * `success_rate_stdev_factor`/1000) and
 *   `failure_percentage` (hosts at or above `failure_percentage_threshold`), among hosts with enough requests
 *   (`*_request_volume`) when enough hosts have them (`*_minimum_hosts`); and hosts whose ejection time has passed
 *   come back.
 * - An ejection lasts `base_ejection_time` (30 s) times the host's ejection count, at most
 *   `max(max_ejection_time, base_ejection_time)` (300 s); the count goes down by one for every interval the host
 *   spends in the cluster without being ejected.
 * - `max_ejection_percent` (10 %): an ejection that would put more than that share of the hosts out is not made
 *   (`ejections_overflow`), except that one host can always be ejected (as Envoy since 1.26).
 * - `enforcing_*`: the percentage of detections that eject (a detection that does not counts only
 *   `ejections_detected_*`).
 *
 * An ejected host is treated as unhealthy by the cluster's load balancers (rebuilt on each change), so priority
 * levels spill over as they do for EDS health. A cluster without `outlier_detection` has no detector, and the data
 * path reports nothing for it.
 */
import type { OutlierDetection } from '../../config/envoy.js'
import { parseDurationMs } from '../../core/duration.js'
import { log } from '../../core/log.js'
import type { Host } from './host.js'

export type EjectionType =
  | 'consecutive_5xx'
  | 'consecutive_gateway_failure'
  | 'consecutive_local_origin_failure'
  | 'success_rate'
  | 'local_origin_success_rate'
  | 'failure_percentage'
  | 'failure_percentage_local_origin'

export const EJECTION_TYPES: readonly EjectionType[] = [
  'consecutive_5xx',
  'consecutive_gateway_failure',
  'consecutive_local_origin_failure',
  'success_rate',
  'local_origin_success_rate',
  'failure_percentage',
  'failure_percentage_local_origin',
]

/** `outlier_detection.*` counters, kept with the cluster's stats (so they outlive a cluster update). */
export class OutlierStats {
  ejections_enforced_total = 0
  ejections_overflow = 0
  readonly enforced = new Map<EjectionType, number>()
  readonly detected = new Map<EjectionType, number>()
}

/** What the data path reports that did not come from the upstream's answer. */
export type LocalOriginResult = 'connect_failure' | 'timeout' | 'reset'

export interface OutlierSettings {
  consecutive5xx: number
  consecutiveGatewayFailure: number
  consecutiveLocalOriginFailure: number
  split: boolean
  intervalMs: number
  baseEjectionMs: number
  maxEjectionMs: number
  maxEjectionPercent: number
  enforcing: Record<EjectionType, number>
  successRateMinimumHosts: number
  successRateRequestVolume: number
  successRateStdevFactor: number
  failurePercentageThreshold: number
  failurePercentageMinimumHosts: number
  failurePercentageRequestVolume: number
}

const ms = (text: string | undefined, fallback: number) =>
  text === undefined ? fallback : (parseDurationMs(text) ?? fallback)

/** Envoy's defaults for what the config leaves out. */
export function outlierSettings(c: OutlierDetection): OutlierSettings {
  const baseEjectionMs = ms(c.base_ejection_time, 30_000)
  return {
    consecutive5xx: c.consecutive_5xx ?? 5,
    consecutiveGatewayFailure: c.consecutive_gateway_failure ?? 5,
    consecutiveLocalOriginFailure: c.consecutive_local_origin_failure ?? 5,
    split: c.split_external_local_origin_errors ?? false,
    intervalMs: ms(c.interval, 10_000),
    baseEjectionMs,
    maxEjectionMs: Math.max(ms(c.max_ejection_time, 300_000), baseEjectionMs),
    maxEjectionPercent: c.max_ejection_percent ?? 10,
    enforcing: {
      consecutive_5xx: c.enforcing_consecutive_5xx ?? 100,
      consecutive_gateway_failure: c.enforcing_consecutive_gateway_failure ?? 0,
      consecutive_local_origin_failure: c.enforcing_consecutive_local_origin_failure ?? 100,
      success_rate: c.enforcing_success_rate ?? 100,
      local_origin_success_rate: c.enforcing_local_origin_success_rate ?? 100,
      failure_percentage: c.enforcing_failure_percentage ?? 0,
      failure_percentage_local_origin: c.enforcing_failure_percentage_local_origin ?? 0,
    },
    successRateMinimumHosts: c.success_rate_minimum_hosts ?? 5,
    successRateRequestVolume: c.success_rate_request_volume ?? 100,
    successRateStdevFactor: c.success_rate_stdev_factor ?? 1900,
    failurePercentageThreshold: c.failure_percentage_threshold ?? 85,
    failurePercentageMinimumHosts: c.failure_percentage_minimum_hosts ?? 5,
    failurePercentageRequestVolume: c.failure_percentage_request_volume ?? 50,
  }
}

/** One host's outlier state, hung on `host.outlier`. */
export class HostOutlier {
  consecutive5xx = 0
  consecutiveGateway = 0
  consecutiveLocal = 0
  /** this interval's external-origin results (every response when not split) */
  extTotal = 0
  extSuccess = 0
  /** this interval's local-origin results (split mode only) */
  localTotal = 0
  localSuccess = 0
  /** ejections in a row (the ejection time multiplier) */
  ejections = 0
  ejectedAt = 0
  lastEjectionType: EjectionType | null = null
}

/** Hosts the detector watches, and how it tells the cluster that their health changed. */
export interface OutlierOwner {
  hosts(): readonly Host[]
  hostHealthChanged(host: Host): void
}

export class OutlierDetector {
  readonly settings: OutlierSettings
  stats: OutlierStats
  readonly #owner: OutlierOwner
  readonly #cluster: string
  #timer: NodeJS.Timeout | null = null
  ejectionsActive = 0
  /** replaced by tests */
  now: () => number = () => performance.now()
  random: () => number = Math.random

  constructor(config: OutlierDetection, owner: OutlierOwner, cluster: string, stats = new OutlierStats()) {
    this.settings = outlierSettings(config)
    this.#owner = owner
    this.#cluster = cluster
    this.stats = stats
  }

  /** Starts the interval timer (unref'd). */
  start(): void {
    if (this.#timer !== null) return
    this.#timer = setInterval(() => this.runInterval(), this.settings.intervalMs)
    this.#timer.unref()
  }

  stop(): void {
    if (this.#timer !== null) clearInterval(this.#timer)
    this.#timer = null
  }

  /** A host joined the cluster. */
  addHost(host: Host): void {
    if (host.outlier === null) host.outlier = new HostOutlier()
  }

  /** A host left the cluster: it no longer counts as ejected. */
  removeHost(host: Host): void {
    if (host.ejected) {
      host.ejected = false
      this.ejectionsActive--
    }
  }

  /** The upstream answered with `status` (response headers). */
  putHttpStatus(host: Host, status: number): void {
    const o = host.outlier
    if (o === null) return
    const s = this.settings
    if (s.split) {
      // the connection worked: a local-origin success
      o.consecutiveLocal = 0
      o.localTotal++
      o.localSuccess++
    }
    o.extTotal++
    if (status < 500) {
      o.extSuccess++
      o.consecutive5xx = 0
      o.consecutiveGateway = 0
      return
    }
    if (status === 502 || status === 503 || status === 504) {
      if (++o.consecutiveGateway === s.consecutiveGatewayFailure) {
        this.#detected(host, 'consecutive_gateway_failure')
        if (host.outlier === null || host.ejected) return
      }
    } else o.consecutiveGateway = 0
    if (++o.consecutive5xx === s.consecutive5xx) this.#detected(host, 'consecutive_5xx')
  }

  /** A failure that did not come from the upstream's answer. */
  putLocalOriginFailure(host: Host, result: LocalOriginResult): void {
    const o = host.outlier
    if (o === null) return
    if (!this.settings.split) {
      this.putHttpStatus(host, result === 'connect_failure' ? 503 : 504)
      return
    }
    o.localTotal++
    if (++o.consecutiveLocal === this.settings.consecutiveLocalOriginFailure) {
      this.#detected(host, 'consecutive_local_origin_failure')
    }
  }

  #detected(host: Host, type: EjectionType): void {
    const st = this.stats
    st.detected.set(type, (st.detected.get(type) ?? 0) + 1)
    const o = host.outlier!
    if (type === 'consecutive_5xx') o.consecutive5xx = 0
    else if (type === 'consecutive_gateway_failure') o.consecutiveGateway = 0
    else if (type === 'consecutive_local_origin_failure') o.consecutiveLocal = 0
    if (host.ejected) return
    const enforcing = this.settings.enforcing[type]
    if (enforcing <= 0 || (enforcing < 100 && this.random() * 100 >= enforcing)) return
    const total = this.#owner.hosts().length
    if (this.ejectionsActive > 0 && (100 * (this.ejectionsActive + 1)) / total > this.settings.maxEjectionPercent) {
      st.ejections_overflow++
      return
    }
    this.#eject(host, type)
  }

  #eject(host: Host, type: EjectionType): void {
    const o = host.outlier!
    const st = this.stats
    st.enforced.set(type, (st.enforced.get(type) ?? 0) + 1)
    st.ejections_enforced_total++
    o.ejections++
    o.ejectedAt = this.now()
    o.lastEjectionType = type
    host.ejected = true
    this.ejectionsActive++
    log('info', 'outlier', 'host ejected', { cluster: this.#cluster, host: host.key, type, ejections: o.ejections })
    this.#owner.hostHealthChanged(host)
  }

  #uneject(host: Host): void {
    host.ejected = false
    this.ejectionsActive--
    const o = host.outlier!
    o.consecutive5xx = 0
    o.consecutiveGateway = 0
    o.consecutiveLocal = 0
    log('info', 'outlier', 'host returned', { cluster: this.#cluster, host: host.key })
    this.#owner.hostHealthChanged(host)
  }

  /** How long the host's current ejection lasts. */
  ejectionTimeMs(host: Host): number {
    const s = this.settings
    return Math.min(s.baseEjectionMs * Math.max(1, host.outlier?.ejections ?? 1), s.maxEjectionMs)
  }

  /** One interval: un-eject hosts whose time is up, then the success-rate and failure-percentage checks. */
  runInterval(): void {
    const now = this.now()
    const hosts = this.#owner.hosts()
    for (const h of hosts) {
      const o = h.outlier
      if (o === null) continue
      if (h.ejected) {
        if (now - o.ejectedAt >= this.ejectionTimeMs(h)) this.#uneject(h)
      } else if (o.ejections > 0 && now - o.ejectedAt >= this.ejectionTimeMs(h) + this.settings.intervalMs) {
        o.ejections--
      }
    }
    this.#rateChecks(hosts, false)
    if (this.settings.split) this.#rateChecks(hosts, true)
    for (const h of hosts) {
      const o = h.outlier
      if (o === null) continue
      o.extTotal = o.extSuccess = o.localTotal = o.localSuccess = 0
    }
  }

  #rateChecks(hosts: readonly Host[], local: boolean): void {
    const s = this.settings
    const srType: EjectionType = local ? 'local_origin_success_rate' : 'success_rate'
    const fpType: EjectionType = local ? 'failure_percentage_local_origin' : 'failure_percentage'
    const total = (o: HostOutlier) => (local ? o.localTotal : o.extTotal)
    const rate = (o: HostOutlier) => (100 * (local ? o.localSuccess : o.extSuccess)) / total(o)
    if (s.enforcing[srType] > 0) {
      const rated = hosts.filter(
        (h) => !h.ejected && h.outlier !== null && total(h.outlier) >= s.successRateRequestVolume,
      )
      if (rated.length > 0 && rated.length >= s.successRateMinimumHosts) {
        const rates = rated.map((h) => rate(h.outlier!))
        const mean = rates.reduce((a, b) => a + b, 0) / rates.length
        const stdev = Math.sqrt(rates.reduce((a, r) => a + (r - mean) ** 2, 0) / rates.length)
        const threshold = mean - stdev * (s.successRateStdevFactor / 1000)
        rated.forEach((h, i) => {
          if (rates[i]! < threshold) this.#detected(h, srType)
        })
      }
    }
    if (s.enforcing[fpType] > 0) {
      const rated = hosts.filter(
        (h) => !h.ejected && h.outlier !== null && total(h.outlier) >= s.failurePercentageRequestVolume,
      )
      if (rated.length > 0 && rated.length >= s.failurePercentageMinimumHosts) {
        for (const h of rated) {
          if (100 - rate(h.outlier!) >= s.failurePercentageThreshold) this.#detected(h, fpType)
        }
      }
    }
  }
}
