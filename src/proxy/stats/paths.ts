/**
 * The busiest request paths a proxy forwarded, bounded: Metwally's Space-Saving summary of at most `capacity`
 * entries keyed by (cluster, method, path without query). A key not in a full table takes the place of the entry
 * with the fewest requests and inherits its count as its error bound, so every key that carried more than
 * total/capacity requests is in the table, and `count - errorBound` never overstates an entry's requests.
 *
 * Each entry keeps, since it entered the table: requests, failures (5xx or no response), the sum of durations (ms).
 * An entry that leaves and comes back gets a new `id`, so a reader that takes differences between two reads knows
 * it is not the same run of counts. Read at the admin endpoint's `/stats/paths`.
 *
 * Cost per request: two Map lookups (cluster name, then path) and a few increments; a query string costs one slice.
 * Admitting a key into a full table scans the table for its smallest entry (capacity comparisons).
 */

/** Paths longer than this are cut (a path is a key, and keys are kept). */
export const MAX_PATH_LENGTH = 256

export class PathEntry {
  id: number
  cluster: string
  method: string
  path: string
  /** requests since the entry entered the table, plus `errorBound` */
  count: number
  /** the count inherited from the entry it replaced (Space-Saving's error) */
  errorBound: number
  /** responses of 500 and over, or none at all, since the entry entered the table */
  failures = 0
  /** sum of request durations, ms, since the entry entered the table */
  msSum = 0
  /** the next entry of the same cluster and path with another method */
  next: PathEntry | null = null
  constructor(id: number, cluster: string, method: string, path: string, errorBound: number) {
    this.id = id
    this.cluster = cluster
    this.method = method
    this.path = path
    this.count = errorBound
    this.errorBound = errorBound
  }
}

export interface PathEntryJson {
  id: number
  cluster: string
  method: string
  path: string
  /** requests counted since the entry entered the table (count − error bound) */
  requests: number
  error_bound: number
  failures: number
  duration_ms_sum: number
}

export class PathStats {
  readonly capacity: number
  /** when the proxy started counting (ms since the epoch): a reader tells a restart by it */
  readonly startedAtMs = Date.now()
  /** entries that made room for another */
  evictions = 0
  private readonly byCluster = new Map<string, Map<string, PathEntry>>()
  private readonly all: PathEntry[] = []
  private nextId = 1

  constructor(capacity: number) {
    this.capacity = Math.max(1, Math.floor(capacity))
  }

  record(cluster: string, method: string, rawPath: string, status: number, ms: number): void {
    let path = rawPath
    const q = path.indexOf('?')
    if (q >= 0) path = path.slice(0, q)
    if (path.length > MAX_PATH_LENGTH) path = path.slice(0, MAX_PATH_LENGTH)
    let paths = this.byCluster.get(cluster)
    if (paths === undefined) this.byCluster.set(cluster, (paths = new Map()))
    let e = paths.get(path) ?? null
    while (e !== null && e.method !== method) e = e.next
    if (e === null) e = this.admit(paths, cluster, method, path)
    e.count++
    if (status === 0 || status >= 500) e.failures++
    e.msSum += ms
  }

  private admit(paths: Map<string, PathEntry>, cluster: string, method: string, path: string): PathEntry {
    let bound = 0
    if (this.all.length >= this.capacity) {
      let min = 0
      for (let i = 1; i < this.all.length; i++) if (this.all[i]!.count < this.all[min]!.count) min = i
      const old = this.all[min]!
      this.unlink(old)
      this.all[min] = this.all[this.all.length - 1]!
      this.all.pop()
      this.evictions++
      bound = old.count
    }
    const e = new PathEntry(this.nextId++, cluster, method, path, bound)
    e.next = paths.get(path) ?? null
    paths.set(path, e)
    this.all.push(e)
    return e
  }

  private unlink(e: PathEntry): void {
    const paths = this.byCluster.get(e.cluster)!
    let head = paths.get(e.path)!
    if (head === e) {
      if (e.next === null) {
        paths.delete(e.path)
        if (paths.size === 0) this.byCluster.delete(e.cluster)
      } else paths.set(e.path, e.next)
      return
    }
    while (head.next !== e) head = head.next!
    head.next = e.next
  }

  /** The table, the most requests counted since entering it first. */
  toJson(): { started_at_ms: number; capacity: number; evictions: number; paths: PathEntryJson[] } {
    return {
      started_at_ms: this.startedAtMs,
      capacity: this.capacity,
      evictions: this.evictions,
      paths: [...this.all]
        .sort((a, b) => b.count - b.errorBound - (a.count - a.errorBound))
        .map((e) => ({
          id: e.id,
          cluster: e.cluster,
          method: e.method,
          path: e.path,
          requests: e.count - e.errorBound,
          error_bound: e.errorBound,
          failures: e.failures,
          duration_ms_sum: Math.round(e.msSum * 1000) / 1000,
        })),
    }
  }
}
