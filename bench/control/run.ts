// `npm run bench:control`: how fast a change reaches 1000 connected proxies, and what proxies cost in memory, on the
// control plane and in the proxy, in one run. See docs/benchmark-control.md for what is measured and how to read it.
//
//   node dist/bench/control/run.js [--quick] [--proxies N] [--timeout S]
//
// Layout on the 2-core machine: `loom control` runs on core 0 (taskset -c 0); this harness and the processes that
// simulate the proxies (bench/control/clients.ts: lean clients and a few real AdsClients, all on the wire, ACKing)
// run on both cores, the proxies at nice 19, so on core 0 they get only the time loom control leaves idle.
import { spawnSync } from 'node:child_process'
import { mkdirSync, mkdtempSync, readdirSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { TYPE_URL } from '../../src/xds/snapshot.js'
import {
  cpuSnapshot,
  foreignCpuSeconds,
  freePort,
  killAllSync,
  machineInfo,
  type Managed,
  rssSampler,
  sleep,
  startProcess,
  stopAll,
  stopProcess,
  treeCpuSeconds,
  treeRssKiB,
} from '../proc.js'
import { CALLS, type Expect, now, type StartOptions, type Summary, simNode } from './clients.js'
import {
  CHURN_CYCLES,
  type ChurnResult,
  percentiles,
  renderChurn,
  routesReviews,
  startBackends,
  startLoad,
  VERSIONS,
} from './churn.js'
import { Fleet, killFleetsSync } from './fleet.js'
import { serviceName, services, virtualService, wideServices } from './manifests.js'
import { type ReplicaRow, renderReplicas, replicasPhase } from './replicas.js'
import { type GoalRow, type MemoryPoint, type PropagationResult, render, type Spread } from './report.js'

const here = path.dirname(fileURLToPath(import.meta.url))
const root = path.resolve(here, '..', '..', '..')
const LOOM = path.join(root, 'bin', 'loom.js')
/** cores for loom control, and for this harness and the simulated proxies (taskset lists) */
const CONTROL_CPU = process.env.BENCH_CP_CONTROL_CPUS || '0'
const HARNESS_CPU = process.env.BENCH_CP_CLIENT_CPUS || '0,1'
/** how many cores a taskset list like "1", "0,1" or "0-1" names */
const cores = (list: string): number =>
  list.split(',').reduce((n, part) => {
    const [a, b] = part.split('-').map(Number)
    return n + (b === undefined ? 1 : b - (a ?? 0) + 1)
  }, 0)
const CLIENT_CORES = cores(HARNESS_CPU)
/** the goals (docs/benchmark-control.md), ms and MiB */
const GOALS = {
  scopedMs: 1000,
  fullMs: 5000,
  changeMs: 1000,
  connectMs: 10_000,
  controlMiBPerProxy: 0.5,
  proxyMiBPer1000Endpoints: 2,
  /** the simulated proxies' core must stay below this busy share, or they, not the control plane, set the pace */
  clientsBusyPct: 70,
}
/** a phase is over when every proxy matches and no client has handled a response for this long */
const QUIET_MS = 300

// ---- configuration ----

function positive(name: string, v: string | undefined, fallback: number): number {
  if (v === undefined || v === '') return fallback
  const n = Number(v)
  if (!(n > 0)) throw new Error(`${name}=${v}: expected a positive number`)
  return n
}

function parseArgs(argv: string[]): { quick: boolean; sotw: boolean; proxies?: number; timeoutS?: number } {
  const out: { quick: boolean; sotw: boolean; proxies?: number; timeoutS?: number } = { quick: false, sotw: false }
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i] ?? ''
    const value = (flag: string): string => (a === flag ? (argv[++i] ?? '') : a.slice(flag.length + 1))
    if (a === '--quick') out.quick = true
    else if (a === '--sotw') out.sotw = true
    else if (a === '--proxies' || a.startsWith('--proxies=')) out.proxies = positive('--proxies', value('--proxies'), 1)
    else if (a === '--timeout' || a.startsWith('--timeout='))
      out.timeoutS = positive('--timeout', value('--timeout'), 1)
    else if (a === '--help' || a === '-h') {
      process.stdout.write(
        'usage: node dist/bench/control/run.js [--quick] [--sotw] [--proxies N] [--timeout S]\n' +
          'env: BENCH_CP_PROXIES BENCH_CP_PROCESSES BENCH_CP_FULL_CLIENTS BENCH_CP_TIMEOUT BENCH_CP_ONLY BENCH_CP_REST_S\n' +
          '     BENCH_CP_CONTROL_CPUS' +
          ' BENCH_CP_CLIENT_CPUS BENCH_CP_CLIENT_NICE BENCH_CP_NODE_FLAGS BENCH_CP_HEAP_SNAPSHOT BENCH_KEEP_TMP=1\n' +
          '     (see docs/benchmark-control.md)\n',
      )
      process.exit(0)
    } else throw new Error(`unknown argument '${a}' (try --help)`)
  }
  return out
}

const args = parseArgs(process.argv.slice(2))
const cfg = {
  quick: args.quick,
  proxies: Math.round(
    args.proxies ?? positive('BENCH_CP_PROXIES', process.env.BENCH_CP_PROXIES, args.quick ? 100 : 1000),
  ),
  processes: Math.round(positive('BENCH_CP_PROCESSES', process.env.BENCH_CP_PROCESSES, 2)),
  /** the protocol of the simulated proxies (full-visibility phases; on-demand proxies always speak delta) */
  protocol: (args.sotw ? 'sotw' : 'delta') as 'sotw' | 'delta',
  /** how many simulated proxies decode every resource (real AdsClients; the others are lean) */
  fullClients: Math.round(
    process.env.BENCH_CP_FULL_CLIENTS === '0'
      ? 0
      : positive('BENCH_CP_FULL_CLIENTS', process.env.BENCH_CP_FULL_CLIENTS, 2),
  ),
  /** the longest the harness waits for one phase to converge, s */
  timeoutS: args.timeoutS ?? positive('BENCH_CP_TIMEOUT', process.env.BENCH_CP_TIMEOUT, 45),
  steps: [10, 100, 1000],
  /** the single-VirtualService change: this service's route timeout goes from 5 s to 7 s */
  changedService: 500,
  /** proxy memory: 10 services with this many endpoints each */
  endpointServices: 10,
  endpointsPerService: [0, 100, 1000],
  /** extra node flags for `loom control`, e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof" */
  controlNodeFlags: (process.env.BENCH_CP_NODE_FLAGS ?? '').split(/\s+/).filter(Boolean),
  /** a directory: write heap snapshots of loom control after the connect phase and after the change */
  heapSnapshotDir: process.env.BENCH_CP_HEAP_SNAPSHOT ?? '',
  /** how long a proxy is watched at rest after its config arrived, for its lowest RSS (phase 3) */
  restS: positive('BENCH_CP_REST_S', process.env.BENCH_CP_REST_S, 60),
  /** phases to run (BENCH_CP_ONLY=steps,connect,scoped,proxy,churn,replicas; default all) */
  only: (process.env.BENCH_CP_ONLY ?? 'steps,connect,scoped,proxy,churn,replicas').split(',').map((s) => s.trim()),
  /** apply -> ACK on the embedded store and on 2 replicas on etcd (bench/control/replicas.ts) */
  replicas: {
    proxies: Math.round(
      positive('BENCH_CP_REPLICA_PROXIES', process.env.BENCH_CP_REPLICA_PROXIES, args.quick ? 20 : 100),
    ),
    changes: Math.round(positive('BENCH_CP_REPLICA_CHANGES', process.env.BENCH_CP_REPLICA_CHANGES, 20)),
  },
  /** config changes under load: real sidecars, apply/delete cycles, steady req/s through the sidecars */
  churn: {
    proxies: Math.round(positive('BENCH_CP_CHURN_PROXIES', process.env.BENCH_CP_CHURN_PROXIES, 2)),
    cycles: Math.round(positive('BENCH_CP_CHURN_CYCLES', process.env.BENCH_CP_CHURN_CYCLES, 30)),
    rate: Math.round(positive('BENCH_CP_CHURN_RATE', process.env.BENCH_CP_CHURN_RATE, 500)),
  },
  keepTmp: process.env.BENCH_KEEP_TMP === '1',
}
const SERVICES = cfg.steps[cfg.steps.length - 1] ?? 1000

