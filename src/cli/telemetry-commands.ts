/**
 * `loom stat`, `loom top`, `loom edges` and `loom graph`: the mesh's traffic as the control plane gathers it from
 * its proxies' metrics (GET /api/v1/stats, /top, /edges, /graph).
 */
import { parseArgs } from 'node:util'
import type { Graph, GraphEdge, GraphNode } from '../control/telemetry/graph.js'
import type { EdgeRow, PathRow, StatRow } from '../control/telemetry/views.js'
import { CA_BUNDLE_FLAG, call, fail, server } from './control-commands.js'
import { table } from './table.js'

const COMMON = `Common options:
  -n, --namespace <ns>   only this namespace
  -A, --all-namespaces   every namespace
      --window <d>       the time the numbers cover, back from now: 30s, 1m (default), 5m, up to the control
                         plane's --telemetry-retention (10m by default)
  -o, --output <fmt>     table (default) or json
      --server <URL>     the control plane's API (default LOOM_SERVER or 127.0.0.1:15080)
      --ca-bundle <file> the trust bundle for an https:// API
  -h, --help`

export const STAT_USAGE = `Usage: loom stat <deployment|service|namespace>[/<name>] [name] [-n ns | -A] [--window 1m] [-o table|json] [-w]

Traffic per workload (deployment), service or namespace over the window, from the Istio metrics the control plane
reads from every proxy (as 'linkerd viz stat'): MESHED (instances with a connected sidecar / all), SUCCESS (share
of responses that are not 5xx), RPS, LATENCY_P50/P95/P99 (histogram quantiles), TCP_CONN (open TCP connections,
TCP services only) and MTLS (share of requests over mutual TLS). Numbers are what the destination's sidecar saw,
or its clients' sidecars when it has none. A service shows a row per version under its own.

Short names: deploy, workload, svc, ns. Rows of resources without traffic show '-'.

${COMMON}
  -w, --watch            print again at every gathering interval (Ctrl-C stops)

Examples:
  loom stat deploy
  loom stat deploy/reviews-v2 --window 5m
  loom stat service reviews
  loom stat ns -A -o json
`

export const TOP_USAGE = `Usage: loom top [service] [-n ns | -A] [--window 1m] [--limit 20] [--once] [-o table|json]

The busiest request paths, refreshing live (as 'linkerd viz top'): every sidecar and gateway keeps a bounded table
of the paths it sends most (Space-Saving, 100 paths; admin /stats/paths), the control plane reads them with the
metrics and counts over the window. SOURCE is the workload that sent the requests, DESTINATION the service (and
subset) they went to; with a service, only the paths sent to it. COUNT is the requests in the window, LATENCY_AVG
their mean duration.

${COMMON}
      --limit <n>        rows to show (default 20)
      --once             print once and exit (for scripts); without it the view refreshes until Ctrl-C

Examples:
  loom top
  loom top reviews --window 5m
  loom top --once -o json
`

export const EDGES_USAGE = `Usage: loom edges [-n ns | -A] [--window 1m] [-o table|json] [-w]

Who called whom over the window, with the identities their mutual TLS carried (as 'linkerd viz edges'): SRC and
DST workloads and namespaces, SECURED (every request over mutual TLS: yes; none: no; else the share), CLIENT_ID and
SERVER_ID (the SPIFFE ids of the two ends), RPS and SUCCESS. Every namespace unless -n.

${COMMON}
  -w, --watch            print again at every gathering interval (Ctrl-C stops)

Examples:
  loom edges
  loom edges -n default -o json
`

export const GRAPH_USAGE = `Usage: loom graph [-n ns | -A] [--window 1m] [-o text|dot|json]

The service graph over the window: each workload and the workloads it called, with the service, requests per
second, success and mTLS share of each edge. -o dot writes Graphviz DOT (edges that failed requests in red, plain
text ones dashed): loom graph -o dot | dot -Tsvg > mesh.svg. -o json has what the dashboard's graph draws: every
workload known (traffic or not), idle edges, latency and identities per edge, and the same traffic per service.

${COMMON.replace('table (default) or json', 'text (default), dot or json')}

Examples:
  loom graph
  loom graph -o dot > mesh.dot
`

const FLAGS = {
  namespace: { type: 'string', short: 'n' },
  'all-namespaces': { type: 'boolean', short: 'A' },
  window: { type: 'string' },
  output: { type: 'string', short: 'o' },
  server: { type: 'string' },
  ...CA_BUNDLE_FLAG,
  help: { type: 'boolean', short: 'h' },
} as const

