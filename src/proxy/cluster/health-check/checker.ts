/**
 * Envoy's active health checking for one cluster (`health_checks[0]`): a session per host with its own timers and
 * probe connection, and the host's FAILED_ACTIVE_HC flag (`host.failedActiveHc`), which the cluster's load
 * balancers treat like an EDS-unhealthy host.
 *
 * - A host that joins a health-checked cluster starts failed and pending (FAILED_ACTIVE_HC | PENDING_ACTIVE_HC):
 *   it takes no traffic until a check passes. Its first result decides at once (one pass is enough, as Envoy does
 *   at startup); after that it takes `healthy_threshold` passes in a row to come back and `unhealthy_threshold`
 *   failures in a row to go, except that an answer saying it is unhealthy (an HTTP status outside
 *   `expected_statuses` and `retriable_statuses`, a gRPC status other than SERVING) fails it at once.
 * - `start()` resolves when every host present then has had its first result, as Envoy's cluster initialisation
 *   waits for the first round.
 * - The next check is due after `interval`, `unhealthy_interval`, or the edge intervals while a change is pending
 *   (a result that did not flip the host yet); `no_traffic_interval` (and `no_traffic_healthy_interval` after a
 *   pass) while the cluster has never opened a connection for traffic; plus `interval_jitter` and
 *   `interval_jitter_percent` of random jitter. `timeout` bounds each check (a network failure; the connection is
 *   closed).
 * - A host that leaves the cluster stops being checked; `stop()` clears every timer and closes every connection.
 *   A cluster that replaces another (a CDS update) takes the active health of the hosts it keeps (`inherit`).
 */
import { performance } from 'node:perf_hooks'
import type { ConnectionOptions } from 'node:tls'
import { log } from '../../../core/log.js'
import type { Host } from '../host.js'
import { grpcProbe, httpProbe, type Probe, type ProbeResult, tcpProbe } from './probes.js'
import type { HealthCheckSettings } from './settings.js'

/** `health_check.*` counters, kept with the cluster's stats (so they outlive a cluster update). */
export class HealthCheckStats {
  attempt = 0
  success = 0
  failure = 0
  network_failure = 0
  passive_failure = 0
  verify_cluster = 0
}

/** The cluster a checker works for. */
export interface HealthCheckOwner {
  readonly name: string
  readonly tls: ConnectionOptions | null
  /** Read at each use: the cluster's bound stats object. */
  readonly stats: { readonly upstream_cx_total: number; readonly healthCheck: HealthCheckStats }
  hostHealthChanged(host: Host): void
}

type Transition = 'unchanged' | 'pending' | 'changed'

/** One host's checks: counters, flags and timers. Hung on `host.activeHc`. */
export class HostHealthCheck {
  readonly host: Host
  /** PENDING_ACTIVE_HC: no result yet. */
  pending = true
  /** ACTIVE_HC_TIMEOUT: the last failure was a timeout (cleared when the host turns healthy). */
  timedOut = false
  firstCheck = true
  numHealthy = 0
  numUnhealthy = 0
  readonly #checker: HealthChecker
  readonly #probe: Probe
  #interval: NodeJS.Timeout | null = null
  #timeout: NodeJS.Timeout | null = null
  #stopped = false

  constructor(host: Host, checker: HealthChecker, probe: Probe) {
    this.host = host
    this.#checker = checker
    this.#probe = probe
  }