const log = (msg: string): void => {
  process.stderr.write(`${msg}\n`)
}
const errMsg = (e: unknown): string => (e instanceof Error ? e.message : String(e))

// ---- the control plane ----

interface Control {
  proc: Managed
  api: string
  xds: string
}

async function startControl(dataDir: string, extra: string[] = []): Promise<Control> {
  const proc = startProcess('control', 'taskset', [
    '-c',
    CONTROL_CPU,
    process.execPath,
    ...cfg.controlNodeFlags,
    ...(cfg.heapSnapshotDir
      ? ['--heapsnapshot-signal=SIGUSR2', `--diagnostic-dir=${path.resolve(cfg.heapSnapshotDir)}`]
      : []),
    LOOM,
    'control',
    '--data-dir',
    dataDir,
    '--api',
    '127.0.0.1:0',
    '--xds',
    '127.0.0.1:0',
    // the simulated proxies speak plain-text gRPC, as proxyless clients do
    '--xds-tls',
    'off',
    ...extra,
  ])
  const t0 = Date.now()
  while (Date.now() - t0 < 20_000) {
    if (proc.exit) throw new Error(`loom control exited (${proc.exit.code ?? proc.exit.signal}): ${proc.stderr()}`)
    for (const line of proc.stderr().split('\n')) {
      if (!line.includes('"msg":"ready"')) continue
      const ready = JSON.parse(line) as { api: string; xds: string }
      return { proc, api: ready.api, xds: ready.xds }
    }
    await sleep(50)
  }
  await stopProcess(proc)
  throw new Error(`loom control did not log "ready" within 20 s: ${proc.stderr()}`)
}

/**
 * BENCH_CP_HEAP_SNAPSHOT: has loom control write a heap snapshot (SIGUSR2) and waits until the file is complete.
 * Writing it stops the control plane for a while (proxies may reconnect): figures after it are disturbed.
 */
async function heapSnapshot(cp: Control, label: string): Promise<void> {
  if (!cfg.heapSnapshotDir) return
  const dir = path.resolve(cfg.heapSnapshotDir)
  mkdirSync(dir, { recursive: true })
  const before = new Set(readdirSync(dir))
  log(`heap snapshot of loom control (${label}) into ${dir} ...`)
  process.kill(cp.proc.pid, 'SIGUSR2')
  const t0 = Date.now()
  let last = -1
  let stable = 0
  while (Date.now() - t0 < 600_000 && stable < 4) {
    await sleep(500)
    const file = readdirSync(dir).find((f) => f.endsWith('.heapsnapshot') && !before.has(f))
    const size = file === undefined ? -1 : statSync(path.join(dir, file)).size
    stable = size > 0 && size === last ? stable + 1 : 0
    last = size
    if (stable === 4 && file !== undefined) {
      renameSync(path.join(dir, file), path.join(dir, `${label}-${file}`))
      log(`  ${label}-${file}: ${(size / 2 ** 20).toFixed(0)} MiB after ${((Date.now() - t0) / 1000).toFixed(0)} s`)
    }
  }
}

async function stopControl(cp: Control): Promise<void> {
  // a CPU profile is written at exit and can take a while with a big heap
  await stopProcess(cp.proc, cfg.controlNodeFlags.length > 0 ? 60_000 : 5000)
}

async function api(cp: Control, method: string, p: string, body?: string, timeoutMs = 60_000): Promise<unknown> {
  const res = await fetch(`http://${cp.api}${p}`, {
    method,
    body,
    headers: body === undefined ? {} : { 'content-type': 'application/yaml', 'x-loom-source': 'bench' },
    signal: AbortSignal.timeout(Math.ceil(timeoutMs)),
  })
  const text = await res.text()
  if (res.status !== 200) throw new Error(`${method} ${p}: HTTP ${res.status}: ${text.slice(0, 2000)}`)
  return JSON.parse(text) as unknown
}

/** POSTs manifests to /api/v1/apply; returns when the POST returned and how long it took. */
async function apply(cp: Control, yaml: string): Promise<{ at: number; ms: number; changed: number }> {
  const t0 = now()
  const body = (await api(cp, 'POST', '/api/v1/apply', yaml)) as { results: { action: string }[] }
  const at = now()
  return { at, ms: at - t0, changed: body.results.filter((r) => r.action !== 'unchanged').length }
}

interface ProxyStatus {
  nodeId: string
  perType: { typeUrl: string; state: string; writtenAt?: number }[]
}

/** Nodes the control plane sees connected and SYNCED on every type (at least LDS, CDS, EDS, RDS). */
async function syncedNodes(
  cp: Control,
  timeoutMs: number,
  all?: { nodes: ProxyStatus[]; ms: number },
): Promise<Map<string, ProxyStatus>> {
  const t0 = now()
  const nodes = (await api(cp, 'GET', '/api/v1/proxy-status', undefined, Math.max(1000, timeoutMs))) as ProxyStatus[]
  if (all !== undefined) {
    all.nodes = nodes
    all.ms = now() - t0
  }
  const out = new Map<string, ProxyStatus>()
  for (const n of nodes) if (n.perType.length >= 4 && n.perType.every((t) => t.state === 'SYNCED')) out.set(n.nodeId, n)
  return out
}