interface About {
  window: string
  gathering: { intervalSeconds: number; rounds: number; proxies: number; failing: string[] }
}

/** GET one view; the API's error message becomes the command's. */
async function view<T>(values: { server?: string; 'ca-bundle'?: string }, path: string): Promise<T & About> {
  const { status, json } = await call(server(values), 'GET', path)
  if (status !== 200) fail((json as { error?: { message?: string } }).error?.message ?? `HTTP ${status}`)
  return json as T & About
}

function query(params: Record<string, string | undefined>): string {
  const q = new URLSearchParams()
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== '') q.set(k, v)
  const s = q.toString()
  return s === '' ? '' : `?${s}`
}

/** What to say when a view has no traffic to show. */
function noTraffic(about: About, what: string): string {
  if (about.gathering.rounds === 0)
    return `No traffic yet: the control plane has not read its proxies' metrics yet (every ${about.gathering.intervalSeconds}s).\n`
  const failing =
    about.gathering.failing.length > 0
      ? ` (${about.gathering.failing.length} cannot be read: GET /api/v1/telemetry)`
      : ''
  return `No traffic in the last ${about.window}${what} (metrics of ${about.gathering.proxies} proxies, read every ${about.gathering.intervalSeconds}s${failing}).\n`
}

export function percent(v: number | null, digits = 2): string {
  return v === null ? '-' : `${(v * 100).toFixed(digits)}%`
}

export function formatRps(v: number): string {
  return `${v >= 10 ? v.toFixed(1) : v.toFixed(2)}rps`
}

export function formatMs(v: number | null | undefined): string {
  if (v === null || v === undefined || Number.isNaN(v)) return '-'
  if (v >= 1000) return `${(v / 1000).toFixed(v >= 10_000 ? 0 : 1)}s`
  if (v >= 10) return `${Math.round(v)}ms`
  return `${Number(v.toFixed(1))}ms`
}

/** Runs `once` now and, with watch, again every interval, clearing a terminal in between. */
async function repeat(watch: boolean, once: () => Promise<{ text: string; intervalSeconds: number }>): Promise<void> {
  for (;;) {
    const { text, intervalSeconds } = await once()
    if (!watch) return void process.stdout.write(text)
    if (process.stdout.isTTY) process.stdout.write('\x1b[H\x1b[2J')
    else process.stdout.write(`--- ${new Date().toISOString()}\n`)
    process.stdout.write(text)
    await new Promise((r) => setTimeout(r, Math.max(1, intervalSeconds) * 1000))
  }
}

function outputOf(o: string | undefined, allowed: string[]): string {
  const out = o ?? allowed[0]!
  if (!allowed.includes(out)) fail(`-o must be ${allowed.join(', ')}; not "${out}"`, 2)
  return out
}

const KINDS: Record<string, 'deployment' | 'service' | 'namespace'> = {
  deploy: 'deployment',
  deployment: 'deployment',
  deployments: 'deployment',
  workload: 'deployment',
  workloads: 'deployment',
  wl: 'deployment',
  svc: 'service',
  service: 'service',
  services: 'service',
  ns: 'namespace',
  namespace: 'namespace',
  namespaces: 'namespace',
}

export async function statCommand(argv: string[]): Promise<void> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: { ...FLAGS, watch: { type: 'boolean', short: 'w' } },
  })
  if (values.help) return void process.stdout.write(STAT_USAGE)
  const [first, second] = positionals
  if (first === undefined) fail(`a resource kind is required: deploy, svc or ns\n\n${STAT_USAGE}`, 2)
  const [kindText, slashName] = first.split('/', 2) as [string, string | undefined]
  const kind = KINDS[kindText.toLowerCase()]
  if (kind === undefined) fail(`unknown resource kind "${kindText}": deploy, svc or ns\n\n${STAT_USAGE}`, 2)
  const name = slashName ?? second
  const out = outputOf(values.output, ['table', 'json'])
  const all = values['all-namespaces'] === true || (kind === 'namespace' && values.namespace === undefined)
  const namespace = all ? undefined : kind === 'namespace' ? values.namespace : (values.namespace ?? 'default')
  const path = `/api/v1/stats${query({ resource: kind, name, namespace, window: values.window })}`
  await repeat(values.watch === true, async () => {
    const r = await view<{ rows: StatRow[] }>(values, path)
    return {
      text: out === 'json' ? `${JSON.stringify(r, null, 2)}\n` : statText(r, kind, all, name),
      intervalSeconds: r.gathering.intervalSeconds,
    }
  })
}

