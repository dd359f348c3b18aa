// Runs wrk (closed-loop, keep-alive) and parses its report.
import { runToEnd } from './proc.js'

export interface WrkResult {
  rps: number
  requests: number
  seconds: number
  non2xx: number
  socketErrors: { connect: number; read: number; write: number; timeout: number }
  /** wrk's own latency percentiles (closed-loop, so they understate tails; see the open-loop run) */
  latencyUs: { p50: number; p90: number; p99: number }
}

export interface WrkOptions {
  port: number
  seconds: number
  connections: number
  threads: number
  script?: string
  cpu: string
}

const UNIT_US: Record<string, number> = { us: 1, ms: 1000, s: 1_000_000, m: 60_000_000 }

function toUs(v: string | undefined): number {
  const m = /^([\d.]+)(us|ms|s|m)$/.exec(v ?? '')
  return m ? Math.round(Number(m[1]) * (UNIT_US[m[2] ?? 'us'] ?? 1)) : Number.NaN
}

export function parseWrk(out: string): WrkResult {
  const num = (re: RegExp): number => {
    const m = re.exec(out)
    return m ? Number(m[1]) : 0
  }
  const pct = (p: string): number => toUs(new RegExp(`^\\s+${p}%\\s+(\\S+)`, 'm').exec(out)?.[1])
  const rpsMatch = /^Requests\/sec:\s+([\d.]+)/m.exec(out)
  if (!rpsMatch) throw new Error(`could not parse wrk output:\n${out}`)
  const se = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out)
  return {
    rps: Math.round(Number(rpsMatch[1])),
    requests: num(/(\d+) requests in/),
    seconds: num(/requests in ([\d.]+)s/),
    non2xx: num(/Non-2xx or 3xx responses: (\d+)/),
    socketErrors: {
      connect: Number(se?.[1] ?? 0),
      read: Number(se?.[2] ?? 0),
      write: Number(se?.[3] ?? 0),
      timeout: Number(se?.[4] ?? 0),
    },
    latencyUs: { p50: pct('50'), p90: pct('90'), p99: pct('99') },
  }
}

export async function runWrk(o: WrkOptions): Promise<WrkResult> {
  const args = ['-c', o.cpu, 'wrk', `-t${o.threads}`, `-c${o.connections}`, `-d${o.seconds}s`, '--timeout', '5s']
  args.push('--latency')
  if (o.script) args.push('-s', o.script)
  args.push(`http://127.0.0.1:${o.port}/`)
  const r = await runToEnd('wrk', 'taskset', args, (o.seconds + 20) * 1000)
  if (r.timedOut) throw new Error('wrk did not finish in time')
  if (r.exit.code !== 0) throw new Error(`wrk exited with ${r.exit.code}: ${r.stderr || r.stdout}`)
  return parseWrk(r.stdout)
}

export const wrkErrors = (w: WrkResult): number =>
  w.non2xx + w.socketErrors.connect + w.socketErrors.read + w.socketErrors.write + w.socketErrors.timeout