  start(): void {
    if (this.#stopped || this.#interval !== null || this.#timeout !== null) return
    const jitter = this.#checker.settings.initialJitterMs
    if (jitter > 0) this.#schedule(Math.floor(this.#checker.random() * jitter))
    else this.#check()
  }

  stop(): void {
    this.#stopped = true
    if (this.#interval !== null) clearTimeout(this.#interval)
    if (this.#timeout !== null) clearTimeout(this.#timeout)
    this.#interval = this.#timeout = null
    this.#probe.close()
  }

  get stopped(): boolean {
    return this.#stopped
  }

  #schedule(ms: number): void {
    if (this.#stopped) return
    this.#interval = setTimeout(() => {
      this.#interval = null
      this.#check()
    }, ms)
  }

  #check(): void {
    if (this.#stopped) return
    const checker = this.#checker
    checker.stats.attempt++
    this.#timeout = setTimeout(() => {
      this.#timeout = null
      this.#probe.abort()
      this.timedOut = true
      this.#failure('network', `timed out after ${checker.settings.timeoutMs}ms`)
    }, checker.settings.timeoutMs)
    this.#probe.run((result, detail) => {
      if (this.#stopped || this.#timeout === null) return
      clearTimeout(this.#timeout)
      this.#timeout = null
      if (result === 'success') this.#success()
      else this.#failure(result, detail)
    })
  }

  #success(): void {
    const checker = this.#checker
    const s = checker.settings
    const host = this.host
    this.numUnhealthy = 0
    let t: Transition = 'unchanged'
    if (host.failedActiveHc) {
      if (this.firstCheck || ++this.numHealthy >= s.healthyThreshold) {
        this.timedOut = false
        host.failedActiveHc = false
        // a host back from failing warms up again under slow start (its first pass keeps the build's time)
        if (!this.firstCheck) host.healthyAt = performance.now()
        t = 'changed'
        log('info', 'health_check', 'host healthy', { cluster: checker.cluster, host: host.key })
      } else t = 'pending'
    }
    t = this.#clearPending(t)
    checker.stats.success++
    if (s.logSuccesses) log('info', 'health_check', 'check passed', { cluster: checker.cluster, host: host.key })
    this.firstCheck = false
    if (t === 'changed') checker.changed(host)
    this.#schedule(checker.interval(true, t))
  }

  #failure(result: Exclude<ProbeResult, 'success'>, detail: string): void {
    const checker = this.#checker
    const s = checker.settings
    const host = this.host
    this.numHealthy = 0
    let t: Transition = 'unchanged'
    if (!host.failedActiveHc) {
      if (result === 'active' || ++this.numUnhealthy >= s.unhealthyThreshold) {
        host.failedActiveHc = true
        t = 'changed'
        log('info', 'health_check', 'host unhealthy', { cluster: checker.cluster, host: host.key, reason: detail })
      } else t = 'pending'
    }
    t = this.#clearPending(t)
    const st = checker.stats
    st.failure++
    if (result === 'network') st.network_failure++
    if (this.firstCheck || s.logFailures) {
      log('info', 'health_check', 'check failed', { cluster: checker.cluster, host: host.key, reason: detail })
    }
    this.firstCheck = false
    if (t === 'changed') checker.changed(host)
    this.#schedule(checker.interval(false, t))
  }

  /** The first result clears PENDING_ACTIVE_HC, which counts as a pending change (as in Envoy). */
  #clearPending(t: Transition): Transition {
    if (!this.pending) return t
    this.pending = false
    this.#checker.firstResult(this)
    return t === 'unchanged' ? 'pending' : t
  }
}

export class HealthChecker {
  readonly settings: HealthCheckSettings
  readonly #owner: HealthCheckOwner
  readonly #sessions = new Map<string, HostHealthCheck>()
  #started = false
  #stopped = false
  /** Sessions the initial round still waits for, and who to tell when it is over. */
  #waiting = new Set<HostHealthCheck>()
  #initialDone: (() => void) | null = null
  /** replaced by tests */
  random: () => number = Math.random

  constructor(settings: HealthCheckSettings, owner: HealthCheckOwner) {
    this.settings = settings
    this.#owner = owner
  }

  get cluster(): string {
    return this.#owner.name
  }

  get stats(): HealthCheckStats {
    return this.#owner.stats.healthCheck
  }

