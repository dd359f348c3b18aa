/**
 * Per-host connection pools, created on first use and kept in the host's `pool` slot. The cluster's protocol
 * options decide the pool kind: HTTP/2 (one multiplexed connection) or HTTP/1.1 (a keep-alive pool).
 */
import type { Host, UpstreamCluster } from '../cluster/index.js'
import type { StatsStore } from '../stats/stats.js'
import { H1Pool } from './h1/client.js'
import { H2Pool } from './h2/client.js'
import type { RequestHead, UpstreamCallbacks, UpstreamRequest } from './types.js'

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
    return pool.newStream(cb, head, endStream)
  }
}
