/**
 * Envoy's circuit breakers for one cluster (`circuit_breakers.thresholds`, the DEFAULT priority: Loom's routes
 * have no priority, so a HIGH threshold is accepted and unused). The limits are cluster-wide, across all hosts:
 *
 * - `max_connections` (1024): upstream connections open or opening. A request that needs a new connection past it
 *   waits for one (pending) and counts `upstream_cx_overflow`.
 * - `max_pending_requests` (1024): requests waiting for a connection. Past it the request fails at once (503 `UO`)
 *   and counts `upstream_rq_pending_overflow`.
 * - `max_requests` (1024): requests in flight. Past it: 503 `UO`, `upstream_rq_pending_overflow` (as Envoy).
 * - `max_retries` (3): retries in flight, taken with `retryBudget.tryAcquire()` and given back with `release()`;
 *   a refusal counts `upstream_rq_retry_overflow`.
 * - `retry_budget` {budget_percent (20), min_retry_concurrency (3)}: retries in flight as a share of the requests in
 *   flight, in place of `max_retries` (see RetryBudget).
 *
 * A cluster without `circuit_breakers` has no CircuitBreakers object (its pools keep the fixed per-host limit of
 * 1024 connections), so it pays nothing; its retry budget still has Envoy's default of 3. Neither does a cluster
 * whose connection, pending and request limits are all 2^32-1 (what Istio writes for a pool that sets nothing), unless
 * it has a retry budget, which needs the request count.
 */
import type { CircuitBreakerThresholds } from '../../config/envoy.js'

/** The counters circuit breaking bumps; the cluster's stats object in a running proxy. */
export interface BreakerCounters {
  upstream_cx_overflow: number
  upstream_rq_pending_overflow: number
  upstream_rq_retry_overflow: number
}

/** The largest UInt32Value: what Istio writes for "no limit". */
export const NO_LIMIT = 0xffffffff

export const breakerDefaults = {
  maxConnections: 1024,
  maxPendingRequests: 1024,
  maxRequests: 1024,
  maxRetries: 3,
  retryBudgetPercent: 20,
  minRetryConcurrency: 3,
} as const

/**
 * Retries in flight, against `max_retries` or, when the threshold has a `retry_budget`, against
 * max(min_retry_concurrency, budget_percent × the cluster's requests in flight), as Envoy computes it (the product is
 * truncated); `max_retries` is then ignored. The requests in flight are CircuitBreakers.requests, which counts a
 * request from the moment it asks a pool for a connection: Envoy's active plus pending requests. A retry holds its
 * slot from the moment it is scheduled (through its back-off and its attempt) until that attempt's outcome is known
 * or the request ends, as Envoy's retry state does.
 */
export class RetryBudget {
  /** max_retries; unused with a retry budget */
  readonly maxRetries: number
  /** budget_percent / 100, or -1 without a retry_budget */
  readonly share: number
  /** min_retry_concurrency (3) */
  readonly minConcurrency: number
  /** the requests the budget is a share of; null without a retry_budget */
  readonly #breakers: CircuitBreakers | null
  active = 0
  counters: BreakerCounters

  constructor(t: CircuitBreakerThresholds | undefined, counters: BreakerCounters, breakers: CircuitBreakers | null) {
    this.maxRetries = t?.max_retries ?? breakerDefaults.maxRetries
    const budget = t?.retry_budget
    if (budget !== undefined && breakers === null) throw new Error("a retry budget needs the cluster's request count")
    this.share = budget === undefined ? -1 : (budget.budget_percent?.value ?? breakerDefaults.retryBudgetPercent) / 100
    this.minConcurrency = budget?.min_retry_concurrency ?? breakerDefaults.minRetryConcurrency
    this.#breakers = budget === undefined ? null : breakers
    this.counters = counters
  }

  /** How many retries may be in flight now. */
  get max(): number {
    const b = this.#breakers
    if (b === null) return this.maxRetries
    return Math.max(this.minConcurrency, Math.floor(this.share * b.requests))
  }

  /** Takes a retry slot; false (and `upstream_rq_retry_overflow`) when the limit is in flight. */
  tryAcquire(): boolean {
    if (this.active >= this.max) {
      this.counters.upstream_rq_retry_overflow++
      return false
    }
    this.active++
    return true
  }

  /** Gives back a slot tryAcquire() handed out (once per successful tryAcquire). */
  release(): void {
    if (this.active > 0) this.active--
  }

  get remaining(): number {
    return Math.max(0, this.max - this.active)
  }
}

export class CircuitBreakers {
  readonly maxConnections: number
  readonly maxPendingRequests: number
  readonly maxRequests: number
  /** Upstream connections open or opening, over every host of the cluster. */
  connections = 0
  /** Requests waiting for a connection. */
  pending = 0
  /** Requests in flight. */
  requests = 0
  counters: BreakerCounters

  constructor(t: CircuitBreakerThresholds | undefined, counters: BreakerCounters) {
    this.maxConnections = t?.max_connections ?? breakerDefaults.maxConnections
    this.maxPendingRequests = t?.max_pending_requests ?? breakerDefaults.maxPendingRequests
    this.maxRequests = t?.max_requests ?? breakerDefaults.maxRequests
    this.counters = counters
  }

  /** Whether no threshold limits anything (all at 2^32-1, as Istio writes "no limit"). */
  get unlimited(): boolean {
    return this.maxConnections >= NO_LIMIT && this.maxPendingRequests >= NO_LIMIT && this.maxRequests >= NO_LIMIT
  }

  /** Whether another connection may be opened now. */
  canConnect(): boolean {
    return this.connections < this.maxConnections
  }

  /** Whether another request may wait for a connection; false counts `upstream_rq_pending_overflow`. */
  tryPend(): boolean {
    if (this.pending >= this.maxPendingRequests) {
      this.counters.upstream_rq_pending_overflow++
      return false
    }
    this.pending++
    return true
  }

  /** Takes a request slot; false counts `upstream_rq_pending_overflow` (as Envoy counts max_requests overflow). */
  tryRequest(): boolean {
    if (this.requests >= this.maxRequests) {
      this.counters.upstream_rq_pending_overflow++
      return false
    }
    this.requests++
    return true
  }

  /** Gauges as Envoy names them under `circuit_breakers.default.` (open: 1 when the limit is reached). */
  gauges(retries: RetryBudget): [string, number][] {
    return [
      ['cx_open', this.connections >= this.maxConnections ? 1 : 0],
      ['rq_pending_open', this.pending >= this.maxPendingRequests ? 1 : 0],
      ['rq_open', this.requests >= this.maxRequests ? 1 : 0],
      ['rq_retry_open', retries.active >= retries.max ? 1 : 0],
      ['remaining_cx', Math.max(0, this.maxConnections - this.connections)],
      ['remaining_pending', Math.max(0, this.maxPendingRequests - this.pending)],
      ['remaining_rq', Math.max(0, this.maxRequests - this.requests)],
      ['remaining_retries', retries.remaining],
    ]
  }
}

/** The DEFAULT-priority thresholds of a cluster's circuit_breakers (the entry without a priority counts as it). */
export function defaultThresholds(list: readonly CircuitBreakerThresholds[] | undefined) {
  return list?.find((t) => (t.priority ?? 'DEFAULT') === 'DEFAULT')
}
