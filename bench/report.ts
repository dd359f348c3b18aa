// Plain-text tables for the benchmark results.
import type { OpenLoopResult } from './openloop.js'
import { type WrkResult, wrkErrors } from './wrk.js'

export type Status = 'ok' | 'failed to start' | 'failed' | 'crashed'

export interface Percentiles {
  p50: number
  p90: number
  p99: number
  p999: number
}

/** One round of the fixed-rate latency measurement of one target. */
export interface LatencyRound {
  round: number
  /** unrecorded start of this round's open-loop run, seconds */
  warmupS: number
  target: OpenLoopResult
  /** the direct path to the backend, measured at the same time as `target` (paired stream) */
  baseline: OpenLoopResult
  /** target percentile minus the paired direct stream's, in this round, microseconds */
  addedUs: Percentiles
  /** utime+stime of the proxy's process tree during this round (absent for direct) */
  cpuSeconds?: number
  /** CPU used by processes outside the benchmark during this round, in % of one core */
  otherCpuPct: number
  /** busy/steal % per core during this round */
  coreLoad: { busyPct: number; stealPct: number }[]
}

/** The rounds of one target combined: medians over rounds, so one disturbed round moves little. */
export interface LatencySummary {
  rounds: number
  /** median over rounds of the target's percentiles; max is the largest over all rounds */
  latencyUs: Percentiles & { max: number }
  /** the same for the paired direct stream */
  baselineUs: Percentiles & { max: number }
  /** per percentile, the median over rounds of (target - paired direct) */
  addedUs: Percentiles
  /** the smallest and largest added p99 of any round: the spread behind the median */
  addedP99Range: { min: number; max: number }
  /** lowest completed rate of any round (should be the configured rate) */
  achievedRateMin: number
  /** errors + non-2xx + unanswered, summed over rounds (warm-ups included) */
  errors: number
  /** the generator's worst send-lag p99 in any round, for the target stream */
  sendLagP99MaxUs: number
}

export const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b)
  const m = s.length >> 1
  if (s.length === 0) return Number.NaN
  return Math.round(s.length % 2 === 1 ? (s[m] ?? 0) : ((s[m - 1] ?? 0) + (s[m] ?? 0)) / 2)
}

const PCTS = ['p50', 'p90', 'p99', 'p999'] as const

export function addedUs(target: Percentiles, baseline: Percentiles): Percentiles {
  return {
    p50: target.p50 - baseline.p50,
    p90: target.p90 - baseline.p90,
    p99: target.p99 - baseline.p99,
    p999: target.p999 - baseline.p999,
  }
}

export function summarizeRounds(rounds: LatencyRound[]): LatencySummary {
  const med = (pick: (r: LatencyRound) => Percentiles): Percentiles =>
    Object.fromEntries(PCTS.map((p) => [p, median(rounds.map((r) => pick(r)[p]))])) as unknown as Percentiles
  const added = rounds.map((r) => r.addedUs.p99)
  return {
    rounds: rounds.length,
    latencyUs: { ...med((r) => r.target.latencyUs), max: Math.max(...rounds.map((r) => r.target.latencyUs.max)) },
    baselineUs: {
      ...med((r) => r.baseline.latencyUs),
      max: Math.max(...rounds.map((r) => r.baseline.latencyUs.max)),
    },
    addedUs: med((r) => r.addedUs),
    addedP99Range: { min: Math.min(...added), max: Math.max(...added) },
    achievedRateMin: Math.min(...rounds.map((r) => r.target.achievedRate)),
    errors: rounds.reduce((a, r) => a + r.target.errors + r.target.non2xx + r.target.unanswered, 0),
    sendLagP99MaxUs: Math.max(...rounds.map((r) => r.target.sendLagUs.p99)),
  }
}

export type Method = 'get' | 'post'
export const METHODS: readonly Method[] = ['get', 'post']

export type CoreLoad = { busyPct: number; stealPct: number }[]

/** One measured wrk run (GET or POST) of one throughput round, with the state of the machine during it. */
export interface WrkRun {
  wrk: WrkResult
  /** busy/steal % per core during this run: index 0 = proxy core, 1 = wrk + backend core */
  coreLoad: CoreLoad
  /** CPU used by processes outside the benchmark during this run, in % of one core */
  otherCpuPct: number
}

/** One round of the throughput measurement of one target: a GET warm-up, then wrk GET and wrk POST. */
export interface ThroughputRound {
  round: number
  /** wrk GET warm-up (not recorded) before this round's measured runs, seconds */
  warmupS: number
  get: WrkRun
  post: WrkRun
  /** largest RSS of the proxy's process tree sampled during this round, warm-up included (absent for direct) */
  rssMaxKiB?: number
}

