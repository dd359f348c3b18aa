/**
 * A short history of one proxy's counters and histograms: a ring of the last `capacity` successful scrapes, and per
 * series a ring of its values at those scrapes, slot for slot, so every series of a proxy shares the scrape times.
 *
 * What a slot holds for a series the scrape did not show:
 * - before the series was first seen: 0. Istio's counters are created on their first request, so a series that
 *   appears between two scrapes counted all of its requests in between; Prometheus' rate() loses that first
 *   increase, this history does not.
 * - after it was seen: the value it had (carried forward), or 0 when the proxy restarted in between.
 * A proxy restart is told by the scrape (`restarted`); a counter that goes down is a reset too (rate()'s rule), so a
 * restart nobody noticed loses at most what was counted before the first scrape after it.
 *
 * Memory: capacity × 8 bytes per counter series, capacity × (buckets + 2) × 8 per histogram series, at most
 * `maxSeries` series per proxy (more are refused and counted in `refused`). A series unchanged for the whole ring
 * holds no increase for any window and is dropped.
 */

export interface SeriesInfo {
  family: string
  /** the labels, as the proxy rendered them (histograms: without `le`) */
  labels: Readonly<Record<string, string>>
}

/** One series' values at each slot: `width` numbers per slot (counters 1; histograms buckets…, sum, count). */
export class Series implements SeriesInfo {
  readonly family: string
  readonly labels: Readonly<Record<string, string>>
  /** histogram bucket upper bounds in order (+Inf last); null for a counter */
  readonly les: Float64Array | null
  readonly width: number
  readonly values: Float64Array
  /** the scrape number that last showed this series */
  lastSeen = 0
  constructor(info: SeriesInfo, les: readonly number[] | null, capacity: number) {
    this.family = info.family
    this.labels = info.labels
    this.les = les === null ? null : Float64Array.from(les)
    this.width = les === null ? 1 : les.length + 2
    this.values = new Float64Array(capacity * this.width)
  }
}

/** A histogram's samples in one scrape. */
export interface HistogramSample {
  /** upper bounds, ascending, +Inf last */
  les: number[]
  /** cumulative counts per bound */
  counts: number[]
  sum: number
  count: number
}

/** The slots a window covers: from `base` (the last scrape at or before its start) to `last`, as ring positions. */
export interface Span {
  /** ordinal positions, oldest first: base < last */
  base: number
  last: number
  baseMs: number
  lastMs: number
}

export class TargetHistory {
  readonly capacity: number
  readonly maxSeries: number
  private readonly times: Float64Array
  private readonly restarts: Uint8Array
  /** ring position of the next slot */
  private head = 0
  /** retained slots */
  size = 0
  /** scrapes recorded, ever */
  scrapes = 0
  /** series refused because the proxy had maxSeries already */
  refused = 0
  readonly series = new Map<string, Series>()

  constructor(capacity: number, maxSeries: number) {
    if (capacity < 2) throw new Error('a history needs at least 2 slots')
    this.capacity = capacity
    this.maxSeries = maxSeries
    this.times = new Float64Array(capacity)
    this.restarts = new Uint8Array(capacity)
  }

  /** Ring position of the `k`-th retained slot, oldest first. */
  private pos(k: number): number {
    return (this.head - this.size + k + this.capacity) % this.capacity
  }

  /** The time of the newest slot, or 0. */
  get lastMs(): number {
    return this.size === 0 ? 0 : this.times[this.pos(this.size - 1)]!
  }

