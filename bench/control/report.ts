// Plain-text tables for the control-plane benchmark.
import { table } from '../report.js'

export type PhaseStatus = 'ok' | 'timeout' | 'skipped' | 'failed'

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
  /** RSS, KiB */
  rssKiB: number | null
  /** the figure is a lower bound (the proxies had not all got their config when it was taken) */
  lowerBound?: boolean
  note?: string
}

export interface Goals {
  propagationMs: number
  controlMiBPerProxy: number
  proxyMiBPer1000Endpoints: number
}

export interface Verdicts {
  propagation: { value: number | null; pass: boolean | null; note: string }
  controlMemory: { value: number | null; pass: boolean | null; note: string }
  proxyMemory: { value: number | null; pass: boolean | null; note: string }
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
  verdicts: Verdicts,
  goals: Goals,
  timeoutS: number,
): string {
  const out: string[] = []
  const proxies = rows[0]?.proxies ?? 0
  out.push(
    `Propagation to ${proxies.toLocaleString('en-US')} connected proxies (real xDS clients: decode, ACK); ms ` +
      'from the ' +
      'POST /api/v1/apply returning (connect rows: from the clients starting) to each proxy sending its ACK',
  )
  out.push(
    table(
      [
        'phase',
        'status',
        'apply ms',
        'ACKed',
        'p50 ms',
        'p90 ms',
        'p100 ms',
        'rebuild ms',
        'CPU s control/clients',
        'busy control/clients/others',
        'peak RSS MiB',
        'reconnects',
        'NACKs',
      ],
      rows.map((r) => {
        const partial = r.status === 'timeout' ? timeoutS : undefined
        return [
          r.label,
          r.status === 'ok' ? 'ok' : r.status.toUpperCase(),
          ms(r.applyMs),
          r.acked === undefined ? dash : `${r.acked}/${r.proxies}`,
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
        ]
      }),
    ),
  )
  out.push(
    "rebuild: loom control's last snapshot rebuild (GET /debug/rebuild; connecting proxies get theirs built one by " +
      'one instead). CPU and busy: loom control (1 core) and the processes simulating the proxies (their cores), ' +
      'from the apply to the last ACK; the side near 100% set the pace; others: processes outside the benchmark, ' +
      '% of one core. peak RSS: loom control, sampled every 200 ms.',
  )
  for (const r of rows) if (r.note) out.push(`  ${r.label}: ${r.note}`)
  out.push('')
  out.push('Memory (RSS = VmRSS, settled: median of 5 samples over 1 s, 2 s after the config was ACKed)')
  out.push(
    table(
      ['process', 'configuration', 'RSS MiB', 'note'],
      [
        ...control.map((p) => ['loom control', p.label, mib(p.rssKiB), p.note ?? '']),
        ...proxy.map((p) => ['loom proxy', p.label, mib(p.rssKiB), p.note ?? '']),
      ],
      2,
    ),
  )
  out.push('')
  out.push('Goals')
  const v = verdicts
  out.push(
    table(
      ['goal', 'measured', 'target', 'verdict'],
      [
        [
          '1000 services to 1000 proxies, p100 apply → ACK',
          v.propagation.value === null ? v.propagation.note : `${ms(v.propagation.value)} ms`,
          `<= ${goals.propagationMs.toLocaleString('en-US')} ms`,
          verdict(v.propagation.pass),
        ],
        [
          'control plane memory per connected proxy',
          v.controlMemory.value === null ? v.controlMemory.note : `${v.controlMemory.value.toFixed(3)} MiB`,
          `<= ${goals.controlMiBPerProxy} MiB`,
          verdict(v.controlMemory.pass),
        ],
        [
          'proxy memory per 1000 endpoints',
          v.proxyMemory.value === null ? v.proxyMemory.note : `${v.proxyMemory.value.toFixed(2)} MiB`,
          `<= ${goals.proxyMiBPer1000Endpoints} MiB`,
          verdict(v.proxyMemory.pass),
        ],
      ],
      1,
    ),
  )
  for (const x of [v.propagation, v.controlMemory, v.proxyMemory]) {
    if (x.value !== null && x.note) out.push(`  ${x.note}`)
  }
  return out.join('\n')
}
