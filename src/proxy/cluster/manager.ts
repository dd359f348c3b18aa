import type { Cluster, ClusterLoadAssignment } from '../../config/envoy.js'
import type { ConfigIssue } from '../../core/errors.js'
import { UpstreamCluster } from './cluster.js'
import type { DnsLookup, DnsTtlLookup } from './dns.js'
import { ClusterConfigError } from './errors.js'
import type { SecretStore } from '../secrets/store.js'

export interface ClusterManagerOptions {
  /** Replaces `dns.promises.lookup` for STRICT_DNS clusters (tests). */
  dnsLookup?: DnsLookup
  dnsTtlLookup?: DnsTtlLookup
  /** where TLS contexts find the secrets they name through SDS */
  secrets?: SecretStore
}

/** The proxy's upstream clusters, by name. */
export class ClusterManager {
  readonly #clusters = new Map<string, UpstreamCluster>()

  /**
   * Builds every cluster. Throws one ClusterConfigError with all the issues found, located relative to the
   * clusters array (`[2].load_assignment...`).
   */
  constructor(clusters: readonly Cluster[], options: ClusterManagerOptions = {}) {
    const issues: ConfigIssue[] = []
    const firstIndex = new Map<string, number>()
    clusters.forEach((config, i) => {
      const first = firstIndex.get(config.name)
      if (first !== undefined) {
        issues.push({ path: `[${i}].name`, message: `duplicate cluster name "${config.name}" (also at [${first}])` })
      } else firstIndex.set(config.name, i)
      try {
        const cluster = new UpstreamCluster(config, {
          path: `[${i}]`,
          dnsLookup: options.dnsLookup,
          dnsTtlLookup: options.dnsTtlLookup,
          secrets: options.secrets,
        })
        if (first === undefined) this.#clusters.set(config.name, cluster)
      } catch (err) {
        if (!(err instanceof ClusterConfigError)) throw err
        issues.push(...err.issues)
      }
    })
    if (issues.length > 0) throw new ClusterConfigError(issues)
  }

  /**
   * Initial discovery: resolves when every STRICT_DNS cluster has resolved (or failed to resolve) once. Failures
   * are logged; such a cluster has no hosts and keeps retrying every dns_refresh_rate.
   */
  async start(): Promise<void> {
    await Promise.all(Array.from(this.#clusters.values(), (c) => c.start()))
  }

  /**
   * Builds clusters without adding them (a dynamic update compiles its whole set first). Problems are appended to
   * `issues` with paths relative to `configs`; only the clusters that built are returned.
   */
  static compile(
    configs: readonly Cluster[],
    issues: ConfigIssue[],
    options: ClusterManagerOptions = {},
  ): UpstreamCluster[] {
    const out: UpstreamCluster[] = []
    configs.forEach((config, i) => {
      try {
        out.push(
          new UpstreamCluster(config, {
            path: `[${i}]`,
            dnsLookup: options.dnsLookup,
            dnsTtlLookup: options.dnsTtlLookup,
            secrets: options.secrets,
          }),
        )
      } catch (err) {
        if (!(err instanceof ClusterConfigError)) throw err
        issues.push(...err.issues)
      }
    })
    return out
  }

  /**
   * Adds a cluster or replaces the one with its name. A replaced cluster's connections drain; an EDS cluster starts
   * from `endpoints` (the last assignment received for it), so it is not empty until the next EDS push.
   */
  upsert(cluster: UpstreamCluster, endpoints?: ClusterLoadAssignment): void {
    const old = this.#clusters.get(cluster.name)
    if (cluster.type === 'EDS' && endpoints !== undefined) cluster.updateFromAssignment(endpoints)
    if (old?.healthChecker != null && cluster.healthChecker !== null) cluster.healthChecker.inherit(old.healthChecker)
    this.#clusters.set(cluster.name, cluster)
    if (old !== undefined) retire(old)
  }

  /** Removes a cluster; its connections finish their requests and close. */
  remove(name: string): void {
    const old = this.#clusters.get(name)
    if (old === undefined) return
    this.#clusters.delete(name)
    retire(old)
  }

  get(name: string): UpstreamCluster | undefined {
    return this.#clusters.get(name)
  }

  has(name: string): boolean {
    return this.#clusters.has(name)
  }

  all(): IterableIterator<UpstreamCluster> {
    return this.#clusters.values()
  }

  get size(): number {
    return this.#clusters.size
  }

  /** Stops DNS refreshes (their timers are unref'd anyway). */
  stop(): void {
    for (const c of this.#clusters.values()) c.stop()
  }
}

function retire(c: UpstreamCluster): void {
  c.stop()
  for (const h of c.hosts()) h.pool?.drain()
}
