/**
 * `loom tap <workload>`: the requests going through a workload's proxy, live, one line each, read from the control
 * plane's `/api/v1/tap/<namespace>/<workload>` (which reads the proxies' admin `/tap`).
 */
import { readFileSync } from 'node:fs'
import * as http from 'node:http'
import * as https from 'node:https'
import { parseArgs } from 'node:util'
import { ErrorCodes, LoomError } from '../core/errors.js'
import { type ApiTarget, caBundleFile, tlsHint } from './api-client.js'

export const TAP_USAGE = `Usage: loom tap <workload|deploy/name|pod/name> [-n NAMESPACE] [filters] [--max N] [-o json]

Streams the requests going through a workload's sidecar (or a gateway), live, as they finish: time, direction
(inbound to the workload, outbound from it), method, authority, path, status, latency, response flags, bytes
received and sent, and who called whom (SPIFFE identities with mTLS, else addresses). Reads the proxies' admin
endpoint through the control plane (LOOM_SERVER). Nothing is recorded while nobody taps.

The stream shows request paths (with their query strings): treat it as you treat access logs.

Options:
  -n, --namespace <ns>   the workload's namespace (default: default)
      --method <m>       only requests with this method (GET, POST, ...)
      --path <prefix>    only requests whose path starts with this
      --authority <a>    only requests to this authority (host or host:port)
      --to <service>     only requests to this destination service (ratings, ratings.default.svc.cluster.local)
      --direction <d>    inbound or outbound only
      --max <n>          stop after n requests
      --max-rps <n>      at most n requests a second (default 100; 0: no limit); the rest are counted as skipped
  -o, --output <fmt>     json: one JSON object a line (NDJSON), every field of the proxy's access log entry
      --server <url>     the control plane API (default: LOOM_SERVER or http://127.0.0.1:15080)
      --ca-bundle <file> trusted roots for an https:// server
  -h, --help             show this help

Examples:
  loom tap reviews-v2
  loom tap deploy/reviews-v2 --path /ratings --max 10
  loom tap productpage-v1 --direction outbound --to reviews -o json
  loom tap ingressgateway -n istio-system --method GET
`

const DEFAULT_SERVER = 'http://127.0.0.1:15080'

function fail(message: string, code = 1): never {
  throw Object.assign(new LoomError(ErrorCodes.USAGE, message), { exitCode: code })
}

/** `spiffe://<trust domain>/ns/default/sa/x` → `ns/default/sa/x`; other values as they are; `-` for none. */
function who(v: unknown): string {
  if (typeof v !== 'string' || v === '') return '-'
  return v.startsWith('spiffe://') ? v.slice(v.indexOf('/', 'spiffe://'.length) + 1) : v
}

function bytes(n: unknown): string {
  const v = typeof n === 'number' ? n : 0
  return v < 10_000 ? `${v}B` : v < 10_000_000 ? `${Math.round(v / 1024)}KiB` : `${Math.round(v / 1048576)}MiB`
}

function latency(ms: unknown): string {
  if (typeof ms !== 'number') return '-'
  return ms < 10 ? `${ms.toFixed(1)}ms` : ms < 10_000 ? `${Math.round(ms)}ms` : `${(ms / 1000).toFixed(1)}s`
}

/** One readable line for a tapped request. */
export function tapLine(e: Record<string, unknown>): string {
  const time = typeof e.start_time === 'string' ? e.start_time.slice(11, 23) : '-'
  const dir = e.direction === 'inbound' ? 'in ' : 'out'
  const status = e.response_code === 0 ? '---' : String(e.response_code)
  return [
    time,
    dir,
    String(e.method ?? '-').padEnd(6),
    status,
    latency(e.duration).padStart(7),
    `${bytes(e.bytes_received)}→${bytes(e.bytes_sent)}`.padEnd(12),
    String(e.response_flags ?? '-').padEnd(3),
    `${e.authority ?? '-'}${e.path ?? ''}`,
    `${who(e.source)} → ${who(e.destination)}`,
  ].join(' ')
}