/** The `loom stat` table. */
export function statText(r: { rows: StatRow[] } & About, kind: string, all: boolean, name?: string): string {
  const what = `${kind === 'deployment' ? ' to deployments' : kind === 'service' ? ' to services' : ''}${name === undefined ? '' : ` named ${name}`}`
  if (r.rows.length === 0) return noTraffic(r, what)
  const service = kind === 'service'
  const header = [
    ...(all && kind !== 'namespace' ? ['NAMESPACE'] : []),
    'NAME',
    ...(service ? ['VERSION'] : []),
    'MESHED',
    'SUCCESS',
    'RPS',
    'LATENCY_P50',
    'LATENCY_P95',
    'LATENCY_P99',
    'TCP_CONN',
    'MTLS',
  ]
  const rows = r.rows.map((x) => {
    const idle = x.requests === 0
    return [
      ...(all && kind !== 'namespace' ? [x.namespace] : []),
      x.name,
      ...(service ? [x.version === '' ? '*' : x.version] : []),
      x.meshed === null ? '-' : `${x.meshed.meshed}/${x.meshed.total}`,
      idle ? '-' : percent(x.successRate),
      idle ? '-' : formatRps(x.rps),
      formatMs(x.latencyMs?.p50),
      formatMs(x.latencyMs?.p95),
      formatMs(x.latencyMs?.p99),
      x.tcpConnections === null ? '-' : String(x.tcpConnections),
      idle ? '-' : percent(x.mtlsShare, 0),
    ]
  })
  let text = table([header, ...rows], 3)
  if (r.rows.every((x) => x.requests === 0)) text += noTraffic(r, what)
  return text
}

export async function topCommand(argv: string[]): Promise<void> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: { ...FLAGS, limit: { type: 'string' }, once: { type: 'boolean' } },
  })
  if (values.help) return void process.stdout.write(TOP_USAGE)
  const out = outputOf(values.output, ['table', 'json'])
  const service = positionals[0]?.replace(/^(svc|service)\//, '')
  const namespace = values['all-namespaces'] ? undefined : values.namespace
  const path = `/api/v1/top${query({ namespace, service, window: values.window, limit: values.limit })}`
  await repeat(values.once !== true, async () => {
    const r = await view<{ paths: PathRow[] }>(values, path)
    return {
      text: out === 'json' ? `${JSON.stringify(r, null, 2)}\n` : topText(r, service),
      intervalSeconds: r.gathering.intervalSeconds,
    }
  })
}

export function topText(r: { paths: PathRow[] } & About, service?: string): string {
  if (r.paths.length === 0) return noTraffic(r, service === undefined ? '' : ` to ${service}`)
  return table(
    [
      ['SOURCE', 'DESTINATION', 'METHOD', 'PATH', 'COUNT', 'RPS', 'SUCCESS', 'LATENCY_AVG'],
      ...r.paths.map((p) => [
        p.source.workload,
        `${p.destination.service}${p.destination.subset === '' ? '' : `/${p.destination.subset}`}`,
        p.method,
        p.path,
        String(Math.round(p.requests)),
        formatRps(p.rps),
        percent(p.successRate),
        formatMs(p.latencyMsAvg),
      ]),
    ],
    3,
  )
}

export async function edgesCommand(argv: string[]): Promise<void> {
  const { values } = parseArgs({ args: argv, options: { ...FLAGS, watch: { type: 'boolean', short: 'w' } } })
  if (values.help) return void process.stdout.write(EDGES_USAGE)
  const out = outputOf(values.output, ['table', 'json'])
  const namespace = values['all-namespaces'] ? undefined : values.namespace
  const path = `/api/v1/edges${query({ namespace, window: values.window })}`
  await repeat(values.watch === true, async () => {
    const r = await view<{ edges: EdgeRow[] }>(values, path)
    return {
      text: out === 'json' ? `${JSON.stringify(r, null, 2)}\n` : edgesText(r),
      intervalSeconds: r.gathering.intervalSeconds,
    }
  })
}

/** yes / no / the share of mTLS requests. */
export function secured(share: number | null): string {
  if (share === null) return '-'
  if (share >= 1) return 'yes'
  if (share <= 0) return 'no'
  return `${Math.round(share * 100)}%`
}

