/**
 * The control plane's gatherer: every `intervalMs` it reads each connected proxy's metrics from its admin endpoint
 * (the address the proxy sent as node metadata ADMIN_ADDRESS): `/stats/prometheus` for Istio's standard metrics and
 * `/stats/paths` for its busiest paths, and keeps a short history per proxy (history.ts) that the views (views.ts)
 * compute rates, success rates and latency quantiles from. No metrics server is involved.
 *
 * Limits: `retentionMs / intervalMs` slots per proxy (default 10 min / 5 s = 120), `maxSeriesPerProxy` series per
 * proxy (default 5000), scrapes in flight at most `concurrency` (default 16), each given `timeoutMs` (default the
 * lesser of the interval and 3 s) and at most 16 MiB of body. A proxy that is no longer connected is not read again;
 * its history stays until it is older than the retention (its last requests still count in a window), then goes.
 */
import * as http from 'node:http'
import { log } from '../../core/log.js'
import { type HistogramSample, type SeriesInfo, TargetHistory } from './history.js'
import { type FamilyType, escapeLabelValue, parseLabels, parsePrometheusText } from './prom-text.js'

/** The families read from `/stats/prometheus` (Istio's names); the bytes histograms are not needed by any view. */
export const FAMILIES: ReadonlyMap<string, FamilyType> = new Map([
  ['istio_requests_total', 'counter'],
  ['istio_request_duration_milliseconds', 'histogram'],
  ['istio_tcp_connections_opened_total', 'counter'],
  ['istio_tcp_connections_closed_total', 'counter'],
  ['istio_tcp_sent_bytes_total', 'counter'],
  ['istio_tcp_received_bytes_total', 'counter'],
])

/** The series the busiest-paths table becomes (labels: id, cluster, method, path). */
export const PATH_REQUESTS = 'loom_path_requests'
export const PATH_FAILURES = 'loom_path_failures'
export const PATH_DURATION_SUM = 'loom_path_duration_ms_sum'

const MAX_BODY = 16 * 1024 * 1024

/** What a proxy's `/stats/paths` answers (src/proxy/stats/paths.ts). */
interface PathTableJson {
  started_at_ms?: number
  paths?: {
    id: number
    cluster: string
    method: string
    path: string
    requests: number
    failures: number
    duration_ms_sum: number
  }[]
}

/** A proxy to read, as the xDS server knows it. */
export interface ScrapeTarget {
  nodeId: string
  adminAddress: string
  /** the workload (Istio's: the deployment, `reviews-v1`) */
  workload: string
  namespace: string
  kind: 'sidecar' | 'gateway'
}

export interface GathererOptions {
  /** how often every proxy is read, ms (0: never) */
  intervalMs: number
  /** how long samples are kept, ms */
  retentionMs: number
  maxSeriesPerProxy?: number
  timeoutMs?: number
  concurrency?: number
  /** the proxies to read now */
  targets: () => ScrapeTarget[]
  clock?: () => number
}

/** One proxy's history and how reading it went. */
export class ProxyRecord {
  target: ScrapeTarget
  readonly history: TargetHistory
  /** the proxy's start (from /stats/paths), to tell a restart; null when unknown */
  startedAtMs: number | null = null
  lastError: string | null = null
  lastAttemptMs = 0
  failures = 0
  /** lines of wanted families that could not be read, last scrape */
  malformed = 0
  /** label text → series key and bucket bound: labels are parsed once per series, not per scrape */
  readonly labelCache = new Map<string, { key: string; le: number }>()
  constructor(target: ScrapeTarget, history: TargetHistory) {
    this.target = target
    this.history = history
  }
}

/** `family{a="x",b="y"}` with the labels escaped: the key of a series. */
export function seriesKey(family: string, labels: readonly [string, string][]): string {
  return `${family}{${labels.map(([k, v]) => `${k}="${escapeLabelValue(v)}"`).join(',')}}`
}

/** The family and labels of a series key. */
export function seriesInfoOf(key: string): SeriesInfo {
  const brace = key.indexOf('{')
  const labels = parseLabels(key.slice(brace + 1, -1)) ?? []
  return { family: key.slice(0, brace), labels: Object.fromEntries(labels) }
}