async function lastRebuild(cp: Control): Promise<{ ms: number; proxies: number } | undefined> {
  try {
    const r = (await api(cp, 'GET', '/debug/rebuild', undefined, 3000)) as { ms: number; proxies: number }
    return { ms: r.ms, proxies: r.proxies }
  } catch {
    return undefined
  }
}

/** RSS once things settled: 2 s of rest, then the median of 5 samples over 1 s (KiB). */
async function settledRssKiB(pid: number): Promise<number> {
  await sleep(2000)
  const samples: number[] = []
  for (let i = 0; i < 5; i++) {
    samples.push(treeRssKiB(pid))
    await sleep(250)
  }
  return samples.sort((a, b) => a - b)[2] ?? 0
}

/**
 * The lowest RSS over `ms` of rest (sampled every 500 ms, KiB). V8 sizes its young generation by the survival of
 * the last scavenges: a large config arriving grows it (to 3 x 16 MiB semi-space pages), and it shrinks at the first
 * scavenge that finds the allocation rate low, some 20-40 s later on an idle proxy. The lowest RSS at rest is the
 * memory the config itself holds; the settled figure above includes the young generation's transient size.
 */
async function restingRssKiB(pid: number, ms: number): Promise<number> {
  let low = treeRssKiB(pid)
  for (const end = Date.now() + ms; Date.now() < end; ) {
    await sleep(500)
    low = Math.min(low, treeRssKiB(pid))
  }
  return low
}

// ---- propagation ----

const fleetCpu = (f: Fleet): number => f.pids.reduce((a, p) => a + treeCpuSeconds(p), 0)

function spread(times: (number | null)[], from: number, total: number): Spread {
  const d = times
    .filter((t): t is number => t !== null)
    .map((t) => t - from)
    .sort((a, b) => a - b)
  // percentiles over every proxy: one that never got there counts as slower than all the others
  const at = (q: number): number | null => {
    const i = Math.max(0, Math.ceil(q * total) - 1)
    return i < d.length ? Math.round(d[i]! * 10) / 10 : null
  }
  return { p50: at(0.5), p90: at(0.9), p100: at(1), min: d.length > 0 ? Math.round(d[0]! * 10) / 10 : null }
}

/** Per proxy: when the control plane's last write to it since `t0` completed (the latest `writtenAt` over types). */
function writtenTimes(nodes: ProxyStatus[], t0: number): (number | null)[] {
  return nodes.map((n) => {
    let last: number | null = null
    for (const t of n.perType)
      if (t.writtenAt !== undefined && t.writtenAt >= t0) last = Math.max(last ?? 0, t.writtenAt)
    return last
  })
}

/** full visibility over delta: virtual hosts over VHDS, as Loom's sidecars take them (SotW: inline in RDS) */
const VHDS = (): boolean => cfg.protocol === 'delta'
/** where a virtual host's change shows: its VirtualHost (VHDS) or the route configuration holding it */
const VHOSTS = (): string => (VHDS() ? TYPE_URL.virtualHost : TYPE_URL.route)

const counts = (services: number): Record<string, number> => ({
  [TYPE_URL.cluster]: services,
  [TYPE_URL.endpoint]: services,
  ...(VHDS() ? { [TYPE_URL.virtualHost]: services } : {}),
})

/** Why the control plane is gone, in one line (an out-of-memory crash says so). */
function controlDeath(cp: Control): string {
  const e = cp.proc.exit
  const err = cp.proc.stderr()
  const oom = /heap out of memory|Reached heap limit/i.test(err)
  const last = err
    .trim()
    .split('\n')
    .filter((l) => !l.startsWith('{'))
    .slice(-3)
    .join(' | ')
  return `loom control exited (${e?.signal ?? `code ${e?.code}`})${oom ? ': JavaScript heap out of memory' : ''}${
    !oom && last ? `: ${last.slice(0, 300)}` : ''
  }`
}

/**
 * Runs one phase: `trigger` changes something (applies manifests, or starts the clients) and returns the time the
 * clock starts from; then waits until every proxy holds `expect` and the control plane reports them all SYNCED,
 * or the time limit passes, and collects per-proxy ACK times. A control plane that dies makes the phase 'failed'.
 */