  /** A host joined: it is failed and pending until its first check passes; checked at once once started. */
  addHost(host: Host): void {
    if (this.#sessions.has(host.key)) return
    const target = { address: host.address, port: host.port, tls: host.transport.tls }
    const p = this.settings.probe
    const reuse = this.settings.reuseConnection
    const probe =
      p.kind === 'http'
        ? httpProbe(target, p, reuse, () => this.stats.verify_cluster++)
        : p.kind === 'tcp'
          ? tcpProbe(target, p, reuse)
          : grpcProbe(target, p, reuse)
    const session = new HostHealthCheck(host, this, probe)
    host.failedActiveHc = true
    host.activeHc = session
    this.#sessions.set(host.key, session)
    if (this.#started && !this.#stopped) session.start()
  }

  /** A host left: its checks stop and its connection closes. */
  removeHost(host: Host): void {
    const session = this.#sessions.get(host.key)
    if (session === undefined || session.host !== host) return
    this.#sessions.delete(host.key)
    session.stop()
    host.activeHc = null
    this.firstResult(session)
  }

  /** Starts checking every host; resolves when each host present now has had its first result. */
  start(): Promise<void> {
    if (this.#started || this.#stopped) return Promise.resolve()
    this.#started = true
    for (const s of this.#sessions.values()) if (s.pending) this.#waiting.add(s)
    const done = new Promise<void>((resolve) => {
      this.#initialDone = resolve
    })
    for (const s of this.#sessions.values()) s.start()
    this.#checkInitial()
    return done
  }

  /** Clears every timer and closes every connection; the checker does not start again. */
  stop(): void {
    this.#stopped = true
    for (const s of this.#sessions.values()) s.stop()
    this.#waiting.clear()
    this.#checkInitial()
  }

  /**
   * Takes the active health of the hosts `prev` (the checker of the cluster this one replaces) also checks, so a
   * host that stays keeps its state instead of starting failed. Call before start().
   */
  inherit(prev: HealthChecker): void {
    for (const [key, s] of this.#sessions) {
      const old = prev.#sessions.get(key)
      if (old === undefined || old.pending) continue
      s.pending = false
      s.firstCheck = old.firstCheck
      s.numHealthy = old.numHealthy
      s.numUnhealthy = old.numUnhealthy
      s.timedOut = old.timedOut
      if (s.host.failedActiveHc !== old.host.failedActiveHc) {
        s.host.failedActiveHc = old.host.failedActiveHc
        this.#owner.hostHealthChanged(s.host)
      }
    }
  }

  /** Hosts passing active health checks (the `health_check.healthy` gauge). */
  healthyCount(): number {
    let n = 0
    for (const s of this.#sessions.values()) if (!s.host.failedActiveHc) n++
    return n
  }

  /** Hosts being checked. */
  get size(): number {
    return this.#sessions.size
  }

  /** A session's host flipped. */
  changed(host: Host): void {
    this.#owner.hostHealthChanged(host)
  }

  /** A session had its first result (or left). */
  firstResult(session: HostHealthCheck): void {
    if (this.#waiting.delete(session)) this.#checkInitial()
  }

  #checkInitial(): void {
    if (this.#waiting.size > 0 || this.#initialDone === null) return
    const done = this.#initialDone
    this.#initialDone = null
    done()
  }

  /** Milliseconds to the next check after a result (`healthy` = it passed), with jitter. Envoy's choice of interval. */
  interval(healthy: boolean, t: Transition): number {
    const s = this.settings
    let base: number
    if (this.#owner.stats.upstream_cx_total > 0) {
      if (healthy) base = t === 'pending' ? s.healthyEdgeIntervalMs : s.intervalMs
      else base = t === 'pending' ? s.unhealthyEdgeIntervalMs : s.unhealthyIntervalMs
    } else base = healthy ? s.noTrafficHealthyIntervalMs : s.noTrafficIntervalMs
    let ms = base
    const percent = Math.floor((s.intervalJitterPercent * base) / 100)
    if (percent > 0) ms += Math.floor(this.random() * percent)
    if (s.intervalJitterMs > 0) ms += Math.floor(this.random() * s.intervalJitterMs)
    return Math.max(1, ms)
  }
}