export class Gatherer {
  readonly options: Required<Omit<GathererOptions, 'clock'>> & { clock: () => number }
  readonly slots: number
  private readonly records = new Map<string, ProxyRecord>()
  private readonly agent = new http.Agent({ keepAlive: true, maxSockets: 4 })
  private timer: NodeJS.Timeout | null = null
  private running: Promise<void> | null = null
  /** scrape rounds finished */
  rounds = 0
  /** when the first round started (ms since the epoch), 0 before it */
  firstRoundMs = 0
  lastRoundMs = 0

  constructor(options: GathererOptions) {
    this.options = {
      maxSeriesPerProxy: 5000,
      timeoutMs: Math.min(options.intervalMs > 0 ? options.intervalMs : 3000, 3000),
      concurrency: 16,
      clock: Date.now,
      ...options,
    }
    const interval = Math.max(1, options.intervalMs)
    this.slots = Math.max(2, Math.ceil(options.retentionMs / interval) + 1)
  }

  get enabled(): boolean {
    return this.options.intervalMs > 0
  }

  start(): void {
    if (!this.enabled || this.timer !== null) return
    this.timer = setInterval(() => void this.tick(), this.options.intervalMs)
    this.timer.unref()
    void this.tick()
  }

  async stop(): Promise<void> {
    if (this.timer !== null) clearInterval(this.timer)
    this.timer = null
    await this.running
    this.agent.destroy()
  }

  private tick(): Promise<void> {
    // a round that is still running (slow proxies) is not doubled up
    if (this.running !== null) return this.running
    this.running = this.scrapeAll().finally(() => {
      this.running = null
    })
    return this.running
  }

  /** Reads every target once (also what the timer does), then forgets the proxies gone longer than the retention. */
  async scrapeAll(): Promise<void> {
    const now = this.options.clock()
    if (this.firstRoundMs === 0) this.firstRoundMs = now
    const targets = this.options.targets()
    const queue = [...targets]
    const worker = async () => {
      for (let t = queue.shift(); t !== undefined; t = queue.shift()) await this.scrape(t)
    }
    await Promise.all(Array.from({ length: Math.min(this.options.concurrency, queue.length) }, worker))
    const live = new Set(targets.map((t) => t.nodeId))
    for (const [id, r] of this.records) {
      if (!live.has(id) && Math.max(r.history.lastMs, r.lastAttemptMs) < now - this.options.retentionMs)
        this.records.delete(id)
    }
    this.rounds++
    this.lastRoundMs = this.options.clock()
  }

  /** Every proxy with a history, connected or gone. */
  proxies(): ProxyRecord[] {
    return [...this.records.values()]
  }

  /** The record of a proxy, made on its first scrape. */
  recordOf(target: ScrapeTarget): ProxyRecord {
    let r = this.records.get(target.nodeId)
    if (r === undefined) {
      r = new ProxyRecord(target, new TargetHistory(this.slots, this.options.maxSeriesPerProxy))
      this.records.set(target.nodeId, r)
    }
    r.target = target
    return r
  }

  private async scrape(target: ScrapeTarget): Promise<void> {
    const r = this.recordOf(target)
    r.lastAttemptMs = this.options.clock()
    let metrics: string
    let paths: string | null
    try {
      ;[metrics, paths] = await Promise.all([
        this.get(target.adminAddress, '/stats/prometheus'),
        this.get(target.adminAddress, '/stats/paths').catch(() => null),
      ])
    } catch (err) {
      r.failures++
      if (r.lastError === null)
        log('warn', 'telemetry', 'cannot read a proxy', { node: target.nodeId, error: String(err) })
      r.lastError = String((err as Error).message ?? err)
      return
    }
    r.lastError = null
    this.ingest(r, this.options.clock(), metrics, paths)
  }

