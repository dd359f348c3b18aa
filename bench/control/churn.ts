// The pieces of the config-change phase of `npm run bench:control`: the backends, the DestinationRule and
// VirtualService applied and deleted, and the steady keep-alive load through the sidecars whose failures are counted.
import * as http from 'node:http'
import type { AddressInfo } from 'node:net'

export interface ChurnResult {
  status: 'ok' | 'failed' | 'skipped'
  note?: string
  proxies: number
  cycles: number
  /** config changes made (an apply and a delete per cycle) */
  changes: number
  requests: number
  /** requests that did not get a 2xx (or got no response at all) */
  failed: number
  /** the first few failures: status and body, or the error */
  failures: string[]
  /** requests per second reached */
  rate: number
  /** POST (apply or delete) → every proxy SYNCED on every type, ms, over the changes */
  syncMs: { p50: number | null; p90: number | null; p100: number | null }
  seconds: number
}

export const VERSIONS = ['v1', 'v2', 'v3']

function destinationRule(subsets: string[]): string {
  return `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: reviews
spec:
  host: reviews
  subsets:
${subsets.map((s) => `  - name: ${s}\n    labels:\n      version: ${s}`).join('\n')}
`
}

function virtualService(split: [string, number][]): string {
  return `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts:
  - reviews
  http:
  - route:
${split.map(([s, w]) => `    - destination:\n        host: reviews\n        subset: ${s}\n      weight: ${w}`).join('\n')}
`
}

/** One change: manifests to apply, or (null) delete the VirtualService, then the DestinationRule. */
export type ChurnStep = string | null

/**
 * The cycles, in turn: new subsets and a VirtualService to one of them, then both deleted; a 50/50 split, a weight
 * shift to 0/100, a subset removed and another added along with the route to it, then both deleted.
 */
export const CHURN_CYCLES: ChurnStep[][] = [
  [`${destinationRule(['v1', 'v3'])}---\n${virtualService([['v3', 100]])}`, null],
  [
    `${destinationRule(['v1', 'v2'])}---\n${virtualService([
      ['v1', 50],
      ['v2', 50],
    ])}`,
    `${destinationRule(['v1', 'v2'])}---\n${virtualService([
      ['v1', 0],
      ['v2', 100],
    ])}`,
    `${destinationRule(['v2', 'v3'])}---\n${virtualService([['v3', 100]])}`,
    null,
  ],
]

/** One HTTP backend per version of reviews, answering its version. */
export async function startBackends(): Promise<{ ports: number[]; close(): Promise<void> }> {
  const servers = await Promise.all(
    VERSIONS.map(
      (v) =>
        new Promise<http.Server>((resolve) => {
          const s = http.createServer((_req, res) => res.end(v))
          s.keepAliveTimeout = 60_000
          s.listen(0, '127.0.0.1', () => resolve(s))
        }),
    ),
  )
  return {
    ports: servers.map((s) => (s.address() as AddressInfo).port),
    close: () =>
      Promise.all(
        servers.map(
          (s) =>
            new Promise<void>((r) => {
              s.closeAllConnections()
              s.close(() => r())
            }),
        ),
      ).then(() => undefined),
  }
}

/**
 * A steady load of `rate` req/s over `connections` keep-alive connections per sidecar (spread evenly), each
 * request asking the sidecar for reviews. `stop()` resolves with the counts once every request in flight ended.
 */
export function startLoad(
  outbound: number[],
  rate: number,
  connections: number,
): { stop(): Promise<{ requests: number; failed: number; failures: string[]; seconds: number }> } {
  const agents = outbound.map(() => new http.Agent({ keepAlive: true, maxSockets: connections }))
  let running = true
  let requests = 0
  let failed = 0
  const failures: string[] = []
  const fail = (why: string) => {
    failed++
    if (failures.length < 5) failures.push(why)
  }
  const one = (port: number, agent: http.Agent) =>
    new Promise<void>((resolve) => {
      const req = http.get(
        { host: '127.0.0.1', port, path: '/reviews/1', headers: { host: 'reviews:9080' }, agent },
        (res) => {
          let body = ''
          res.setEncoding('latin1')
          res.on('data', (c: string) => (body += c))
          res.on('end', () => {
            requests++
            const s = res.statusCode ?? 0
            if (s < 200 || s > 299) fail(`${s} ${body.trim().slice(0, 80)}`)
            resolve()
          })
        },
      )
      req.setTimeout(5000, () => req.destroy(new Error('no response in 5 s')))
      req.on('error', (e) => {
        requests++
        fail(e.message)
        resolve()
      })
    })
  const loops: Promise<void>[] = []
  const n = outbound.length * connections
  const interval = (1000 * n) / rate
  const t0 = performance.now()
  for (let i = 0; i < n; i++) {
    const p = i % outbound.length
    loops.push(
      (async () => {
        let next = performance.now() + (interval * i) / n
        while (running) {
          const wait = next - performance.now()
          if (wait > 0) await new Promise((r) => setTimeout(r, wait))
          else next = performance.now()
          next += interval
          if (running) await one(outbound[p]!, agents[p]!)
        }
      })(),
    )
  }
  return {
    async stop() {
      running = false
      await Promise.all(loops)
      for (const a of agents) a.destroy()
      return { requests, failed, failures, seconds: (performance.now() - t0) / 1000 }
    },
  }
}

/** Whether the sidecar on `port` routes reviews (one request, its own connection). */
export function routesReviews(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    http
      .get({ host: '127.0.0.1', port, path: '/reviews/1', headers: { host: 'reviews:9080' }, agent: false }, (res) => {
        res.resume()
        res.on('end', () => resolve(res.statusCode === 200))
      })
      .on('error', () => resolve(false))
  })
}

export function percentiles(values: number[]): ChurnResult['syncMs'] {
  const d = [...values].sort((a, b) => a - b)
  const at = (q: number) => (d.length === 0 ? null : Math.round(d[Math.max(0, Math.ceil(q * d.length) - 1)]!))
  return { p50: at(0.5), p90: at(0.9), p100: at(1) }
}

export function renderChurn(r: ChurnResult): string {
  if (r.status === 'skipped') return ''
  const lines = [
    `Config changes under load: ${r.proxies} loom proxy sidecar(s), ${r.cycles} cycles of DestinationRule + ` +
      'VirtualService applied and deleted (new subsets, weight shifts, removed subsets), a steady keep-alive load ' +
      'through the sidecars',
    `  requests ${r.requests} (${r.rate} req/s), failed ${r.failed}` +
      (r.failures.length > 0 ? ` (first: ${r.failures.join(' | ')})` : ''),
    `  change -> every proxy SYNCED: p50 ${r.syncMs.p50 ?? '-'} ms, p90 ${r.syncMs.p90 ?? '-'} ms, p100 ` +
      `${r.syncMs.p100 ?? '-'} ms over ${r.changes} changes; ${r.seconds} s`,
  ]
  if (r.status !== 'ok') lines.push(`  ${r.status.toUpperCase()}: ${r.note ?? ''}`)
  return lines.join('\n')
}