async function phase(
  tag: string,
  r: PropagationResult,
  cp: Control,
  fleet: Fleet,
  expect: Expect,
  trigger: () => Promise<number>,
): Promise<PropagationResult> {
  const cpu0 = treeCpuSeconds(cp.proc.pid)
  const fcpu0 = fleetCpu(fleet)
  const peak = rssSampler(cp.proc.pid, 200)
  const others = cpuSnapshot()
  const start = now()
  let t0 = start
  let converged = false
  let candidate: { at: number; control: number; clients: number } | null = null
  let s: Summary | null = null
  const status = { nodes: [] as ProxyStatus[], ms: 0 }
  try {
    t0 = await trigger()
    const deadline = t0 + cfg.timeoutS * 1000
    let lastLog = now()
    let syncError = ''
    let syncedCount = -1
    for (;;) {
      s = await fleet.summary(expect)
      if (cp.proc.exit) throw new Error(controlDeath(cp))
      const t = now()
      if (s.matching === fleet.size && s.connected === fleet.size && t - s.lastResponseAt >= QUIET_MS) {
        // the proxies agree; the control plane must too (every node SYNCED on every type). CPU and time are
        // taken before asking it: proxy-status costs it CPU of its own.
        candidate = { at: t, control: treeCpuSeconds(cp.proc.pid), clients: fleetCpu(fleet) }
        const synced = await syncedNodes(cp, deadline - t, status).catch((e: unknown) => {
          syncError = errMsg(e)
          return new Map()
        })
        syncedCount = synced.size
        if (synced.size === fleet.size) {
          converged = true
          break
        }
      }
      if (t > deadline) break
      // progress every 2 s for the first 10 s, then every 5 s
      if (t - lastLog >= (t - t0 < 10_000 ? 2000 : 5000)) {
        const cpu = treeCpuSeconds(cp.proc.pid) - cpu0
        const rss = treeRssKiB(cp.proc.pid) / 1024
        log(
          `${tag}:   ${s.matching}/${fleet.size} proxies have it after ${((t - t0) / 1000).toFixed(1)} s ` +
            `(loom control: CPU ${cpu.toFixed(1)} s, RSS ${rss.toFixed(0)} MiB; ${s.connected} connected, ` +
            `${s.reconnects} reconnects${syncedCount >= 0 ? `, ${syncedCount} SYNCED` : ''}` +
            `${syncError ? `, proxy-status: ${syncError}` : ''})`,
        )
        lastLog = t
      }
      await sleep(100)
    }
    r.status = converged ? 'ok' : 'timeout'
    if (!converged) r.note = `${s.matching} of ${fleet.size} proxies had it when the ${cfg.timeoutS} s limit passed`
  } catch (e) {
    r.status = 'failed'
    r.note = errMsg(e)
    if (cp.proc.exit) r.note = controlDeath(cp)
    log(`${tag}:   FAILED: ${r.note}`)
  }
  const last = converged && candidate !== null ? candidate : null
  const end = last?.at ?? now()
  r.waitedS = Math.round(now() - t0) / 1000
  r.peakRssKiB = peak.stop()
  // a process that is gone has no CPU time to read any more
  if (last !== null || (!cp.proc.exit && fleet.alive)) {
    r.controlCpuS = Math.round(((last?.control ?? treeCpuSeconds(cp.proc.pid)) - cpu0) * 100) / 100
    r.clientsCpuS = Math.round(((last?.clients ?? fleetCpu(fleet)) - fcpu0) * 100) / 100
    // how busy each side was over the whole phase (apply included): which one set the pace
    const windowS = (end - start) / 1000
    r.controlBusyPct = Math.round((100 * r.controlCpuS) / windowS)
    r.clientsBusyPct = Math.round((100 * r.clientsCpuS) / (windowS * CLIENT_CORES))
  }
  // other people's processes on the same machine take cores from both sides
  r.otherCpuPct = Math.round((100 * foreignCpuSeconds(others, cpuSnapshot())) / ((now() - start) / 1000))
  try {
    const got = await fleet.collect(expect)
    s = await fleet.summary(expect)
    r.acked = got.done.filter((d) => d !== null).length
    r.ackMs = spread(got.done, t0, fleet.size)
    r.receivedMs = spread(got.received, t0, fleet.size)
    r.reconnects = s.reconnects
    r.nacks = s.nacks
    if (s.lean > 0) r.bytesPerProxy = Math.round(s.bytes / s.lean)
    if (Object.keys(s.warnings).length > 0) r.warnings = s.warnings
  } catch (e) {
    r.note = `${r.note ?? ''} (collecting from the clients failed: ${errMsg(e)})`.trim()
  }
  if (converged) {
    r.writtenMs = spread(writtenTimes(status.nodes, t0), t0, fleet.size)
    r.statusMs = Math.round(status.ms)
  }
  if (!cp.proc.exit) {
    r.rebuild = await lastRebuild(cp)
    r.controlRssKiB = treeRssKiB(cp.proc.pid)
  }
  const a = r.ackMs
  if (r.status !== 'failed') {
    log(
      `${tag}:   ${r.status === 'ok' ? 'done' : 'TIMED OUT'}: p50 ${a?.p50 ?? '-'} ms, p90 ${a?.p90 ?? '-'} ms, ` +
        `p100 ${a?.p100 ?? `> ${cfg.timeoutS * 1000}`} ms (last write p100 ${r.writtenMs?.p100 ?? '-'} ms); ` +
        `loom control CPU ${r.controlCpuS} s, clients CPU ` +
        `${r.clientsCpuS} s, rebuild ${r.rebuild?.ms ?? '-'} ms, RSS ${Math.round((r.controlRssKiB ?? 0) / 1024)} MiB`,
    )
  }
  return r
}

function row(key: string, label: string, services: number, scoped = false): PropagationResult {
  return {
    key,
    label,
    services,
    proxies: cfg.proxies,
    status: 'skipped',
    protocol: scoped ? 'delta' : cfg.protocol,
    ...(scoped ? { scoped } : {}),
  }
}

/** How the full-visibility phases start their clients. */
const fullOpts = (): StartOptions => ({
  protocol: cfg.protocol,
  scoped: false,
  vhds: VHDS(),
  services: SERVICES,
  full: cfg.fullClients,
})

// ---- phases ----

/**
 * Phase 1: 1000 proxies on an empty control plane, then 0 -> 10 -> 100 -> 1000 services, then one VirtualService
 * changed, and the control plane's RSS with them all (snapshots built by a rebuild).
 */
async function stepsPhase(dataDir: string): Promise<{ rows: PropagationResult[]; memory: MemoryPoint[] }> {
  const rows: PropagationResult[] = []
  const memory: MemoryPoint[] = []
  const tag = `[1/4] steps`
  log(`${tag}: starting loom control (empty) and ${cfg.proxies} proxies in ${cfg.processes} process(es)`)
  const cp = await startControl(dataDir)
  let fleet: Fleet | null = null
  try {
    fleet = await Fleet.open(cfg.proxies, cfg.processes)
    const f = fleet
    const connect = row('connect-empty', `connect ${cfg.proxies} proxies, 0 services`, 0)
    rows.push(connect)
    await phase(tag, connect, cp, f, { counts: counts(0), changed: [] }, async () => {
      const t0 = now()
      await f.start(`${cp.xds}`, fullOpts())
      return t0
    })
    let prev = 0
    let failed = connect.status !== 'ok'
    for (const n of cfg.steps) {
      const r = row(`step-${n}`, `${prev} -> ${n} services`, n)
      rows.push(r)
      prev = n
      if (failed) {
        r.note = 'skipped: the previous phase did not converge'
        continue
      }
      log(`${tag}: ${r.label} (one POST /api/v1/apply of ${2 * n} documents)`)
      await f.mark()
      const expect = { counts: counts(n), changed: [TYPE_URL.cluster, TYPE_URL.endpoint, VHOSTS()] }
      await phase(tag, r, cp, f, expect, async () => {
        const a = await apply(cp, services(0, n))
        r.applyMs = Math.round(a.ms * 10) / 10
        return a.at
      })
      failed = r.status !== 'ok'
    }
    const change = row('vs-change', `1 VirtualService changed, ${SERVICES} services`, SERVICES)
    rows.push(change)
    const last = rows[rows.length - 2]
    if (failed && last?.status === 'timeout' && !cp.proc.exit && f.alive) {
      // the change is measured from a settled state: give the proxies (unmeasured) time to get the services
      log(`${tag}: waiting up to ${cfg.timeoutS} s more for the proxies to get the ${SERVICES} services (not measured)`)
      const expect = { counts: counts(SERVICES), changed: [] }
      const deadline = now() + cfg.timeoutS * 1000
      while (now() < deadline) {
        const sum = await f.summary(expect)
        if (sum.matching === f.size && now() - sum.lastResponseAt >= QUIET_MS) {
          failed = false
          change.note = `measured after the ${last.label} step converged late`
          break
        }
        await sleep(500)
      }
    }
    if (failed) {
      change.note = `skipped: the proxies never all got the ${SERVICES} services`
    } else {
      log(`${tag}: ${change.label} (${serviceName(cfg.changedService)}: route timeout 5s -> 7s)`)
      await f.mark()
      await phase(tag, change, cp, f, { counts: counts(SERVICES), changed: [VHOSTS()] }, async () => {
        const a = await apply(cp, virtualService(cfg.changedService, 7))
        if (a.changed !== 1) throw new Error(`the VirtualService change was not applied (${a.changed} changed)`)
        change.applyMs = Math.round(a.ms * 10) / 10
        return a.at
      })
      if (change.status === 'ok') {
        const rss = await settledRssKiB(cp.proc.pid)
        memory.push({
          label: `${SERVICES} services, ${cfg.proxies} proxies, after a change`,
          value: cfg.proxies,
          rssKiB: rss,
        })
        log(`${tag}:   loom control RSS ${(rss / 1024).toFixed(1)} MiB with ${cfg.proxies} proxies`)
      }
      await heapSnapshot(cp, 'changed')
    }
  } finally {
    await fleet?.stop()
    await stopControl(cp)
  }
  return { rows, memory }
}

