/**
 * The proxy's own requests to one of its clusters (Envoy's AsyncClient): a filter that must ask another service
 * before a request goes on (external authorization) sends a whole request through the cluster manager, so the
 * cluster's load balancing, connection pools, TLS, circuit breakers and stats apply, and gets the whole response
 * back (status, headers, body, trailers) or a failure, once.
 *
 * The response body is kept up to ASYNC_RESPONSE_LIMIT_BYTES; past it the request is reset and reported as a
 * failure. `timeoutMs` bounds the whole exchange (0: none).
 */
import { performance } from 'node:perf_hooks'
import { Buffer } from 'node:buffer'
import type { ClusterManager, Host } from '../cluster/index.js'
import type { ClusterStats, StatsStore } from '../stats/stats.js'
import type { Headers } from './headers.js'
import type { PoolManager } from './pools.js'
import type { RequestHead, UpstreamCallbacks, UpstreamRequest, UpstreamResetReason } from './types.js'

export const ASYNC_RESPONSE_LIMIT_BYTES = 1024 * 1024

/** What the proxy can reach: its clusters, their pools and stats (shared by every connection manager). */
export interface UpstreamAccess {
  readonly clusters: ClusterManager
  readonly pools: PoolManager
  readonly store: StatsStore
}

/** Why a request failed: the cluster is unknown or has no healthy host, the exchange timed out, or the upstream reset. */
export type AsyncFailure = 'no_cluster' | 'no_healthy_upstream' | 'timeout' | 'too_large' | UpstreamResetReason

/** Receives the outcome of one AsyncRequest: exactly one call, maybe before `send` returns. */
export interface AsyncResponseHandler {
  onAsyncResponse(status: number, headers: Headers, body: Buffer, trailers: Headers | null): void
  onAsyncFailure(reason: AsyncFailure, detail: string): void
}

function onAsyncTimeout(r: AsyncRequest): void {
  r.timer = null
  if (r.stats !== null) r.stats.rq.rq_timeout++
  r.fail('timeout', 'request timed out')
}

export class AsyncRequest implements UpstreamCallbacks {
  private readonly handler: AsyncResponseHandler
  private host: Host | null = null
  stats: ClusterStats | null = null
  private up: UpstreamRequest | null = null
  timer: NodeJS.Timeout | null = null
  private done = false
  private status = 0
  private headers: Headers | null = null
  private readonly chunks: Buffer[] = []
  private bytes = 0
  private readonly start = performance.now()

  private constructor(handler: AsyncResponseHandler) {
    this.handler = handler
  }

  /**
   * Sends `head` (and `body`, when not null) to a host of `clusterName`. The handler hears the outcome once; it may
   * hear it before this returns (an unknown cluster, no healthy host, a pool that refuses at once).
   */
  static send(
    access: UpstreamAccess,
    clusterName: string,
    head: RequestHead,
    body: Buffer | null,
    timeoutMs: number,
    handler: AsyncResponseHandler,
  ): AsyncRequest {
    const r = new AsyncRequest(handler)
    const cluster = access.clusters.get(clusterName)
    if (cluster === undefined) {
      r.fail('no_cluster', `unknown cluster ${clusterName}`)
      return r
    }
    const stats = access.store.forCluster(cluster.name)
    const host = cluster.chooseHost(undefined)
    if (host === null) {
      stats.upstream_cx_none_healthy++
      r.fail('no_healthy_upstream', `no healthy host in cluster ${clusterName}`)
      return r
    }
    r.host = host
    r.stats = stats
    stats.rq.rq_total++
    stats.rq.rq_active++
    host.activeRequests++
    if (timeoutMs > 0) r.timer = setTimeout(onAsyncTimeout, timeoutMs, r)
    const hasBody = body !== null && body.length > 0
    const up = access.pools.newStream(cluster, host, r, head, !hasBody)
    if (r.done) return r
    r.up = up
    if (hasBody) up.sendData(body, true)
    return r
  }

  /** The caller no longer wants the answer (its own stream ended): the request is reset, the handler not called. */
  cancel(): void {
    if (this.done) return
    const up = this.up
    this.end(0)
    up?.reset()
  }

  fail(reason: AsyncFailure, detail: string): void {
    if (this.done) return
    const up = this.up
    this.end(0)
    up?.reset()
    this.handler.onAsyncFailure(reason, detail)
  }

  private end(status: number): void {
    this.done = true
    this.up = null
    if (this.timer !== null) {
      clearTimeout(this.timer)
      this.timer = null
    }
    const stats = this.stats
    if (stats === null) return
    this.host!.activeRequests--
    stats.rq.rq_active--
    if (status !== 0) stats.rq.countStatus(status)
    stats.rq.rq_time.record(performance.now() - this.start)
  }

  private finish(trailers: Headers | null): void {
    if (this.done) return
    this.end(this.status)
    const body = this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks, this.bytes)
    this.handler.onAsyncResponse(this.status, this.headers!, body, trailers)
  }

  onUpstreamHeaders(status: number, headers: Headers, endStream: boolean): void {
    this.status = status
    this.headers = headers
    if (endStream) this.finish(null)
  }
  onUpstreamData(chunk: Buffer, endStream: boolean): void {
    if (this.done) return
    if (chunk.length > 0) {
      this.bytes += chunk.length
      if (this.bytes > ASYNC_RESPONSE_LIMIT_BYTES) return this.fail('too_large', 'response body too large')
      this.chunks.push(chunk)
    }
    if (endStream) this.finish(null)
  }
  onUpstreamTrailers(trailers: Headers): void {
    this.finish(trailers)
  }
  onUpstreamReset(reason: UpstreamResetReason, detail: string): void {
    if (this.done) return
    this.end(0)
    this.handler.onAsyncFailure(reason, detail)
  }
  onUpstreamDrain(): void {}
}