/** The throughput rounds of one target for one method, combined. */
export interface ThroughputSummary {
  rounds: number
  /** median over rounds of wrk's req/s */
  rps: number
  /** the smallest and largest req/s of any round: the spread behind the median */
  rpsRange: { min: number; max: number }
  /** median over rounds of each of wrk's latency percentiles (closed loop: for information only) */
  latencyUs: { p50: number; p90: number; p99: number }
  /** summed over rounds (warm-ups not included) */
  requests: number
  /** non-2xx answers and socket errors, summed over rounds (warm-ups not included) */
  errors: number
  /**
   * the round whose req/s is the median (with an even number of rounds, the lower of the two middle ones);
   * the target's coreLoad and otherCpuPct for this method are that round's
   */
  medianRound: number
}

/** Median round and medians over rounds of one method's wrk runs. */
export function summarizeThroughput(rounds: ThroughputRound[], method: Method): ThroughputSummary {
  const runs = rounds.map((r) => ({ round: r.round, w: r[method].wrk }))
  const byRps = [...runs].sort((a, b) => a.w.rps - b.w.rps)
  const rps = runs.map((r) => r.w.rps)
  const pct = (p: 'p50' | 'p90' | 'p99'): number => median(runs.map((r) => r.w.latencyUs[p]))
  return {
    rounds: runs.length,
    rps: median(rps),
    rpsRange: { min: Math.min(...rps), max: Math.max(...rps) },
    latencyUs: { p50: pct('p50'), p90: pct('p90'), p99: pct('p99') },
    requests: runs.reduce((a, r) => a + r.w.requests, 0),
    errors: runs.reduce((a, r) => a + wrkErrors(r.w), 0),
    medianRound: byRps[(byRps.length - 1) >> 1]?.round ?? 0,
  }
}

export interface TargetResult {
  name: string
  label: string
  status: Status
  error?: string
  output?: string
  command?: string
  readyMs?: number
  /** wrk GET 1 KB over the throughput rounds: median req/s, spread, medians of wrk's percentiles */
  get?: ThroughputSummary
  /** wrk POST 16 KB, the same */
  post?: ThroughputSummary
  /** every throughput round as measured (wrk's full results, per-core load, other processes' CPU, RSS) */
  throughputRounds?: ThroughputRound[]
  /** the fixed-rate latency rounds combined (medians over rounds) */
  latency?: LatencySummary
  /** every latency round as measured, each paired with its own direct stream */
  latencyRounds?: LatencyRound[]
  /**
   * median over rounds of (target percentile - paired direct percentile), microseconds (for direct itself:
   * the noise floor); the same as latency.addedUs
   */
  addedUs?: Percentiles
  /** idleKiB: before any load on the proxy; loadKiB: the largest sampled during any throughput round */
  rss?: { idleKiB: number; loadKiB: number; processes: string }
  /** proxy CPU over all latency rounds: seconds and requests sent (warm-ups included) summed over rounds */
  cpu?: { seconds: number; requests: number; secondsPer1000: number }
  /**
   * busy/steal % per core while the load ran: index 0 = proxy core, 1 = load generator + backend core;
   * `get` and `post` are those of the method's median round (see ThroughputSummary.medianRound)
   */
  coreLoad?: Record<string, CoreLoad>
  /**
   * CPU used by processes outside the benchmark while a phase ran, in % of one core (machine noise);
   * `get` and `post` are the median round's, `openloop` is the largest of the latency rounds (each
   * round's own figure is in throughputRounds and latencyRounds)
   */
  otherCpuPct?: Record<string, number>
  /** phases repeated because other processes disturbed them (BENCH_WAIT_IDLE), and how many times */
  repeated?: Record<string, number>
}

export interface RatioRow {
  getRps: number | null
  postRps: number | null
  addedP99: number | null
}

const dash = '-'
const int = (n: number | undefined): string =>
  n === undefined || Number.isNaN(n) ? dash : Math.round(n).toLocaleString('en-US')
const signed = (n: number | undefined): string => (n === undefined ? dash : `${n > 0 ? '+' : ''}${int(n)}`)
const mib = (kib: number | undefined): string => (kib === undefined ? dash : `${(kib / 1024).toFixed(1)} MiB`)
const ratio = (r: number | null): string => (r === null ? 'n/a' : `${r.toFixed(2)}x`)
const kilo = (n: number): string => (n >= 1000 ? `${(n / 1000).toFixed(1)}k` : String(n))
const spread = (t: ThroughputSummary): string =>
  t.rounds < 2 ? dash : `${kilo(t.rpsRange.min)}..${kilo(t.rpsRange.max)}`