/**
 * Phase 2: a fresh control plane holding 1000 services: its RSS with no proxy, then 1000 proxies connecting from
 * scratch, and its RSS with them (snapshots built one by one as the proxies connect).
 */
async function connectPhase(dataDir: string): Promise<{ rows: PropagationResult[]; memory: MemoryPoint[] }> {
  const tag = '[2/4] connect'
  const connect = row('connect-full', `connect ${cfg.proxies} proxies, ${SERVICES} services`, SERVICES)
  const memory: MemoryPoint[] = []
  let cp = await startControl(dataDir)
  let fleet: Fleet | null = null
  try {
    const have = (await api(cp, 'GET', '/api/v1/resources?kind=ServiceEntry&namespace=default')) as {
      items: unknown[]
    }
    if (have.items.length !== SERVICES) {
      log(`${tag}: applying ${SERVICES} services first (the steps phase did not get there), then restarting`)
      await apply(cp, services(0, SERVICES))
      await stopControl(cp)
      cp = await startControl(dataDir)
    }
    log(`${tag}: loom control holds ${SERVICES} services; RSS with no proxy connected`)
    const idle = await settledRssKiB(cp.proc.pid)
    memory.push({ label: `${SERVICES} services, 0 proxies`, value: 0, rssKiB: idle })
    log(`${tag}:   ${(idle / 1024).toFixed(1)} MiB; connecting ${cfg.proxies} proxies from scratch`)
    fleet = await Fleet.open(cfg.proxies, cfg.processes)
    const f = fleet
    const all = [
      TYPE_URL.listener,
      TYPE_URL.cluster,
      TYPE_URL.endpoint,
      TYPE_URL.route,
      ...(VHDS() ? [TYPE_URL.virtualHost] : []),
    ]
    await phase(tag, connect, cp, f, { counts: counts(SERVICES), changed: all }, async () => {
      const t0 = now()
      await f.start(cp.xds, fullOpts())
      return t0
    })
    const busy = cp.proc.exit ? null : await settledRssKiB(cp.proc.pid)
    memory.push({
      label: `${SERVICES} services, ${cfg.proxies} proxies, connected`,
      value: cfg.proxies,
      rssKiB: busy,
      lowerBound: connect.status !== 'ok',
      ...(connect.status === 'ok'
        ? {}
        : {
            note:
              busy === null
                ? `loom control died (${((connect.peakRssKiB ?? 0) / 1024).toFixed(0)} MiB at most before)`
                : `only ${connect.acked ?? 0} proxies had their config yet: a lower bound`,
          }),
    })
    if (busy !== null) log(`${tag}:   loom control RSS ${(busy / 1024).toFixed(1)} MiB with ${cfg.proxies} proxies`)
    await heapSnapshot(cp, 'connected')
  } finally {
    await fleet?.stop()
    await stopControl(cp)
  }
  return { rows: [connect], memory }
}

/**
 * Scoped: on-demand proxies (delta xDS, node metadata LOOM_ON_DEMAND) that each call 10 services and ask for their
 * VirtualHosts by alias, as a Loom proxy does on a first request to a host. A fresh control plane holding 100
 * services; the proxies connect (most of their hosts do not exist yet and are answered "not found"), then 900 more
 * services are applied: how long until every proxy holds the VirtualHosts of all the services it calls, the clusters
 * they route to and those clusters' endpoints.
 */
async function scopedPhase(dataDir: string): Promise<PropagationResult[]> {
  const tag = '[scoped]'
  const first = cfg.steps[cfg.steps.length - 2] ?? 100
  const connect = row('scoped-connect', `on-demand: connect ${cfg.proxies} proxies, ${first} services`, first, true)
  const step = row('scoped-apply', `on-demand: ${first} -> ${SERVICES} services`, SERVICES, true)
  log(`${tag}: loom control with ${first} services; ${cfg.proxies} on-demand proxies calling ${CALLS} services each`)
  const cp = await startControl(dataDir)
  let fleet: Fleet | null = null
  try {
    await apply(cp, services(0, first))
    fleet = await Fleet.open(cfg.proxies, cfg.processes)
    const f = fleet
    const opts: StartOptions = {
      protocol: 'delta',
      scoped: true,
      vhds: false,
      services: SERVICES,
      full: cfg.fullClients,
    }
    await phase(tag, connect, cp, f, { counts: {}, changed: [] }, async () => {
      const t0 = now()
      await f.start(cp.xds, opts)
      return t0
    })
    if (connect.status !== 'ok') {
      step.note = 'skipped: the on-demand proxies did not all connect'
      return [connect, step]
    }
    // a control plane without VHDS ignores the type: it answers nothing, and the phase must say so, not hang
    const until = now() + 3000
    let sum = await f.summary({ counts: {}, changed: [] })
    while (sum.vhostResponses === 0 && now() < until) {
      await sleep(200)
      sum = await f.summary({ counts: {}, changed: [] })
    }
    if (sum.vhostResponses === 0) {
      const why = 'not supported by this control plane: no answer to any VirtualHost (VHDS) subscription'
      log(`${tag}:   ${why}`)
      connect.note = why
      step.status = 'unsupported'
      step.note = why
      return [connect, step]
    }
    connect.note = `${sum.vhostResponses} VirtualHost responses; ${sum.absent} aliases answered "not found"`
    log(`${tag}: ${step.label} (one POST /api/v1/apply of ${2 * SERVICES} documents)`)
    await f.mark()
    await phase(tag, step, cp, f, { counts: {}, changed: [], scoped: CALLS }, async () => {
      const a = await apply(cp, services(0, SERVICES))
      step.applyMs = Math.round(a.ms * 10) / 10
      return a.at
    })
  } finally {
    await fleet?.stop()
    await stopControl(cp)
  }
  return [connect, step]
}