function server(values: { server?: string | undefined; 'ca-bundle'?: string | undefined }): ApiTarget {
  const s = values.server ?? process.env.LOOM_SERVER ?? DEFAULT_SERVER
  const base = s.startsWith('http') ? s.replace(/\/$/, '') : `http://${s}`
  const caBundle = base.startsWith('https:') ? caBundleFile(values['ca-bundle']) : undefined
  return caBundle === undefined ? { base } : { base, caBundle }
}

function count(v: string | undefined, flag: string): string | undefined {
  if (v === undefined) return undefined
  if (!/^\d+$/.test(v)) fail(`${flag} must be a whole number, got "${v}"`, 2)
  return String(Number(v))
}

export async function tapCommand(argv: string[]): Promise<void> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      namespace: { type: 'string', short: 'n' },
      method: { type: 'string' },
      path: { type: 'string' },
      authority: { type: 'string' },
      to: { type: 'string' },
      direction: { type: 'string' },
      max: { type: 'string' },
      'max-rps': { type: 'string' },
      output: { type: 'string', short: 'o' },
      server: { type: 'string' },
      'ca-bundle': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  })
  if (values.help) return void process.stdout.write(TAP_USAGE)
  const workload = positionals[0]
  if (workload === undefined) fail(`name the workload to tap\n\n${TAP_USAGE}`, 2)
  if (values.direction !== undefined && values.direction !== 'inbound' && values.direction !== 'outbound')
    fail(`--direction must be inbound or outbound, got "${values.direction}"`, 2)
  if (values.output !== undefined && values.output !== 'json') fail(`-o must be json, got "${values.output}"`, 2)
  const q = new URLSearchParams()
  const set = (k: string, v: string | undefined) => {
    if (v !== undefined) q.set(k, v)
  }
  set('method', values.method)
  set('path', values.path)
  set('authority', values.authority)
  set('to', values.to?.replace(/^(svc|service)\//, ''))
  set('direction', values.direction)
  set('max', count(values.max, '--max'))
  q.set('max_rps', count(values['max-rps'], '--max-rps') ?? '100')
  const json = values.output === 'json'
  const target = server(values)
  const ns = values.namespace ?? 'default'
  const url = new URL(`${target.base}/api/v1/tap/${encodeURIComponent(ns)}/${encodeURIComponent(workload)}?${q}`)
  const tls = url.protocol === 'https:'
  const options: https.RequestOptions = {}
  if (tls && target.caBundle !== undefined) options.ca = readFileSync(target.caBundle, 'utf8')
  await new Promise<void>((resolve, reject) => {
    const req = (tls ? https : http).get(url, options, (res) => {
      res.setEncoding('utf8')
      if (res.statusCode !== 200) {
        let text = ''
        res.on('data', (d: string) => (text += d))
        res.on('end', () => {
          let message = text.trim()
          try {
            message = (JSON.parse(text) as { error: { message: string } }).error.message
          } catch {}
          reject(Object.assign(new LoomError(ErrorCodes.USAGE, message), { exitCode: 1 }))
        })
        return
      }
      process.stderr.write(`tapping ${workload} in ${ns} (Ctrl-C stops)\n`)
      let partial = ''
      res.on('data', (chunk: string) => {
        const lines = (partial + chunk).split('\n')
        partial = lines.pop()!
        for (const line of lines) {
          if (line === '') continue
          if (json) {
            process.stdout.write(`${line}\n`)
            continue
          }
          let e: Record<string, unknown>
          try {
            e = JSON.parse(line) as Record<string, unknown>
          } catch {
            continue
          }
          if (e.type === 'dropped')
            process.stdout.write(
              e.reason === 'max_rps'
                ? `(${e.count} requests skipped: over --max-rps)\n`
                : `(${e.count} requests dropped: the reader fell behind)\n`,
            )
          else if (e.type === 'request') process.stdout.write(`${tapLine(e)}\n`)
        }
      })
      res.on('end', () => resolve())
      res.on('error', reject)
    })
    req.on('error', (err: NodeJS.ErrnoException) => {
      const hint = tlsHint(err, target)
      reject(
        Object.assign(
          new LoomError(ErrorCodes.USAGE, `cannot reach the control plane at ${target.base}: ${hint ?? err.message}`),
          { exitCode: 1 },
        ),
      )
    })
    const stop = () => {
      req.destroy()
      resolve()
    }
    process.once('SIGINT', stop)
    process.once('SIGTERM', stop)
  })
}