  /**
   * Records one successful scrape at `timeMs`: the counters (series key → value) and histograms it showed.
   * `info` describes a series the first time its key is seen.
   */
  record(
    timeMs: number,
    restarted: boolean,
    counters: ReadonlyMap<string, number>,
    histograms: ReadonlyMap<string, HistogramSample>,
    info: (key: string) => SeriesInfo,
  ): void {
    const prevSize = this.size
    const prevPos = prevSize === 0 ? -1 : this.pos(prevSize - 1)
    const slot = this.head
    this.times[slot] = timeMs
    this.restarts[slot] = restarted ? 1 : 0
    this.head = (this.head + 1) % this.capacity
    if (this.size < this.capacity) this.size++
    const scrape = ++this.scrapes
    for (const [key, value] of counters) {
      const s = this.seriesFor(key, null, info)
      if (s === null) continue
      s.values[slot] = value
      s.lastSeen = scrape
    }
    for (const [key, h] of histograms) {
      let s = this.seriesFor(key, h.les, info)
      if (s === null) continue
      if (!sameBounds(s.les!, h.les)) {
        // the bucket layout changed (a new proxy build): start the series again
        this.series.delete(key)
        s = this.seriesFor(key, h.les, info)
        if (s === null) continue
      }
      const o = slot * s.width
      for (let i = 0; i < h.counts.length; i++) s.values[o + i] = h.counts[i]!
      s.values[o + h.counts.length] = h.sum
      s.values[o + h.counts.length + 1] = h.count
      s.lastSeen = scrape
    }
    // the series this scrape did not show; those unchanged for longer than the ring go
    const oldest = scrape - this.size + 1
    for (const [key, s] of this.series) {
      if (s.lastSeen === scrape) continue
      if (s.lastSeen < oldest) {
        this.series.delete(key)
        continue
      }
      const o = slot * s.width
      if (restarted || prevPos < 0) s.values.fill(0, o, o + s.width)
      else s.values.copyWithin(o, prevPos * s.width, prevPos * s.width + s.width)
    }
  }

  /** The series of `key`, made (its earlier slots 0) when new and there is room; null when refused. */
  private seriesFor(key: string, les: readonly number[] | null, info: (key: string) => SeriesInfo): Series | null {
    const s = this.series.get(key)
    if (s !== undefined) return s
    if (this.series.size >= this.maxSeries) {
      this.refused++
      return null
    }
    const made = new Series(info(key), les, this.capacity)
    this.series.set(key, made)
    return made
  }

  /**
   * The slots a window [fromMs, toMs] covers: the last slot at or before `fromMs` (or the oldest one, when the
   * history starts later) to the last slot at or before `toMs`; null when that is fewer than two slots.
   */
  span(fromMs: number, toMs: number): Span | null {
    let base = -1
    let last = -1
    for (let k = 0; k < this.size; k++) {
      const t = this.times[this.pos(k)]!
      if (t <= fromMs) base = k
      if (t <= toMs) last = k
    }
    if (base < 0) base = 0
    if (last <= base) return null
    return { base, last, baseMs: this.times[this.pos(base)]!, lastMs: this.times[this.pos(last)]! }
  }

  /**
   * How much the number at `offset` of each slot of `s` grew over the span, with counter resets: a value lower
   * than the one before it (or a slot after a restart) counts from 0, as Prometheus' increase() does.
   */
  increase(s: Series, span: Span, offset = 0): number {
    const w = s.width
    let prev = s.values[this.pos(span.base) * w + offset]!
    let total = 0
    for (let k = span.base + 1; k <= span.last; k++) {
      const p = this.pos(k)
      const v = s.values[p * w + offset]!
      if (this.restarts[p] === 1 || v < prev) total += v
      else total += v - prev
      prev = v
    }
    return total
  }

  /** The number at `offset` of the span's last slot (a gauge's value then, or a counter's total). */
  valueAt(s: Series, span: Span, offset = 0): number {
    return s.values[this.pos(span.last) * s.width + offset]!
  }
}

function sameBounds(a: Float64Array, b: readonly number[]): boolean {
  if (a.length !== b.length) return false
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false
  return true
}

/**
 * Prometheus' histogram_quantile over bucket increases: `les` ascending with +Inf last, `counts` cumulative. The
 * rank q·total falls in a bucket; the value is interpolated linearly inside it (from 0 for the first bucket). A rank
 * in the +Inf bucket gives the highest finite bound. NaN when there is no observation.
 */
export function histogramQuantile(q: number, les: ArrayLike<number>, counts: ArrayLike<number>): number {
  const n = les.length
  if (n < 2 || les[n - 1] !== Number.POSITIVE_INFINITY) return Number.NaN
  const total = counts[n - 1]!
  if (!(total > 0)) return Number.NaN
  if (q <= 0) return 0
  if (q >= 1) return les[n - 2]!
  const rank = q * total
  let i = 0
  while (i < n - 1 && counts[i]! < rank) i++
  if (i === n - 1) return les[n - 2]!
  const upper = les[i]!
  const lower = i === 0 ? 0 : les[i - 1]!
  const below = i === 0 ? 0 : counts[i - 1]!
  const inBucket = counts[i]! - below
  if (i === 0 && upper <= 0) return upper
  if (inBucket <= 0) return upper
  return lower + (upper - lower) * ((rank - below) / inBucket)
}