/** Phase 3: a real `loom proxy --xds` with 10 services of 0, 100 and 1000 endpoints: its RSS. */
async function proxyMemoryPhase(dataDir: string): Promise<MemoryPoint[]> {
  const tag = '[3/4] proxy memory'
  const out: MemoryPoint[] = []
  const cp = await startControl(dataDir)
  try {
    for (const per of cfg.endpointsPerService) {
      const total = per * cfg.endpointServices
      await apply(cp, wideServices(cfg.endpointServices, per, 0))
      const node = `sidecar~10.1.0.1~bench-proxy-${per}.default~default.svc.cluster.local`
      const outbound = await freePort()
      const proxy = startProcess('proxy', process.execPath, [
        LOOM,
        'proxy',
        '--xds',
        cp.xds,
        '--node',
        node,
        '--ip',
        '10.1.0.1',
        '--labels',
        'app=bench-proxy',
        '--admin',
        '127.0.0.1:0',
        '--metadata',
        `OUTBOUND_PORT=${outbound}`,
      ])
      try {
        const t0 = Date.now()
        let synced = false
        while (Date.now() - t0 < cfg.timeoutS * 1000) {
          if (proxy.exit) throw new Error(`loom proxy exited (${proxy.exit.code}): ${proxy.stderr()}`)
          if ((await syncedNodes(cp, 5000)).has(node)) {
            synced = true
            break
          }
          await sleep(200)
        }
        if (!synced) throw new Error(`loom proxy did not get its config within ${cfg.timeoutS} s: ${proxy.stderr()}`)
        const rss = await settledRssKiB(proxy.pid)
        const resting = await restingRssKiB(proxy.pid, cfg.restS * 1000)
        const hosts = await proxyHosts(proxy)
        const note = hosts === total ? '' : `admin /clusters lists ${hosts} endpoints, expected ${total}`
        out.push({
          label: `${cfg.endpointServices} services, ${total} endpoints`,
          value: total,
          rssKiB: rss,
          restingKiB: resting,
          note,
        })
        log(
          `${tag}: ${total} endpoints: RSS ${(rss / 1024).toFixed(1)} MiB, at rest ${(resting / 1024).toFixed(1)} MiB` +
            `${note ? ` (${note})` : ''}`,
        )
      } finally {
        await stopProcess(proxy)
      }
    }
  } finally {
    await stopControl(cp)
  }
  return out
}

/**
 * Phase 4: config changes under load. Real `loom proxy` sidecars, backends for three versions of reviews, a steady
 * keep-alive load through the sidecars, and a DestinationRule + VirtualService pair applied and deleted
 * `cycles` times: how many requests fail, and how long each change takes to be ACKed by every proxy.
 */
async function churnPhase(dataDir: string): Promise<ChurnResult> {
  const tag = '[4/4] config changes'
  const { proxies, cycles, rate } = cfg.churn
  const r: ChurnResult = {
    status: 'failed',
    proxies,
    cycles,
    changes: 0,
    requests: 0,
    failed: 0,
    failures: [],
    rate: 0,
    syncMs: { p50: null, p90: null, p100: null },
    seconds: 0,
  }
  log(`${tag}: loom control, ${proxies} sidecar(s), ${cycles} apply/delete cycles under ${rate} req/s`)
  const cp = await startControl(dataDir)
  const backends = await startBackends()
  const sidecars: Managed[] = []
  const t0 = now()
  try {
    for (const [i, v] of VERSIONS.entries()) {
      await api(
        cp,
        'POST',
        '/api/v1/workloads',
        JSON.stringify({
          name: `reviews-${v}`,
          namespace: 'default',
          address: '127.0.0.1',
          ports: [{ name: 'http', number: backends.ports[i], servicePort: 9080 }],
          labels: { app: 'reviews', version: v },
          ttlSeconds: 3600,
        }),
      )
    }
    const outbound: number[] = []
    for (let i = 0; i < proxies; i++) {
      const port = await freePort()
      outbound.push(port)
      sidecars.push(
        startProcess('sidecar', process.execPath, [
          LOOM,
          'proxy',
          '--xds',
          cp.xds,
          '--node',
          `sidecar~127.0.0.1~churn-${i}.default~default.svc.cluster.local`,
          '--labels',
          'app=productpage',
          '--admin',
          '127.0.0.1:0',
          '--metadata',
          `OUTBOUND_PORT=${port}`,
        ]),
      )
    }
    const allSynced = async (revision: number): Promise<boolean> => {
      const rebuilt = (await api(cp, 'GET', '/debug/rebuild', undefined, 5000)) as { revision: number }
      return rebuilt.revision >= revision && (await syncedNodes(cp, 5000)).size === proxies
    }
    const revision = async () => ((await api(cp, 'GET', '/healthz')) as { revision: number }).revision
    const waitSynced = async (): Promise<void> => {
      const rev = await revision()
      const deadline = now() + cfg.timeoutS * 1000
      while (!(await allSynced(rev))) {
        for (const s of sidecars) if (s.exit) throw new Error(`a sidecar exited: ${s.stderr().slice(-500)}`)
        if (now() > deadline) throw new Error(`the proxies did not all sync within ${cfg.timeoutS} s`)
        await sleep(10)
      }
    }
    await waitSynced()
    for (const port of outbound) {
      const deadline = now() + cfg.timeoutS * 1000
      for (;;) {
        if (await routesReviews(port)) break
        if (now() > deadline) throw new Error('a sidecar does not route reviews')
        await sleep(50)
      }
    }
    const load = startLoad(outbound, rate, 4)
    const syncs: number[] = []
    let stopped: Awaited<ReturnType<ReturnType<typeof startLoad>['stop']>> | undefined
    try {
      await sleep(500)
      for (let c = 0; c < cycles; c++) {
        for (const step of CHURN_CYCLES[c % CHURN_CYCLES.length]!) {
          const t = now()
          if (step !== null) await api(cp, 'POST', '/api/v1/apply', step)
          else {
            // referrers first: the VirtualService before the DestinationRule defining its subsets
            await api(cp, 'DELETE', '/api/v1/resources/VirtualService/default/reviews')
            await api(cp, 'DELETE', '/api/v1/resources/DestinationRule/default/reviews')
          }
          await waitSynced()
          syncs.push(now() - t)
          await sleep(50)
        }
      }
      await sleep(500)
    } finally {
      stopped = await load.stop()
    }
    r.changes = syncs.length
    r.syncMs = percentiles(syncs)
    r.requests = stopped.requests
    r.failed = stopped.failed
    r.failures = stopped.failures
    r.rate = Math.round(stopped.requests / stopped.seconds)
    r.status = 'ok'
    log(
      `${tag}:   ${r.failed} of ${r.requests} requests failed (${r.rate} req/s); change -> all SYNCED p50 ` +
        `${r.syncMs.p50} ms, p100 ${r.syncMs.p100} ms`,
    )
  } catch (e) {
    r.note = errMsg(e)
    log(`${tag}:   FAILED: ${r.note}`)
  } finally {
    r.seconds = Math.round(now() - t0) / 1000
    await Promise.all(sidecars.map((s) => stopProcess(s)))
    await backends.close()
    await stopControl(cp)
  }
  return r
}