export function table(headers: string[], rows: string[][], leftCols = 1): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)))
  const line = (cells: string[]): string =>
    cells
      .map((c, i) => (i < leftCols ? c.padEnd(widths[i] ?? 0) : c.padStart(widths[i] ?? 0)))
      .join('  ')
      .trimEnd()
  return [line(headers), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)].join('\n')
}

const pctOf = (r: TargetResult, phase: string): string => {
  const v = r.otherCpuPct?.[phase]
  return v === undefined ? dash : `${v}%`
}

/** Phases during which processes outside the benchmark used more than `threshold` % of a core. */
export function noisyPhases(results: TargetResult[], threshold = 10): string[] {
  const out: string[] = []
  for (const r of results) {
    for (const [phase, pct] of Object.entries(r.otherCpuPct ?? {})) {
      if (phase === 'openloop' && r.latencyRounds) continue
      if ((phase === 'get' || phase === 'post') && r.throughputRounds) continue
      if (pct > threshold) out.push(`${r.label} ${phase} (${pct}%)`)
    }
    for (const t of r.throughputRounds ?? []) {
      for (const m of METHODS) {
        const pct = t[m].otherCpuPct
        if (pct > threshold) out.push(`${r.label} ${m.toUpperCase()} round ${t.round} (${pct}%)`)
      }
    }
    for (const l of r.latencyRounds ?? []) {
      if (l.otherCpuPct > threshold) out.push(`${r.label} latency round ${l.round} (${l.otherCpuPct}%)`)
    }
  }
  return out
}

/** Which core limited a wrk run: the proxy's (0), the load generator's and backend's (1), or both. */
export function bound(r: TargetResult, phase: string): string {
  const l = r.coreLoad?.[phase]
  if (!l || r.name === 'direct') return dash
  const proxy = (l[0]?.busyPct ?? 0) >= 90
  const loadCore = (l[1]?.busyPct ?? 0) >= 90
  return proxy && loadCore ? 'both' : proxy ? 'proxy' : loadCore ? 'load' : 'neither'
}

const load = (r: TargetResult, phase: string): string => {
  const l = r.coreLoad?.[phase]
  if (!l) return dash
  return l.map((c) => `${c.busyPct}%`).join('/')
}