export function edgesText(r: { edges: EdgeRow[] } & About): string {
  if (r.edges.length === 0) return noTraffic(r, '')
  return table(
    [
      ['SRC', 'DST', 'SRC_NS', 'DST_NS', 'SECURED', 'CLIENT_ID', 'SERVER_ID', 'RPS', 'SUCCESS'],
      ...r.edges.map((e) => [
        e.source.workload,
        e.destination.workload,
        e.source.namespace,
        e.destination.namespace,
        secured(e.mtlsShare),
        e.source.principal,
        e.destination.principal,
        formatRps(e.rps),
        percent(e.successRate),
      ]),
    ],
    3,
  )
}

export async function graphCommand(argv: string[]): Promise<void> {
  const { values } = parseArgs({ args: argv, options: FLAGS })
  if (values.help) return void process.stdout.write(GRAPH_USAGE)
  const out = outputOf(values.output, ['text', 'dot', 'json'])
  const namespace = values['all-namespaces'] ? undefined : values.namespace
  const r = await view<Graph>(values, `/api/v1/graph${query({ namespace, window: values.window })}`)
  if (out === 'json') return void process.stdout.write(`${JSON.stringify(r, null, 2)}\n`)
  const g = { ...r, ...withTraffic(r) }
  if (out === 'dot') {
    // an empty graph is still a graph for whatever reads it; the reason goes to stderr
    if (g.edges.length === 0) process.stderr.write(noTraffic(g, ''))
    return void process.stdout.write(graphDot(g))
  }
  process.stdout.write(graphText(g))
}

/** What the text and DOT forms show: the workloads and their edges with traffic in the window. */
export interface WorkloadGraph {
  nodes: Pick<GraphNode, 'id' | 'workload' | 'namespace'>[]
  edges: Pick<GraphEdge, 'from' | 'to' | 'service' | 'requests' | 'rps' | 'successRate' | 'mtlsShare'>[]
}

/** The API's graph without its idle edges and the workloads that had no traffic (the dashboard shows those). */
export function withTraffic(g: WorkloadGraph): WorkloadGraph {
  const edges = g.edges.filter((e) => e.requests > 0)
  const ends = new Set(edges.flatMap((e) => [e.from, e.to]))
  return { nodes: g.nodes.filter((n) => ends.has(n.id)), edges }
}

export function graphText(g: WorkloadGraph & About): string {
  if (g.edges.length === 0) return noTraffic(g, '')
  const rows: string[][] = [['WORKLOAD -> CALLED', 'SERVICE', 'RPS', 'SUCCESS', 'MTLS']]
  for (const n of g.nodes) {
    const out = g.edges.filter((e) => e.from === n.id)
    if (out.length === 0) continue
    rows.push([n.id])
    for (const e of out)
      rows.push([`  -> ${e.to}`, e.service, formatRps(e.rps), percent(e.successRate), percent(e.mtlsShare, 0)])
  }
  const leaves = g.nodes.filter((n) => !g.edges.some((e) => e.from === n.id)).map((n) => n.id)
  return `${table(rows)}${leaves.length > 0 ? `(called only: ${leaves.join(', ')})\n` : ''}`
}

function dotId(s: string): string {
  return `"${s.replace(/\\/g, '\\\\').replace(/"/g, '\\"')}"`
}

/** A DOT label of several lines (Graphviz's `\n` between them). */
function dotLabel(...lines: string[]): string {
  return `"${lines.map((l) => dotId(l).slice(1, -1)).join('\\n')}"`
}

/** Graphviz DOT: workloads as boxes, an edge per caller and callee labelled with service, rps and success. */
export function graphDot(g: WorkloadGraph & About): string {
  const lines = [
    'digraph loom {',
    `  label=${dotId(`loom graph, last ${g.window}`)};`,
    '  rankdir=LR;',
    '  node [shape=box, fontname="Helvetica"];',
    '  edge [fontname="Helvetica", fontsize=10];',
  ]
  for (const n of g.nodes) lines.push(`  ${dotId(n.id)} [label=${dotLabel(n.workload, n.namespace)}];`)
  for (const e of g.edges) {
    const attrs = [
      `label=${dotLabel(e.service, `${formatRps(e.rps)}, ${percent(e.successRate)} ok`)}`,
      ...(e.successRate !== null && e.successRate < 1 ? ['color="red"', 'fontcolor="red"'] : []),
      ...(e.mtlsShare !== null && e.mtlsShare < 1 ? ['style="dashed"'] : []),
    ]
    lines.push(`  ${dotId(e.from)} -> ${dotId(e.to)} [${attrs.join(', ')}];`)
  }
  lines.push('}')
  return `${lines.join('\n')}\n`
}
