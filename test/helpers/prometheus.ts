/**
 * A real Prometheus server for tests (Debian's `prometheus` package): its own config, storage in a temporary
 * directory, an OS-chosen port on 127.0.0.1 (never a system Prometheus's 9090), stopped by the test.
 */
import { type ChildProcess, spawn } from 'node:child_process'
import { accessSync, constants, mkdtempSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { delimiter, join } from 'node:path'

/** Polls `fn` every 200 ms (Prometheus is queried, not hammered) until it returns true; fails after `ms`. */
async function poll(fn: () => Promise<boolean>, ms: number, what: string): Promise<void> {
  const deadline = Date.now() + ms
  let last: unknown = null
  for (;;) {
    try {
      if (await fn()) return
    } catch (err) {
      last = err
    }
    if (Date.now() > deadline)
      throw new Error(
        `timed out after ${ms / 1000}s waiting for ${what}${last === null ? '' : ` (last error: ${last})`}`,
      )
    await new Promise((r) => setTimeout(r, 200))
  }
}

/** The `prometheus` executable on PATH (or Debian's /usr/bin/prometheus), or null when it is not installed. */
export function prometheusBinary(): string | null {
  const dirs = [...(process.env.PATH ?? '').split(delimiter).filter((d) => d !== ''), '/usr/bin']
  for (const dir of dirs) {
    const file = join(dir, 'prometheus')
    try {
      accessSync(file, constants.X_OK)
      return file
    } catch {
      // not here
    }
  }
  return null
}

/** One sample of an instant vector: its labels and value. */
export interface Sample {
  metric: Record<string, string>
  value: number
}

/** A target as `GET /api/v1/targets` lists it. */
export interface ActiveTarget {
  labels: Record<string, string>
  scrapeUrl: string
  health: 'up' | 'down' | 'unknown'
  lastError: string
  /** RFC 3339 with nanoseconds; the start of the last scrape */
  lastScrape: string
}

export interface RunningPrometheus {
  /** http://127.0.0.1:<port> */
  readonly url: string
  /** an instant query (`GET /api/v1/query`) evaluated now */
  query(promql: string, atS?: number): Promise<Sample[]>
  /** the samples of `selector` over the `windowS` seconds before `atS` (a range vector: each series' [time s, value]) */
  samples(
    selector: string,
    windowS: number,
    atS: number,
  ): Promise<{ metric: Record<string, string>; values: [number, number][] }[]>
  /** the value of a query that yields one sample (a `sum(...)`), or null when it yields none */
  scalar(promql: string, atS?: number): Promise<number | null>
  targets(): Promise<ActiveTarget[]>
  /**
   * Resolves once every target has been scraped, successfully, from `sinceMs` (epoch ms) on, and scraped once more
   * after that: samples of the first such scrape are stored by then (a target's scrapes follow one another).
   */
  scrapedSince(sinceMs: number, timeoutMs?: number): Promise<void>
  /** what it printed (for failure messages) */
  output(): string
  stop(): Promise<void>
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer()
    s.once('error', reject)
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number }
      s.close(() => resolve(port))
    })
  })
}

/** Epoch ms of Prometheus' RFC 3339 time with nanoseconds (Date.parse reads milliseconds). */
function epochMs(rfc3339: string): number {
  return Date.parse(rfc3339.replace(/(\.\d{3})\d+/, '$1'))
}