export function render(
  results: TargetResult[],
  ratios: Record<string, RatioRow>,
  cfg: {
    rounds: number
    wrkSeconds: number
    wrkWarmupSeconds: number
    wrkLaterWarmupSeconds: number
    connections: number
    rate: number
    latConnections: number
    latSeconds: number
    latRounds: number
  },
): string {
  const out: string[] = []
  const ok = results.filter((r) => r.status === 'ok')

  const rounds = Math.max(1, ...ok.map((r) => r.get?.rounds ?? 0))
  const warmups =
    cfg.rounds > 1
      ? `${cfg.wrkWarmupSeconds} s before round 1, ${cfg.wrkLaterWarmupSeconds} s before later rounds`
      : `${cfg.wrkWarmupSeconds} s`
  out.push(
    `Throughput: wrk -t1 -c${cfg.connections}, keep-alive; GET returns 1 KB, POST sends 16 KB; ${cfg.rounds} ` +
      `round${cfg.rounds === 1 ? '' : 's'} of ${cfg.wrkSeconds} s per method, the targets taking turns round by ` +
      `round (wrk GET warm-up ${warmups}). req/s and p99 are the MEDIAN over rounds, min..max the spread of the ` +
      "rounds' req/s (- with one round); errors are summed; cores busy, bound and other procs are those of the " +
      "method's median round.",
  )
  out.push(
    table(
      [
        'target',
        'GET req/s',
        'min..max',
        'POST req/s',
        'min..max',
        'GET p99 us',
        'POST p99 us',
        'errors',
        'cores 0/1 busy GET',
        'POST',
        'bound GET/POST',
        'other procs GET/POST',
      ],
      results.map((r) => {
        const label = r.status === 'ok' ? r.label : `${r.label} (${r.status})`
        if (!r.get || !r.post) return [label, r.status.toUpperCase(), '', '', '', '', '', '', '', '', '', '']
        const n = r.get.rounds < rounds ? ` (${r.get.rounds} of ${rounds})` : ''
        return [
          `${label}${n}`,
          int(r.get.rps),
          spread(r.get),
          int(r.post.rps),
          spread(r.post),
          int(r.get.latencyUs.p99),
          int(r.post.latencyUs.p99),
          int(r.get.errors + r.post.errors),
          load(r, 'get'),
          load(r, 'post'),
          `${bound(r, 'get')}/${bound(r, 'post')}`,
          `${pctOf(r, 'get')}/${pctOf(r, 'post')}`,
        ]
      }),
    ),
  )
  out.push(
    "bound: the core that was saturated (>= 90%). 'load' or 'both' means core 1 (wrk + backend) was full too, " +
      'so that req/s is a lower bound for the proxy.',
  )
  out.push('')
  out.push(
    `Latency: open loop, ${cfg.rate} req/s to the target and, interleaved, ${cfg.rate} req/s straight to the backend ` +
      `(paired direct); ${cfg.latConnections} keep-alive connections each; ${cfg.latRounds} rounds of ${cfg.latSeconds} s ` +
      'measured per target, the targets taking turns round by round; from scheduled send time (coordinated omission ' +
      'corrected); microseconds. Every percentile is the MEDIAN over rounds; max is the largest of any round. ' +
      "added = target - paired direct, computed per round, then the median; 'p99 min..max' is the spread of the " +
      "rounds' added p99. On the direct row: two identical direct streams, i.e. the noise floor.",
  )
  out.push(
    table(
      [
        'target',
        'p50',
        'p90',
        'p99',
        'p99.9',
        'max',
        'paired direct p50',
        'p99',
        'added p50',
        'p90',
        'p99',
        'p99 min..max',
        'p99.9',
        'rate min',
        'errors',
        'other procs max',
      ],
      ok.map((r) => {
        const s = r.latency
        const l = s?.latencyUs
        const b = s?.baselineUs
        const a = r.addedUs
        return [
          r.label,
          int(l?.p50),
          int(l?.p90),
          int(l?.p99),
          int(l?.p999),
          int(l?.max),
          int(b?.p50),
          int(b?.p99),
          signed(a?.p50),
          signed(a?.p90),
          signed(a?.p99),
          s ? `${signed(s.addedP99Range.min)}..${signed(s.addedP99Range.max)}` : dash,
          signed(a?.p999),
          int(s?.achievedRateMin),
          int(s?.errors),
          pctOf(r, 'openloop'),
        ]
      }),
    ),
  )
  out.push('')
  out.push(
    'Resources of the proxy process(es): RSS = VmRSS summed over the process tree, idle = after start-up, before ' +
      'any load; max under load = largest sample in any throughput round. CPU = utime+stime over the fixed-rate ' +
      'latency rounds (warm-ups included) / requests sent in them.',
  )
  out.push(
    table(
      ['target', 'RSS idle', 'RSS max under load', 'CPU s / 1000 req', 'processes'],
      ok
        .filter((r) => r.name !== 'direct')
        .map((r) => [
          r.label,
          mib(r.rss?.idleKiB),
          mib(r.rss?.loadKiB),
          r.cpu ? r.cpu.secondsPer1000.toFixed(3) : dash,
          r.rss?.processes ?? dash,
        ]),
      1,
    ),
  )
  out.push('')
  out.push('Loom ratios (of the medians over rounds; req/s: higher is better; added p99: lower is better)')
  out.push(
    table(
      ['Loom vs', 'GET req/s', 'POST req/s', 'added p99'],
      Object.entries(ratios).map(([k, v]) => [k, ratio(v.getRps), ratio(v.postRps), ratio(v.addedP99)]),
    ),
  )
  const noisy = noisyPhases(results)
  if (noisy.length > 0) {
    out.push('')
    out.push(
      `WARNING: other processes on this machine used more than 10% of a core during: ${noisy.join(', ')}. ` +
        'Those figures are disturbed; rerun when the machine is idle. (Throughput and latency figures are medians ' +
        'over rounds: one disturbed round out of three or more moves them little.)',
    )
  }
  const failed = results.filter((r) => r.status !== 'ok')
  for (const r of failed) {
    out.push('')
    out.push(`${r.label}: ${r.status}${r.error ? `: ${r.error}` : ''}`)
    if (r.command) out.push(`  command: ${r.command}`)
    const tail = (r.output ?? '').trim().split('\n').slice(-15)
    if (tail.length > 0 && tail[0] !== '') out.push(...tail.map((l) => `  | ${l}`))
  }
  return out.join('\n')
}