/** Endpoints the proxy holds, from its admin /clusters (read after the RSS sample: it allocates). */
async function proxyHosts(proxy: Managed): Promise<number | null> {
  const m = /"admin":"([^"]+)"/.exec(proxy.stderr())
  if (!m) return null
  const res = await fetch(`http://${m[1]}/clusters?format=json`, { signal: AbortSignal.timeout(10_000) })
  const body = (await res.json()) as { cluster_statuses: { host_statuses?: unknown[] }[] }
  return body.cluster_statuses.reduce((n, c) => n + (c.host_statuses?.length ?? 0), 0)
}

/** Who set the pace of a phase, and what loom control itself spent on it. */
function paceNote(r: PropagationResult | undefined): string {
  if (r?.controlCpuS === undefined) return 'no CPU figures'
  const own = `loom control used ${r.controlCpuS} s of CPU (rebuild ${r.rebuild?.ms ?? '-'} ms)`
  const c = r.controlBusyPct ?? 0
  const k = r.clientsBusyPct ?? 0
  const noise = (r.otherCpuPct ?? 0) > 20 ? `; other processes on the machine used ${r.otherCpuPct}% of a core` : ''
  if (k >= 75 && c < 75) return `${own}; the simulated proxies set the pace (their core ${k}% busy)${noise}`
  if (c >= 75) return `${own}; loom control set the pace (${c}% busy)${noise}`
  return `${own}${noise}`
}

/** Least-squares slope of RSS (settled, or at rest) over endpoints, MiB per 1000 endpoints. */
function slopeMiBPer1000(points: MemoryPoint[], at: 'rssKiB' | 'restingKiB'): number | null {
  const ps = points.filter((p) => typeof p[at] === 'number')
  if (ps.length < 2) return null
  const mx = ps.reduce((a, p) => a + p.value, 0) / ps.length
  const my = ps.reduce((a, p) => a + (p[at] ?? 0), 0) / ps.length
  let num = 0
  let den = 0
  for (const p of ps) {
    num += (p.value - mx) * ((p[at] ?? 0) - my)
    den += (p.value - mx) ** 2
  }
  return den === 0 ? null : ((num / den) * 1000) / 1024
}

/** The commit the run measured (with `+dirty` when src/ has uncommitted changes): src/ changes often. */
function gitCommit(): string {
  const head = spawnSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: root, encoding: 'utf8' }).stdout?.trim()
  const dirty = spawnSync('git', ['status', '--porcelain', '--', 'src'], { cwd: root, encoding: 'utf8' }).stdout?.trim()
  return head ? `${head}${dirty ? '+dirty' : ''}` : 'unknown'
}

// ---- main ----

let tmp = ''
function removeTmp(): void {
  if (tmp && !cfg.keepTmp) rmSync(tmp, { recursive: true, force: true })
}

async function shutdown(code: number): Promise<never> {
  const stopping = stopAll() // refuses new processes from here on
  killFleetsSync()
  await stopping
  removeTmp()
  process.exit(code)
}

for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
  process.once(sig, () => {
    log(`\n${sig}: stopping every process the benchmark started`)
    void shutdown(130)
  })
}
process.on('exit', () => {
  killFleetsSync()
  killAllSync()
})

