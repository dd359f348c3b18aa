/**
 * Per-host connection pools, created on first use and kept in the host's `pool` slot. The cluster's protocol
 * options decide the pool kind: HTTP/2 (one multiplexed connection) or HTTP/1.1 (a keep-alive pool).
 *
 * A cluster with circuit breakers or outlier detection gets each request wrapped in a GuardedRequest, which holds
 * a `max_requests` slot for the request's life and reports the upstream's answer (or failure) to the outlier
 * detector. A cluster whose load balancer is latency-aware (PEAK_EWMA) gets a LatencySample between the codec and
 * the stream (or the GuardedRequest). Any other cluster hands the codec's request to the stream as it is.
 */
import type { Buffer } from 'node:buffer'
import type { Host, UpstreamCluster } from '../cluster/index.js'
import type { CircuitBreakers } from '../cluster/circuit-breakers.js'
import type { OutlierDetector } from '../cluster/outlier.js'
import type { StatsStore } from '../stats/stats.js'
import { H1Pool } from './h1/client.js'
import { H2Pool } from './h2/client.js'
import { LatencySample } from './latency-sample.js'
import { OverflowRequest } from './overflow.js'
import { UpstreamPassThrough } from './pass-through.js'
import type { Headers } from './headers.js'
import type { RequestHead, UpstreamCallbacks, UpstreamRequest, UpstreamResetReason } from './types.js'

export class PoolManager {
  private readonly store: StatsStore
  constructor(store: StatsStore) {
    this.store = store
  }

  newStream(
    cluster: UpstreamCluster,
    host: Host,
    cb: UpstreamCallbacks,
    head: RequestHead,
    endStream: boolean,
  ): UpstreamRequest {
    let pool = host.pool as H1Pool | H2Pool | null
    if (pool === null) {
      const stats = this.store.forCluster(cluster.name)
      pool = cluster.http2 ? new H2Pool(host, cluster, stats) : new H1Pool(host, cluster, stats)
      host.pool = pool
    }
    if (cluster.plainRequests) return pool.newStream(cb, head, endStream)
    const breakers = cluster.circuitBreakers
    const outlier = cluster.outlierDetector
    if (breakers !== null && !breakers.tryRequest())
      return new OverflowRequest(host.key, cb, 'too many requests to the cluster (max_requests)')
    const guarded = breakers === null && outlier === null ? null : new GuardedRequest(host, cb, breakers, outlier)
    if (!cluster.samplesLatency) {
      guarded!.inner = pool.newStream(guarded!, head, endStream)
      return guarded!
    }
    const sample = new LatencySample(host, guarded ?? cb)
    if (guarded !== null) guarded.inner = sample
    sample.inner = pool.newStream(sample, head, endStream)
    return guarded ?? sample
  }
}

/** Sits between the stream and the codec's request: releases the request slot once, reports results once. */
class GuardedRequest extends UpstreamPassThrough {
  readonly #host: Host
  readonly #breakers: CircuitBreakers | null
  readonly #outlier: OutlierDetector | null
  #open = true
  #answered = false

  constructor(host: Host, cb: UpstreamCallbacks, breakers: CircuitBreakers | null, outlier: OutlierDetector | null) {
    super(host.key, cb)
    this.#host = host
    this.#breakers = breakers
    this.#outlier = outlier
  }

  #release(): void {
    if (!this.#open) return
    this.#open = false
    if (this.#breakers !== null) this.#breakers.requests--
  }

  override onUpstreamHeaders(status: number, headers: Headers, endStream: boolean): void {
    if (!this.#answered) {
      this.#answered = true
      this.#outlier?.putHttpStatus(this.#host, status)
    }
    if (endStream) this.#release()
    super.onUpstreamHeaders(status, headers, endStream)
  }
  override onUpstreamData(chunk: Buffer, endStream: boolean): void {
    if (endStream) this.#release()
    super.onUpstreamData(chunk, endStream)
  }
  override onUpstreamTrailers(trailers: Headers): void {
    this.#release()
    super.onUpstreamTrailers(trailers)
  }
  override onUpstreamReset(reason: UpstreamResetReason, detail: string): void {
    this.#release()
    if (!this.#answered && reason !== 'overflow' && this.#outlier !== null) {
      this.#answered = true
      this.#outlier.putLocalOriginFailure(
        this.#host,
        reason === 'connect_failure' || reason === 'connect_timeout' ? 'connect_failure' : 'reset',
      )
    }
    super.onUpstreamReset(reason, detail)
  }
  /** The stream gives up on the request (client gone, route timeout): the slot is freed. */
  override reset(): void {
    this.#release()
    super.reset()
  }
  /** The route timeout expired before the upstream answered: a local-origin timeout for outlier detection. */
  timedOut(): void {
    if (!this.#answered && this.#outlier !== null) {
      this.#answered = true
      this.#outlier.putLocalOriginFailure(this.#host, 'timeout')
    }
    this.reset()
  }
}