  /** Records one scrape's text (`/stats/prometheus`) and JSON (`/stats/paths`, or null) into `r`'s history. */
  ingest(r: ProxyRecord, timeMs: number, metrics: string, pathsJson: string | null): void {
    const counters = new Map<string, number>()
    const histograms = new Map<string, HistogramSample>()
    const cache = r.labelCache
    // a cache that outgrew its series (series that came and went) starts again
    if (cache.size > r.history.maxSeries * 24) cache.clear()
    const parsed = parsePrometheusText(metrics, FAMILIES, (s) => {
      const cacheKey = `${s.family}\u0000${s.kind === 'bucket' ? 'b' : ''}${s.labelText}`
      let c = cache.get(cacheKey)
      if (c === undefined) {
        const labels = parseLabels(s.labelText)
        if (labels === null) return
        let le = Number.NaN
        const rest = labels.filter(([k, v]) => {
          if (k !== 'le' || s.kind !== 'bucket') return true
          le = v === '+Inf' ? Number.POSITIVE_INFINITY : Number(v)
          return false
        })
        c = { key: seriesKey(s.family, rest), le }
        cache.set(cacheKey, c)
      }
      if (s.kind === 'value') return void counters.set(c.key, s.value)
      let h = histograms.get(c.key)
      if (h === undefined) histograms.set(c.key, (h = { les: [], counts: [], sum: 0, count: 0 }))
      if (s.kind === 'bucket') {
        if (Number.isNaN(c.le)) return
        h.les.push(c.le)
        h.counts.push(s.value)
      } else if (s.kind === 'sum') h.sum = s.value
      else h.count = s.value
    })
    r.malformed = parsed.malformed
    for (const [key, h] of histograms) {
      if (!sortBuckets(h)) histograms.delete(key)
    }
    let restarted = false
    if (pathsJson !== null) {
      try {
        const table = JSON.parse(pathsJson) as PathTableJson
        if (typeof table.started_at_ms === 'number') {
          restarted = r.startedAtMs !== null && r.startedAtMs !== table.started_at_ms
          r.startedAtMs = table.started_at_ms
        }
        for (const p of table.paths ?? []) {
          const labels: [string, string][] = [
            ['id', String(p.id)],
            ['cluster', p.cluster],
            ['method', p.method],
            ['path', p.path],
          ]
          counters.set(seriesKey(PATH_REQUESTS, labels), p.requests)
          counters.set(seriesKey(PATH_FAILURES, labels), p.failures)
          counters.set(seriesKey(PATH_DURATION_SUM, labels), p.duration_ms_sum)
        }
      } catch {
        // a proxy without the table (or an odd answer): its Istio metrics still count
      }
    }
    r.history.record(timeMs, restarted, counters, histograms, seriesInfoOf)
  }

  private get(address: string, path: string): Promise<string> {
    const m = /^\[?([^\]]*)\]?:(\d+)$/.exec(address)
    if (m === null) return Promise.reject(new Error(`admin address "${address}" is not host:port`))
    return new Promise((resolve, reject) => {
      const req = http.get(
        { host: m[1], port: Number(m[2]), path, agent: this.agent, timeout: this.options.timeoutMs },
        (res) => {
          if (res.statusCode !== 200) {
            res.resume()
            return reject(new Error(`${path}: HTTP ${res.statusCode}`))
          }
          const chunks: Buffer[] = []
          let n = 0
          res.on('data', (c: Buffer) => {
            n += c.length
            if (n > MAX_BODY) req.destroy(new Error(`${path}: more than ${MAX_BODY} bytes`))
            else chunks.push(c)
          })
          res.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')))
          res.on('error', reject)
        },
      )
      req.on('timeout', () => req.destroy(new Error(`${path}: no answer in ${this.options.timeoutMs} ms`)))
      req.on('error', reject)
    })
  }

  /** For the API: how gathering goes. */
  status(): {
    enabled: boolean
    intervalSeconds: number
    retentionSeconds: number
    rounds: number
    lastRound: string | null
    proxies: { nodeId: string; adminAddress: string; series: number; lastError: string | null }[]
  } {
    return {
      enabled: this.enabled,
      intervalSeconds: this.options.intervalMs / 1000,
      retentionSeconds: this.options.retentionMs / 1000,
      rounds: this.rounds,
      lastRound: this.lastRoundMs === 0 ? null : new Date(this.lastRoundMs).toISOString(),
      proxies: this.proxies().map((r) => ({
        nodeId: r.target.nodeId,
        adminAddress: r.target.adminAddress,
        series: r.history.series.size,
        lastError: r.lastError,
      })),
    }
  }
}

/** Puts a histogram's buckets in order; false when they are not a usable cumulative histogram (no +Inf bucket). */
function sortBuckets(h: HistogramSample): boolean {
  const order = h.les.map((_, i) => i).sort((a, b) => h.les[a]! - h.les[b]!)
  h.les = order.map((i) => h.les[i]!)
  h.counts = order.map((i) => h.counts[i]!)
  return h.les.length >= 2 && h.les[h.les.length - 1] === Number.POSITIVE_INFINITY
}