async function main(): Promise<void> {
  const t0 = Date.now()
  const cpus = os.cpus()
  if (cpus.length < 2) log('warning: fewer than 2 CPUs; pinning to cores 0 and 1 will fail')
  // This harness and the client processes (they inherit the affinity) stay off the control plane's core.
  spawnSync('taskset', ['-a', '-p', '-c', HARNESS_CPU, String(process.pid)], { stdio: 'ignore' })
  log(
    `loom control bench: ${cfg.proxies} proxies in ${cfg.processes} process(es), steps ${cfg.steps.join(' -> ')} ` +
      `services, at most ${cfg.timeoutS} s per phase; loom control on core ${CONTROL_CPU}, ` +
      `clients on core ${HARNESS_CPU}`,
  )
  tmp = mkdtempSync(path.join(os.tmpdir(), 'loom-bench-control-'))
  const dataDir = path.join(tmp, 'data')
  const loadavgBefore = os.loadavg()

  const rows: PropagationResult[] = []
  const controlMemory: MemoryPoint[] = []
  const afterChange: MemoryPoint[] = []
  let proxyMemory: MemoryPoint[] = []
  let churn: ChurnResult | undefined
  const errors: string[] = []
  try {
    if (cfg.only.includes('steps')) {
      const r = await stepsPhase(dataDir)
      rows.push(...r.rows)
      afterChange.push(...r.memory)
    }
  } catch (e) {
    errors.push(`steps: ${errMsg(e)}`)
    log(`[1/4] steps: FAILED: ${errMsg(e)}`)
  }
  try {
    if (cfg.only.includes('connect')) {
      const r = await connectPhase(dataDir)
      rows.push(...r.rows)
      controlMemory.push(...r.memory)
    }
  } catch (e) {
    errors.push(`connect: ${errMsg(e)}`)
    log(`[2/4] connect: FAILED: ${errMsg(e)}`)
  }
  try {
    if (cfg.only.includes('scoped')) rows.push(...(await scopedPhase(path.join(tmp, 'data-scoped'))))
  } catch (e) {
    errors.push(`scoped: ${errMsg(e)}`)
    log(`[scoped]: FAILED: ${errMsg(e)}`)
  }
  try {
    if (cfg.only.includes('proxy')) proxyMemory = await proxyMemoryPhase(path.join(tmp, 'data-endpoints'))
  } catch (e) {
    errors.push(`proxy memory: ${errMsg(e)}`)
    log(`[3/4] proxy memory: FAILED: ${errMsg(e)}`)
  }
  try {
    if (cfg.only.includes('churn')) churn = await churnPhase(path.join(tmp, 'data-churn'))
  } catch (e) {
    errors.push(`config changes: ${errMsg(e)}`)
    log(`[4/4] config changes: FAILED: ${errMsg(e)}`)
  }

  let replicaRows: ReplicaRow[] = []
  try {
    if (cfg.only.includes('replicas'))
      replicaRows = await replicasPhase({
        tmp,
        proxies: cfg.replicas.proxies,
        changes: cfg.replicas.changes,
        timeoutS: cfg.timeoutS,
        start: startControl,
        stop: stopControl,
        log,
      })
  } catch (e) {
    errors.push(`replicas: ${errMsg(e)}`)
    log(`[extra] replicas: FAILED: ${errMsg(e)}`)
  }

  // ---- verdicts ----
  const at1000 = cfg.proxies === 1000
  const goals: GoalRow[] = []
  /** a propagation goal: the row's p100 apply -> ACK against `limitMs` (and 0 reconnects when asked) */
  const propagationGoal = (goal: string, key: string, limitMs: number, noReconnects = false): void => {
    const r = rows.find((x) => x.key === key)
    const target = `<= ${limitMs.toLocaleString('en-US')} ms${noReconnects ? ', 0 reconnects' : ''}`
    if (r === undefined || r.status === 'skipped' || r.status === 'unsupported' || r.status === 'failed') {
      goals.push({
        goal,
        measured: r === undefined ? 'not measured' : `${r.status.toUpperCase()}${r.note ? `: ${r.note}` : ''}`,
        target,
        pass: r?.status === 'failed' ? false : null,
      })
      return
    }
    const p100 = r.ackMs?.p100 ?? null
    const written = r.writtenMs?.p100
    const measured =
      p100 === null
        ? `> ${(cfg.timeoutS * 1000).toLocaleString('en-US')} ms (${r.acked ?? 0}/${r.proxies} ACKed)`
        : `${Math.round(p100).toLocaleString('en-US')} ms ACK, ${written === undefined || written === null ? '-' : Math.round(written).toLocaleString('en-US')} ms written` +
          (noReconnects ? `, ${r.reconnects ?? '-'} reconnects` : '')
    let pass: boolean | null = p100 !== null && p100 <= limitMs && (!noReconnects || r.reconnects === 0)
    if (p100 === null) pass = false
    const notes: string[] = [paceNote(r)]
    if ((r.clientsBusyPct ?? 0) > GOALS.clientsBusyPct)
      notes.push(
        `the simulated proxies' core was ${r.clientsBusyPct}% busy (> ${GOALS.clientsBusyPct}%): an upper bound`,
      )
    if (!at1000) {
      notes.push(`with ${cfg.proxies} proxies, not 1000`)
      pass = null
    }
    goals.push({ goal, measured, target, pass, note: notes.join('; ') })
  }
  propagationGoal('on-demand, 1000 services applied (each proxy calls 10)', 'scoped-apply', GOALS.scopedMs)
  propagationGoal('full visibility, 100 -> 1000 services', `step-${SERVICES}`, GOALS.fullMs)
  propagationGoal('full visibility, one VirtualService changed', 'vs-change', GOALS.changeMs)
  propagationGoal('connect storm: 1000 proxies, 1000 services', 'connect-full', GOALS.connectMs, true)

  // control plane memory per proxy: the fresh control plane with 1000 proxies connected, and the one that has
  // been through the steps and the change; the goal must hold for both (the larger counts)
  controlMemory.push(...afterChange)
  const idle = controlMemory.find((m) => m.value === 0)?.rssKiB ?? null
  const perProxy = controlMemory
    .filter((m) => m.value > 0 && m.rssKiB !== null && idle !== null)
    .map((m) => ({ m, mib: ((m.rssKiB ?? 0) - (idle ?? 0)) / 1024 / m.value }))
    .sort((a, b) => b.mib - a.mib)
  const worst = perProxy[0]
  goals.push({
    goal: 'control plane memory per connected proxy',
    measured: worst === undefined ? 'not measured' : `${worst.mib.toFixed(3)} MiB`,
    target: `<= ${GOALS.controlMiBPerProxy} MiB`,
    pass:
      worst === undefined
        ? null
        : worst.mib > GOALS.controlMiBPerProxy
          ? false
          : perProxy.some((p) => p.m.lowerBound)
            ? null
            : true,
    ...(worst === undefined
      ? {}
      : {
          note:
            `(RSS with ${cfg.proxies} proxies - RSS with none) / ${cfg.proxies}, the larger of: ` +
            perProxy
              .map(
                (p) => `${p.mib.toFixed(2)} MiB (${p.m.label.split(', ').pop()}${p.m.lowerBound ? ', at least' : ''})`,
              )
              .join(', '),
        }),
  })
  const slope = slopeMiBPer1000(proxyMemory, 'restingKiB')
  const settledSlope = slopeMiBPer1000(proxyMemory, 'rssKiB')
  goals.push({
    goal: 'proxy memory per 1000 endpoints',
    measured: slope === null ? 'not measured' : `${slope.toFixed(2)} MiB`,
    target: `<= ${GOALS.proxyMiBPer1000Endpoints} MiB`,
    pass: slope === null ? null : slope <= GOALS.proxyMiBPer1000Endpoints,
    ...(slope === null
      ? {}
      : {
          note:
            `least-squares slope of proxy RSS at rest (the lowest over ${cfg.restS} s) over 0, 1000 and 10000 ` +
            `endpoints; of the settled RSS (2 s after the ACK, young generation still grown): ` +
            `${settledSlope?.toFixed(2) ?? '-'} MiB`,
        }),
  })
  goals.push({
    goal: 'config changes under load, failed requests',
    measured:
      churn === undefined
        ? 'not measured'
        : churn.status === 'ok'
          ? `${churn.failed} of ${churn.requests}`
          : `FAILED: ${churn.note ?? ''}`,
    target: '0',
    pass: churn === undefined ? null : churn.status === 'ok' ? churn.failed === 0 : false,
  })

  const report = {
    timestamp: new Date(t0).toISOString(),
    elapsedSeconds: Math.round((Date.now() - t0) / 1000),
    machine: machineInfo(loadavgBefore),
    node: process.version,
    commit: gitCommit(),
    config: { ...cfg, controlCpu: CONTROL_CPU, clientsCpu: HARNESS_CPU, quietMs: QUIET_MS, proxyNode: simNode(0) },
    goals: GOALS,
    propagation: rows,
    controlMemory,
    controlMiBPerProxy: worst?.mib ?? null,
    proxyMemory,
    proxyMiBPer1000Endpoints: slope,
    proxyMiBPer1000EndpointsSettled: settledSlope,
    configChanges: churn ?? null,
    replicas: replicaRows,
    verdicts: goals,
    errors,
  }
  const dir = path.join(root, 'bench', 'results')
  mkdirSync(dir, { recursive: true })
  const stamp = report.timestamp.replace(/[:.]/g, '-')
  const json = `${JSON.stringify(report, null, 2)}\n`
  writeFileSync(path.join(dir, `control-${stamp}.json`), json)
  writeFileSync(path.join(dir, 'control-latest.json'), json)

  process.stdout.write(`\n${render(rows, controlMemory, proxyMemory, goals, cfg.timeoutS)}\n\n`)
  if (churn) process.stdout.write(`${renderChurn(churn)}\n\n`)
  if (replicaRows.length > 0) process.stdout.write(`${renderReplicas(replicaRows)}\n\n`)
  for (const e of errors) process.stdout.write(`error: ${e}\n`)
  process.stdout.write(
    `loom ${report.commit}; node ${process.version}; load average before ` +
      `${loadavgBefore.map((n) => n.toFixed(2)).join(' ')}, took ${report.elapsedSeconds} s; results in ` +
      `bench/results/control-${stamp}.json and bench/results/control-latest.json\n`,
  )
  removeTmp()
}

main().catch(async (e) => {
  log(`bench failed: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`)
  await shutdown(1)
})