/** Starts `prometheus` with `config` (prometheus.yml text) and resolves once `/-/ready` answers 200. */
export async function startPrometheus(binary: string, config: string, timeoutMs = 60_000): Promise<RunningPrometheus> {
  const dir = mkdtempSync(join(tmpdir(), 'loom-prometheus-'))
  const configFile = join(dir, 'prometheus.yml')
  writeFileSync(configFile, config)
  const port = await freePort()
  const url = `http://127.0.0.1:${port}`
  const proc: ChildProcess = spawn(
    binary,
    [
      `--config.file=${configFile}`,
      `--storage.tsdb.path=${join(dir, 'data')}`,
      `--web.listen-address=127.0.0.1:${port}`,
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  )
  const reap = () => proc.kill('SIGKILL')
  process.once('exit', reap)
  let out = ''
  proc.stdout!.on('data', (d) => (out += d))
  proc.stderr!.on('data', (d) => (out += d))
  const exited = new Promise<void>((r) => proc.once('exit', () => r()))
  const stop = async () => {
    if (proc.exitCode === null && proc.signalCode === null) {
      proc.kill('SIGTERM')
      const t = setTimeout(() => proc.kill('SIGKILL'), 10_000)
      await exited
      clearTimeout(t)
    }
    process.off('exit', reap)
  }
  const api = async (path: string): Promise<unknown> => {
    const r = await fetch(`${url}${path}`, { signal: AbortSignal.timeout(10_000) })
    const body = (await r.json()) as { status: string; data?: unknown; error?: string }
    if (body.status !== 'success') throw new Error(`prometheus ${path}: ${body.error ?? r.status}`)
    return body.data
  }
  const query = async (promql: string, atS?: number): Promise<Sample[]> => {
    const at = atS === undefined ? '' : `&time=${atS}`
    const data = (await api(`/api/v1/query?query=${encodeURIComponent(promql)}${at}`)) as {
      resultType: string
      result: { metric: Record<string, string>; value: [number, string] }[]
    }
    if (data.resultType !== 'vector') throw new Error(`${promql}: a ${data.resultType}, not a vector`)
    return data.result.map((r) => ({ metric: r.metric, value: Number(r.value[1]) }))
  }
  const samples = async (selector: string, windowS: number, atS: number) => {
    const promql = `${selector}[${windowS}s]`
    const data = (await api(`/api/v1/query?query=${encodeURIComponent(promql)}&time=${atS}`)) as {
      resultType: string
      result: { metric: Record<string, string>; values: [number, string][] }[]
    }
    if (data.resultType !== 'matrix') throw new Error(`${promql}: a ${data.resultType}, not a matrix`)
    return data.result.map((r) => ({
      metric: r.metric,
      values: r.values.map(([t, v]) => [t, Number(v)] as [number, number]),
    }))
  }
  const targets = async () =>
    ((await api('/api/v1/targets?state=active')) as { activeTargets: ActiveTarget[] }).activeTargets
  try {
    await poll(
      async () => {
        if (proc.exitCode !== null) throw new Error('exited')
        return (await fetch(`${url}/-/ready`, { signal: AbortSignal.timeout(2000) })).status === 200
      },
      timeoutMs,
      'prometheus to be ready',
    )
  } catch (err) {
    await stop()
    throw new Error(`${(err as Error).message}; its output:\n${out}`)
  }
  return {
    url,
    query,
    samples,
    async scalar(promql, atS) {
      const r = await query(promql, atS)
      if (r.length > 1) throw new Error(`${promql}: ${r.length} samples, not one`)
      return r[0]?.value ?? null
    },
    targets,
    async scrapedSince(sinceMs, ms = 60_000) {
      let seen: ActiveTarget[] = []
      const describe = () =>
        seen.map((t) => `${t.scrapeUrl} ${t.health} ${t.lastScrape} ${t.lastError}`.trim()).join('\n  ')
      let first: Map<string, string> | null = null
      await poll(
        async () => {
          seen = await targets()
          if (seen.length === 0 || seen.some((t) => t.health !== 'up' || epochMs(t.lastScrape) < sinceMs)) return false
          first ??= new Map(seen.map((t) => [t.scrapeUrl, t.lastScrape]))
          return seen.every((t) => first!.has(t.scrapeUrl) && first!.get(t.scrapeUrl) !== t.lastScrape)
        },
        ms,
        `every target to be scraped since ${new Date(sinceMs).toISOString()}`,
      ).catch((err: Error) => {
        throw new Error(`${err.message}; the targets:\n  ${describe()}`)
      })
    },
    output: () => out,
    stop,
  }
}
