// Plain-text tables for the control-plane benchmark.
import { table } from '../report.js'

export type PhaseStatus = 'ok' | 'timeout' | 'skipped' | 'failed' | 'unsupported'

export interface Spread {
  p50: number | null
  p90: number | null
  /** the slowest proxy; null when some proxy never got there within the time limit */
  p100: number | null
  min: number | null
}

export interface PropagationResult {
  key: string
  label: string
  services: number
  proxies: number
  status: PhaseStatus
  note?: string
  /** duration of the POST /api/v1/apply (ms); absent for connection phases */
  applyMs?: number
  /** proxies that reached the expected config */
  acked?: number
  /** apply returned (or clients started) → ACK sent, ms, across proxies */
  ackMs?: Spread
  /** apply returned → the response later ACKed arrived at the client (before decoding), ms */
  receivedMs?: Spread
  /**
   * apply returned → the control plane's last write for the proxy completed (the grpc write callback of its latest
   * response of each type, `writtenAt` in proxy-status; the latest over the types written since the trigger), ms
   */
  writtenMs?: Spread
  /** how long the GET /api/v1/proxy-status that read `writtenAt` took, ms */
  statusMs?: number
  /** bytes of responses per (lean) proxy during the phase */
  bytesPerProxy?: number
  /** 'sotw' or 'delta'; scoped: on-demand proxies (VHDS, 10 services each) */
  protocol?: 'sotw' | 'delta'
  scoped?: boolean
  /** how long the harness waited, s */
  waitedS?: number
  /** CPU seconds used while waiting: the control plane, and the processes simulating the proxies */
  controlCpuS?: number
  clientsCpuS?: number
  /** CPU use over the phase in % of the cores each side has (loom control: 1; the clients: theirs) */
  controlBusyPct?: number
  clientsBusyPct?: number
  /** CPU that processes outside the benchmark used during the phase, in % of one core (machine noise) */
  otherCpuPct?: number
  /** the control plane's own account of its last snapshot rebuild (GET /debug/rebuild) */
  rebuild?: { ms: number; proxies: number }
  /** RSS of loom control when the phase ended, and the most it reached during it (sampled every 200 ms) */
  controlRssKiB?: number
  peakRssKiB?: number
  reconnects?: number
  nacks?: number
  warnings?: Record<string, number>
}

export interface MemoryPoint {
  label: string
  value: number
  /** RSS, KiB (settled: 2 s after the config was ACKed) */
  rssKiB: number | null
  /** the lowest RSS over a rest after that (KiB): the young generation shrunk back (proxies only) */
  restingKiB?: number | null
  /** the figure is a lower bound (the proxies had not all got their config when it was taken) */
  lowerBound?: boolean
  note?: string
}

/** One goal: what it is, what was measured, the target, and whether it was met (null: not decided). */
export interface GoalRow {
  goal: string
  measured: string
  target: string
  pass: boolean | null
  note?: string
}

const dash = '-'
const ms = (n: number | null | undefined, timeoutS?: number): string =>
  n === null || n === undefined
    ? timeoutS === undefined
      ? dash
      : `> ${(timeoutS * 1000).toLocaleString('en-US')}`
    : Math.round(n).toLocaleString('en-US')
const secs = (n: number | undefined): string => (n === undefined ? dash : n.toFixed(1))
const mib = (kib: number | null | undefined): string =>
  kib === null || kib === undefined ? dash : (kib / 1024).toFixed(1)
const verdict = (p: boolean | null): string => (p === null ? 'n/a' : p ? 'PASS' : 'FAIL')

export function render(
  rows: PropagationResult[],
  control: MemoryPoint[],
  proxy: MemoryPoint[],
  goals: GoalRow[],
  timeoutS: number,
): string {
  const out: string[] = []
  const proxies = rows[0]?.proxies ?? 0
  out.push(
    `Propagation to ${proxies.toLocaleString('en-US')} connected proxies (real xDS clients on the wire, ACKs); ms from ` +
      "the POST /api/v1/apply returning (connect rows: from the clients starting): written = the control plane's " +
      'last write for the proxy completed, p50/p100 = the proxy sent its ACK',
  )
  out.push(
    table(
      [
        'phase',
        'status',
        'apply ms',
        'ACKed',
        'written p50/p100',
        'p50 ms',
        'p90 ms',
        'p100 ms',
        'rebuild ms',
        'CPU s control/clients',
        'busy control/clients/others',
        'peak RSS MiB',
        'reconnects',
        'NACKs',
        'KiB/proxy',
      ],
      rows.map((r) => {
        const partial = r.status === 'timeout' ? timeoutS : undefined
        return [
          r.label,
          r.status === 'ok' ? 'ok' : r.status.toUpperCase(),
          ms(r.applyMs),
          r.acked === undefined ? dash : `${r.acked}/${r.proxies}`,
          r.writtenMs === undefined ? dash : `${ms(r.writtenMs.p50)}/${ms(r.writtenMs.p100)}`,
          ms(r.ackMs?.p50, partial),
          ms(r.ackMs?.p90, partial),
          ms(r.ackMs?.p100, partial),
          ms(r.rebuild?.ms),
          r.controlCpuS === undefined ? dash : `${secs(r.controlCpuS)}/${secs(r.clientsCpuS)}`,
          r.controlBusyPct === undefined
            ? dash
            : `${r.controlBusyPct}%/${r.clientsBusyPct}%/${r.otherCpuPct === undefined ? dash : `${r.otherCpuPct}%`}`,
          r.peakRssKiB === undefined ? dash : (r.peakRssKiB / 1024).toFixed(0),
          r.reconnects === undefined ? dash : String(r.reconnects),
          r.nacks === undefined ? dash : String(r.nacks),
          r.bytesPerProxy === undefined ? dash : (r.bytesPerProxy / 1024).toFixed(1),
        ]
      }),
    ),
  )
  out.push(
    "rebuild: loom control's last snapshot rebuild (GET /debug/rebuild; connecting proxies get theirs built one by " +
      'one instead). CPU and busy: loom control (1 core) and the processes simulating the proxies (their cores), ' +
      'from the apply to the last ACK; the side near 100% set the pace (the clients should stay under 70%); others: ' +
      'processes outside the benchmark, % of one core. peak RSS: loom control, sampled every 200 ms. KiB/proxy: ' +
      'responses received per proxy. written: a proxy the control plane wrote nothing to since the trigger counts as ' +
      'not written (the dash when none was).',
  )
  for (const r of rows) if (r.note) out.push(`  ${r.label}: ${r.note}`)
  out.push('')
  out.push(
    'Memory (RSS = VmRSS, settled: median of 5 samples over 1 s, 2 s after the config was ACKed; at rest: the ' +
      'lowest RSS over the rest after it, once V8 has shrunk the young generation that the config burst grew)',
  )
  out.push(
    table(
      ['process', 'configuration', 'RSS MiB', 'at rest MiB', 'note'],
      [
        ...control.map((p) => ['loom control', p.label, mib(p.rssKiB), '', p.note ?? '']),
        ...proxy.map((p) => ['loom proxy', p.label, mib(p.rssKiB), mib(p.restingKiB ?? null), p.note ?? '']),
      ],
      2,
    ),
  )
  out.push('')
  out.push('Goals')
  out.push(
    table(
      ['goal', 'measured', 'target', 'verdict'],
      goals.map((g) => [g.goal, g.measured, g.target, verdict(g.pass)]),
      2,
    ),
  )
  for (const g of goals) if (g.note) out.push(`  ${g.goal}: ${g.note}`)
  return out.join('\n')
}
