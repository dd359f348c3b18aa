// `npm run bench`: the same workload through Loom and the reference proxies, in one run.
// See docs/benchmark.md for what is measured and how to read the output.
//
//   node dist/bench/run.js [--quick] [--only loom,nginx,...]
//
// Every target is started (idle RSS) first; then throughput (wrk) in rounds and latency (open loop) in
// rounds, the targets taking turns within each round (see "phases" below).
//
// Layout on the 2-core machine: the proxy under test runs on core 0 (taskset -c 0); the backend nginx,
// wrk, the open-loop generator and this harness run on core 1.
import { spawnSync } from 'node:child_process'
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import {
  BODY_1K,
  backendNginx,
  haproxyConfig,
  loomBootstrap,
  type LoomOptions,
  loomMtlsInbound,
  loomMtlsOutbound,
  type MtlsPairConfig,
  nginxMtlsInbound,
  nginxMtlsOutbound,
  POST_BYTES,
  POST_LUA,
  proxyNginx,
} from './configs.js'
import { SERVER_HOST, SERVER_ID, writeMtlsCerts } from './mtls-certs.js'
import type { OpenLoopConfig, OpenLoopResult } from './openloop.js'
import {
  coreLoad,
  machineInfo,
  coreTimes,
  cpuSnapshot,
  foreignCpuSeconds,
  freePort,
  httpRequest,
  isShuttingDown,
  killAllSync,
  type Managed,
  pauseProcess,
  resumeProcess,
  rssSampler,
  runToEnd,
  sleep,
  startProcess,
  stopAll,
  stopProcess,
  treeCpuSeconds,
  treeRssKiB,
  waitReady,
} from './proc.js'
import {
  addedUs,
  type CoreLoad,
  METHODS,
  type Method,
  type RatioRow,
  render,
  summarizeRounds,
  summarizeThroughput,
  type TargetResult,
  type WrkRun,
} from './report.js'
import { runWrk, wrkErrors } from './wrk.js'

const here = path.dirname(fileURLToPath(import.meta.url))
const root = path.resolve(here, '..', '..')
const PROXY_CPU = '0'
/** other processes using more than this % of a core during a phase make it "disturbed" */
const NOISY_PCT = 10
const LOAD_CPU = '1'

// ---- configuration ----

function seconds(name: string, fallback: number): number {
  const v = process.env[name]
  if (v === undefined || v === '') return fallback
  const m = /^(\d+(?:\.\d+)?)(ms|s|m)?$/.exec(v.trim())
  if (!m) throw new Error(`${name}=${v}: expected a duration like 10, 10s, 500ms or 1m`)
  const n = Number(m[1])
  return m[2] === 'ms' ? n / 1000 : m[2] === 'm' ? n * 60 : n
}

function integer(name: string, fallback: number): number {
  const v = process.env[name]
  if (v === undefined || v === '') return fallback
  const n = Number.parseInt(v, 10)
  if (!(n > 0)) throw new Error(`${name}=${v}: expected a positive integer`)
  return n
}

const TARGETS = [
  'direct',
  'loom',
  'resilience',
  'loom-telemetry',
  'nginx',
  'haproxy',
  'floor',
  'fastify',
  'loom-mtls',
  'loom-mtls-h2',
  'nginx-mtls',
] as const
type TargetName = (typeof TARGETS)[number]
/**
 * Targets only run when named: the Loom pair with HTTP/2 between the sidecars (what h2UpgradePolicy: UPGRADE gives),
 * which is not the translator's default for HTTP ports (see docs/benchmark.md).
 */
const OPT_IN: readonly TargetName[] = ['loom-mtls-h2']
const ALIASES: Record<string, TargetName[]> = {
  undici: ['floor'],
  'loom-resilience': ['resilience'],
  telemetry: ['loom-telemetry'],
  'undici-floor': ['floor'],
  'fastify-http-proxy': ['fastify'],
  // the mutual-TLS pairs, measured side by side
  mtls: ['loom-mtls', 'nginx-mtls'],
}

function parseArgs(argv: string[]): { quick: boolean; only: TargetName[] } {
  let quick = false
  let only: TargetName[] = TARGETS.filter((t) => !OPT_IN.includes(t))
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i] ?? ''
    if (a === '--quick') quick = true
    else if (a === '--only' || a.startsWith('--only=')) {
      const list = a === '--only' ? (argv[++i] ?? '') : a.slice('--only='.length)
      only = list
        .split(',')
        .map((s) => s.trim().toLowerCase())
        .filter(Boolean)
        .flatMap((s) => {
          const t = ALIASES[s] ?? (TARGETS as readonly string[]).filter((x) => x === s)
          if (t.length === 0) throw new Error(`unknown target '${s}' (known: ${TARGETS.join(', ')}, mtls)`)
          return t as TargetName[]
        })
    } else if (a === '--help' || a === '-h') {
      process.stdout.write(
        `usage: node dist/bench/run.js [--quick] [--only ${TARGETS.join(',')},mtls]\n` +
          'env: BENCH_ROUNDS BENCH_DURATION BENCH_WARMUP BENCH_LAT_ROUNDS BENCH_LAT_DURATION BENCH_LAT_WARMUP\n' +
          '     BENCH_RATE BENCH_CONNECTIONS BENCH_LAT_CONNECTIONS BENCH_START_TIMEOUT BENCH_WAIT_IDLE BENCH_KEEP_TMP=1\n' +
          'throughput: BENCH_ROUNDS rounds (default 3, --quick 1); per round and target a wrk GET warm-up\n' +
          '     (BENCH_WARMUP, 2s, --quick 1s, before round 1; 1 s before later rounds), then wrk GET and wrk POST\n' +
          '     for BENCH_DURATION each (5s, --quick 3s), the targets taking turns within each round (idle\n' +
          '     proxies are paused with SIGSTOP meanwhile). Reported: median req/s and wrk p99 over rounds, the\n' +
          "     min..max of req/s; cores busy, bound and other procs of the method's median round.\n" +
          'latency: BENCH_LAT_ROUNDS rounds (default 5, --quick 2) of BENCH_LAT_DURATION each (6s, --quick 3s),\n' +
          '     the targets taking turns within each round (idle proxies are paused with SIGSTOP meanwhile);\n' +
          '     BENCH_LAT_WARMUP (2s, --quick 1s) before round 1, 1 s before later rounds. Reported per\n' +
          '     percentile: the median over rounds of (target - paired direct), and the min..max of added p99.\n' +
          'default run (all targets but the opt-in loom-mtls-h2): about 12 minutes. See docs/benchmark.md.\n',
      )
      process.exit(0)
    } else throw new Error(`unknown argument '${a}' (try --help)`)
  }
  // The direct run is the baseline that "added latency" is computed against: always included.
  if (!only.includes('direct')) only.unshift('direct')
  return { quick, only: TARGETS.filter((t) => only.includes(t)) }
}

function configure() {
  const args = parseArgs(process.argv.slice(2))
  const cfg = {
    quick: args.quick,
    rounds: integer('BENCH_ROUNDS', args.quick ? 1 : 3),
    wrkSeconds: seconds('BENCH_DURATION', args.quick ? 3 : 5),
    wrkWarmupSeconds: seconds('BENCH_WARMUP', args.quick ? 1 : 2),
    latSeconds: seconds('BENCH_LAT_DURATION', args.quick ? 3 : 6),
    latWarmupSeconds: seconds('BENCH_LAT_WARMUP', args.quick ? 1 : 2),
    latRounds: integer('BENCH_LAT_ROUNDS', args.quick ? 2 : 5),
    rate: integer('BENCH_RATE', 1000),
    connections: integer('BENCH_CONNECTIONS', 50),
    latConnections: integer('BENCH_LAT_CONNECTIONS', 16),
    startTimeoutSeconds: seconds('BENCH_START_TIMEOUT', 10),
    waitIdleSeconds: seconds('BENCH_WAIT_IDLE', 0),
    keepTmp: process.env.BENCH_KEEP_TMP === '1',
  }
  return { args, cfg }
}

function configureOrExit(): ReturnType<typeof configure> {
  try {
    return configure()
  } catch (e) {
    process.stderr.write(`${e instanceof Error ? e.message : String(e)}\n`)
    process.exit(2)
  }
}

const { args, cfg } = configureOrExit()

const log = (msg: string): void => {
  process.stderr.write(`${msg}\n`)
}
const errMsg = (e: unknown): string => (e instanceof Error ? e.message : String(e))

// ---- tools ----

function which(cmd: string): string | null {
  const r = spawnSync('sh', ['-c', `command -v ${cmd}`], {
    encoding: 'utf8',
    env: { ...process.env, PATH: `${process.env.PATH ?? ''}:/usr/sbin:/sbin` },
  })
  const p = r.stdout.trim()
  return r.status === 0 && p ? p : null
}

function ensureTools(): Record<string, string> {
  const needed = ['wrk', 'nginx', 'haproxy', 'taskset']
  if (needed.some((t) => !which(t))) {
    log('installing wrk, nginx and haproxy with apt-get ...')
    const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' }
    const install = (): number | null =>
      spawnSync('apt-get', ['install', '-y', 'wrk', 'nginx', 'haproxy'], { stdio: 'inherit', env }).status
    if (install() !== 0) {
      spawnSync('apt-get', ['update'], { stdio: 'inherit', env })
      if (install() !== 0) throw new Error('apt-get install -y wrk nginx haproxy failed')
    }
  }
  const paths: Record<string, string> = {}
  for (const t of needed) {
    const p = which(t)
    if (!p) throw new Error(`${t} not found`)
    paths[t] = p
  }
  return paths
}

function versions(tools: Record<string, string>): Record<string, string> {
  const first = (cmd: string, a: string[]): string => {
    const r = spawnSync(cmd, a, { encoding: 'utf8' })
    return `${r.stdout ?? ''}${r.stderr ?? ''}`.trim().split('\n')[0] ?? ''
  }
  return {
    node: process.version,
    nginx: first(tools.nginx ?? 'nginx', ['-v']),
    haproxy: first(tools.haproxy ?? 'haproxy', ['-v']),
    wrk: first(tools.wrk ?? 'wrk', ['-v']),
  }
}

// ---- targets ----

interface Ctx {
  tmp: string
  backendPort: number
  tools: Record<string, string>
  /** the mutual-TLS pairs' certificates, made on first use (bench/mtls-certs.ts) */
  mtls(): Promise<MtlsPairConfig>
}

/** BENCH_NODE_FLAGS: extra node flags for the Node proxies (e.g. `--cpu-prof --cpu-prof-dir=/tmp/prof`). */
const NODE_FLAGS = (process.env.BENCH_NODE_FLAGS ?? '').split(/\s+/).filter(Boolean)

interface Started {
  /** the target's processes (none for the direct baseline; two for a pair of proxies), the entry first */
  procs: Managed[]
  /** the port clients send to: the entry proxy's listener */
  port: number
  /** roots of the process trees whose RSS and CPU are measured, summed (empty for the direct baseline) */
  statsPids: number[]
  processes: string
  command?: string
}

const single = (p: Managed, port: number, processes: string): Started => ({
  procs: [p],
  port,
  statsPids: [p.pid],
  processes,
  command: p.command,
})

const onProxyCore = (name: string, cmd: string, a: string[]): Managed =>
  startProcess(name, 'taskset', ['-c', PROXY_CPU, cmd, ...a])

type TargetDef = { label: string; start(ctx: Ctx): Promise<Started> }

/** A Node proxy from bench/: `node <script> <listenPort> <backendPort>` on the proxy core. */
function nodeScriptTarget(label: string, name: string, script: string): TargetDef {
  return {
    label,
    async start(ctx) {
      const port = await freePort()
      const p = onProxyCore(name, process.execPath, [
        ...NODE_FLAGS,
        path.join(here, script),
        String(port),
        String(ctx.backendPort),
      ])
      return single(p, port, 'node')
    },
  }
}

/**
 * `loom proxy` with the bench bootstrap; with `resilience`, the same proxy with retries, a route and per-try
 * timeout, circuit breakers, outlier detection and a 0% fault filter armed; with `telemetry`, Istio's stats filter
 * and metadata exchange as on a sidecar's outbound (bench/configs.ts).
 */
function loomTarget(label: string, name: string, opts: LoomOptions): TargetDef {
  return {
    label,
    async start(ctx) {
      const port = await freePort()
      const adminPort = await freePort()
      const file = path.join(ctx.tmp, `${name}.yaml`)
      writeFileSync(file, loomBootstrap(port, adminPort, ctx.backendPort, opts))
      const p = onProxyCore(name, process.execPath, [
        ...NODE_FLAGS,
        path.join(root, 'bin', 'loom.js'),
        'proxy',
        '-c',
        file,
      ])
      return single(p, port, 'node process tree')
    },
  }
}

/** Two processes on the proxy core: the entry (A) that clients send to, and its peer (B) in front of the backend. */
function pair(a: Managed, b: Managed, port: number, processes: string): Started {
  return { procs: [a, b], port, statsPids: [a.pid, b.pid], processes, command: `${a.command} + ${b.command}` }
}

/**
 * A pair of `loom proxy` sidecars with Istio's mutual TLS between them: A (the client's sidecar, outbound) and B
 * (the server's, inbound under STRICT), both on the proxy core. `http2`: A's cluster speaks HTTP/2 to B (ALPN h2).
 */
function loomMtlsTarget(label: string, name: string, http2: boolean): TargetDef {
  return {
    label,
    async start(ctx) {
      const m = await ctx.mtls()
      const [port, adminA, peerPort, adminB] = [await freePort(), await freePort(), await freePort(), await freePort()]
      const fileA = path.join(ctx.tmp, `${name}-a.yaml`)
      const fileB = path.join(ctx.tmp, `${name}-b.yaml`)
      writeFileSync(fileA, loomMtlsOutbound(port, adminA, peerPort, m, http2))
      writeFileSync(fileB, loomMtlsInbound(peerPort, adminB, ctx.backendPort, m))
      const loom = path.join(root, 'bin', 'loom.js')
      const b = onProxyCore(`${name}-b`, process.execPath, [...NODE_FLAGS, loom, 'proxy', '-c', fileB])
      const a = onProxyCore(`${name}-a`, process.execPath, [...NODE_FLAGS, loom, 'proxy', '-c', fileA])
      return pair(a, b, port, '2 node process trees')
    },
  }
}

const TARGET_DEFS: Record<TargetName, TargetDef> = {
  direct: {
    label: 'direct',
    start: async (ctx) => ({ procs: [], port: ctx.backendPort, statsPids: [], processes: '-' }),
  },
  loom: loomTarget('loom', 'loom', {}),
  resilience: loomTarget('Loom with resilience on', 'loom-resilience', { resilience: true }),
  'loom-telemetry': loomTarget('Loom with telemetry on', 'loom-telemetry', { telemetry: true }),
  nginx: {
    label: 'nginx',
    async start(ctx) {
      const port = await freePort()
      const dir = path.join(ctx.tmp, 'nginx-proxy')
      mkdirSync(dir, { recursive: true })
      writeFileSync(path.join(dir, 'nginx.conf'), proxyNginx(dir, port, ctx.backendPort))
      const nginx = ctx.tools.nginx ?? 'nginx'
      const p = onProxyCore('nginx', nginx, ['-p', dir, '-e', path.join(dir, 'error.log'), '-c', 'nginx.conf'])
      return single(p, port, 'master + 1 worker')
    },
  },
  haproxy: {
    label: 'haproxy',
    async start(ctx) {
      const port = await freePort()
      const file = path.join(ctx.tmp, 'haproxy.cfg')
      writeFileSync(file, haproxyConfig(port, ctx.backendPort))
      const p = onProxyCore('haproxy', ctx.tools.haproxy ?? 'haproxy', ['-db', '-f', file])
      return single(p, port, '1 process, 1 thread')
    },
  },
  floor: nodeScriptTarget('undici floor', 'floor', 'floor.js'),
  fastify: nodeScriptTarget('@fastify/http-proxy', 'fastify', 'fastify-proxy.js'),
  'loom-mtls': loomMtlsTarget('Loom mTLS pair', 'loom-mtls', false),
  'loom-mtls-h2': loomMtlsTarget('Loom mTLS pair, h2 between', 'loom-mtls-h2', true),
  'nginx-mtls': {
    label: 'nginx mTLS pair',
    async start(ctx) {
      const m = await ctx.mtls()
      const port = await freePort()
      const peerPort = await freePort()
      const nginx = ctx.tools.nginx ?? 'nginx'
      const run = (side: string, conf: (dir: string) => string): Managed => {
        const dir = path.join(ctx.tmp, `nginx-mtls-${side}`)
        mkdirSync(dir, { recursive: true })
        writeFileSync(path.join(dir, 'nginx.conf'), conf(dir))
        return onProxyCore(`nginx-mtls-${side}`, nginx, [
          '-p',
          dir,
          '-e',
          path.join(dir, 'error.log'),
          '-c',
          'nginx.conf',
        ])
      }
      const b = run('b', (dir) => nginxMtlsInbound(dir, peerPort, ctx.backendPort, m))
      const a = run('a', (dir) => nginxMtlsOutbound(dir, port, peerPort, m))
      return pair(a, b, port, '2 x (master + 1 worker)')
    },
  },
}

// ---- phases ----
//
// A run has three phases. First, target after target: start, checks, idle RSS (before any load on that
// proxy), then it is parked. Then the throughput phase: BENCH_ROUNDS rounds of wrk (a GET warm-up, wrk GET,
// wrk POST), the targets taking turns within each round (round 1: direct GET, direct POST, loom GET, loom
// POST, nginx ...; round 2: the same; ...). Then the latency phase: BENCH_LAT_ROUNDS rounds of the open-loop
// run, the targets taking turns in the same way. Interleaving spreads a disturbance of the machine (a noisy
// minute) over several targets' single rounds instead of wiping out all rounds of one target, and the
// median over rounds then discards it.
//
// That needs every proxy to live from its start to the end of the latency phase. While a proxy is not being
// measured it is *parked*: frozen with SIGSTOP (pauseProcess), so it uses no CPU on the proxy core while
// another target's start-up, idle RSS, wrk runs, CPU per request or latency round is measured, and its own
// memory, listener and kept-alive connections stay as they were. The "other procs" checks are not affected
// either (a parked proxy uses no CPU, and the harness's own process tree is never counted as "other"). A
// resumed proxy must answer a GET before its turn starts, and each turn has its own (shorter after the
// first round) warm-up, which also absorbs overdue timers and upstream connections closed while parked.

/** Seconds of warm-up (not recorded) before every round but the first, wrk and open loop alike. */
const LATER_ROUND_WARMUP_S = 1

const wrkWarmup = (round: number): number =>
  round === 1 ? cfg.wrkWarmupSeconds : Math.min(cfg.wrkWarmupSeconds, LATER_ROUND_WARMUP_S)

const roundWarmup = (round: number): number =>
  round === 1 ? cfg.latWarmupSeconds : Math.min(cfg.latWarmupSeconds, LATER_ROUND_WARMUP_S)

/** Runs the open-loop generator on two paired streams: the direct path to the backend, and the target. */
async function runOpenLoop(
  backendPort: number,
  port: number,
  warmupS: number,
): Promise<{ baseline: OpenLoopResult; target: OpenLoopResult }> {
  const olc: OpenLoopConfig = {
    targets: [{ port: backendPort }, { port }],
    rate: cfg.rate,
    connections: cfg.latConnections,
    warmupS,
    durationS: cfg.latSeconds,
    drainS: 2,
  }
  const script = path.join(here, 'openloop.js')
  const limitMs = (warmupS + cfg.latSeconds + 20) * 1000
  const r = await runToEnd(
    'openloop',
    'taskset',
    ['-c', LOAD_CPU, process.execPath, script, JSON.stringify(olc)],
    limitMs,
  )
  if (r.timedOut) throw new Error('open-loop generator did not finish in time')
  const line = r.stdout.trim().split('\n').pop() ?? ''
  if (r.exit.code !== 0 || !line.startsWith('{')) {
    throw new Error(`open-loop generator failed (exit ${r.exit.code}): ${r.stderr.trim() || r.stdout.trim()}`)
  }
  const { streams } = JSON.parse(line) as { streams: OpenLoopResult[] }
  const [baseline, target] = streams
  if (!baseline || !target) throw new Error(`open-loop generator returned ${streams.length} streams, expected 2`)
  return { baseline, target }
}

/**
 * Runs one phase, recording per-core load and other processes' CPU use during it. With BENCH_WAIT_IDLE set,
 * a phase that other processes disturbed is repeated (at most twice) once the machine is quiet, and the
 * least disturbed attempt is kept. `check` throws if the target died meanwhile.
 */
async function measure<T>(
  tag: string,
  phase: string,
  fn: () => Promise<T>,
  check: (phase: string) => void,
): Promise<{ out: T; pct: number; cores: CoreLoad; attempts: number }> {
  let best: { out: T; pct: number; cores: CoreLoad } | null = null
  let attempt = 1
  for (; ; attempt++) {
    const cores = coreTimes()
    const snap = cpuSnapshot()
    const t0 = Date.now()
    const out = await fn()
    const load = coreLoad(cores, coreTimes())
    const pct = Math.round((100 * foreignCpuSeconds(snap, cpuSnapshot())) / ((Date.now() - t0) / 1000))
    if (!best || pct < best.pct) best = { out, pct, cores: load }
    if (pct <= NOISY_PCT || cfg.waitIdleSeconds <= 0 || attempt >= 3) break
    log(`${tag}: other processes used ${pct}% of a core during ${phase}; repeating it when quiet`)
    await waitForIdle(cfg.waitIdleSeconds)
    check(phase)
  }
  return { ...best, attempts: attempt }
}

/** A target that started and passed its checks; parked (SIGSTOP) whenever it is not its turn. */
interface Live {
  res: TargetResult
  s: Started
  ctx: Ctx
}

const outputOf = (s: Started): string =>
  s.procs.map((p) => `${s.procs.length > 1 ? `[${p.name}]\n` : ''}${p.stderr()}${p.stdout().slice(-4096)}`).join('\n')

function aliveCheck(s: Started): (phase: string) => void {
  return (phase) => {
    const dead = s.procs.find((p) => p.exit)
    if (dead) throw new Error(`${dead.name} exited during ${phase} (code ${dead.exit?.code})`)
  }
}

const park = (s: Started): void => {
  for (const p of s.procs) pauseProcess(p)
}
const stopAllOf = async (s: Started): Promise<void> => {
  for (const p of s.procs) await stopProcess(p)
}
const treeRss = (s: Started): number => s.statsPids.reduce((a, p) => a + treeRssKiB(p), 0)
const treeCpu = (s: Started): number => s.statsPids.reduce((a, p) => a + treeCpuSeconds(p), 0)

/** Records a failure of a target and stops its process. */
async function fail(res: TargetResult, s: Started | null, tag: string, e: unknown): Promise<void> {
  res.status = s?.procs.some((p) => p.exit) ? 'crashed' : 'failed'
  res.error = errMsg(e)
  if (s) res.output = outputOf(s)
  log(`${tag}: ${res.status.toUpperCase()}: ${res.error}`)
  if (s) await stopAllOf(s)
}

/**
 * Phase 1 for one target: start, checks, idle RSS. Returns the target parked (SIGSTOP) for its throughput
 * and latency rounds, or null if it failed (then `res` says why and it is stopped).
 */
async function startTarget(res: TargetResult, index: number, count: number, ctx: Ctx): Promise<Live | null> {
  const name = res.name as TargetName
  const def = TARGET_DEFS[name]
  const tag = `[${index}/${count}] ${def.label}`
  log(`${tag}: starting`)
  let s: Started
  try {
    s = await def.start(ctx)
  } catch (e) {
    res.status = 'failed to start'
    res.error = errMsg(e)
    log(`${tag}: FAILED TO START: ${res.error}`)
    return null
  }
  res.command = s.command
  try {
    const ready = await waitReady(s.port, s.procs, cfg.startTimeoutSeconds * 1000)
    if (!ready.ok) {
      res.status = 'failed to start'
      res.error = ready.reason
      res.output = outputOf(s)
      log(`${tag}: FAILED TO START: ${ready.reason}`)
      const tail = res.output.trim().split('\n').slice(-10)
      for (const l of tail) if (l) log(`    | ${l}`)
      await stopAllOf(s)
      return null
    }
    res.readyMs = ready.ms
    log(`${tag}: ready after ${ready.ms} ms; checking GET and POST`)
    const g = await httpRequest(s.port, 'GET')
    if (g.status !== 200 || g.bodyLength !== BODY_1K.length) {
      throw new Error(`GET / answered ${g.status} with ${g.bodyLength} bytes (expected 200 with ${BODY_1K.length})`)
    }
    const p = await httpRequest(s.port, 'POST', Buffer.alloc(POST_BYTES, 'p'))
    if (p.status !== 200) throw new Error(`POST / with ${POST_BYTES} bytes answered ${p.status} (expected 200)`)
    await sleep(500)
    aliveCheck(s)('checks')
    if (s.statsPids.length > 0) {
      const idleKiB = treeRss(s)
      res.rss = { idleKiB, loadKiB: idleKiB, processes: s.processes }
      log(`${tag}: idle RSS ${(idleKiB / 1024).toFixed(1)} MiB`)
    }
    if (s.procs.length > 0) {
      park(s)
      log(`${tag}: parked (SIGSTOP) until its turn`)
    }
    return { res, s, ctx }
  } catch (e) {
    await fail(res, s, tag, e)
    return null
  }
}

/**
 * Continues a parked target and waits until it answers a GET. The first request after a long pause may
 * meet an upstream connection the backend closed meanwhile, hence the retries.
 */
async function resume(s: Started, alive: (phase: string) => void): Promise<void> {
  alive('parked wait')
  if (s.procs.length === 0) return
  // the inner proxy of a pair first, so the entry's first request finds its peer running
  for (const p of [...s.procs].reverse()) resumeProcess(p)
  let last = ''
  const until = Date.now() + 5000
  for (;;) {
    const g = await httpRequest(s.port, 'GET').catch((e: unknown) => ({ status: 0, bodyLength: 0, e: errMsg(e) }))
    if (g.status === 200 && g.bodyLength === BODY_1K.length) return
    last = 'e' in g ? g.e : `${g.status} with ${g.bodyLength} bytes`
    if (Date.now() > until) throw new Error(`GET / after resuming: ${last}`)
    alive('resume')
    await sleep(100)
  }
}

/**
 * Phase 2, one round for one target: resume it, wrk GET warm-up, wrk GET, wrk POST (RSS sampled all along),
 * park it again.
 */
async function throughputRound(live: Live, round: number): Promise<void> {
  const { res, s, ctx } = live
  const tag = `[throughput ${round}/${cfg.rounds}] ${res.label}`
  const alive = aliveCheck(s)
  const wrk = (seconds: number, script?: string) =>
    runWrk({ port: s.port, seconds, connections: cfg.connections, threads: 1, script, cpu: LOAD_CPU })
  await resume(s, alive)
  const warmupS = wrkWarmup(round)
  const sampler = s.statsPids.length > 0 ? rssSampler(s.statsPids) : null
  const runs: Partial<Record<Method, WrkRun>> = {}
  let rssMaxKiB: number | undefined
  try {
    if (warmupS > 0) {
      log(`${tag}: warm-up, wrk GET ${warmupS} s`)
      await wrk(warmupS)
      alive('warm-up')
    }
    for (const method of METHODS) {
      const phase = `${method.toUpperCase()} round ${round}`
      log(`${tag}: wrk ${method.toUpperCase()} -t1 -c${cfg.connections} ${cfg.wrkSeconds} s`)
      const script = method === 'post' ? path.join(ctx.tmp, 'post.lua') : undefined
      const m = await measure(tag, phase, () => wrk(cfg.wrkSeconds, script), alive)
      alive(`wrk ${method.toUpperCase()}`)
      runs[method] = { wrk: m.out, coreLoad: m.cores, otherCpuPct: m.pct }
      if (m.attempts > 1) res.repeated = { ...res.repeated, [phase]: m.attempts - 1 }
      log(
        `${tag}:   ${m.out.rps.toLocaleString('en-US')} req/s, ${wrkErrors(m.out)} errors, cores 0/1 busy ` +
          `${m.cores.map((c) => `${c.busyPct}%`).join('/')}, other processes ${m.pct}% of a core`,
      )
    }
  } finally {
    // stopped on every path: a running sampler's interval would keep the harness alive
    if (sampler) rssMaxKiB = sampler.stop()
  }
  park(s)
  const { get, post } = runs
  if (!get || !post) throw new Error('internal: a wrk run of the round is missing')
  ;(res.throughputRounds ??= []).push({ round, warmupS, get, post, rssMaxKiB })
}

/** Phase 3, one round for one target: resume it, run the paired open loop, park it again. */
async function latencyRound(live: Live, round: number): Promise<void> {
  const { res, s, ctx } = live
  const tag = `[latency ${round}/${cfg.latRounds}] ${res.label}`
  const alive = aliveCheck(s)
  const warmupS = roundWarmup(round)
  await resume(s, alive)
  log(`${tag}: open loop ${cfg.rate} req/s, ${warmupS} s warm-up + ${cfg.latSeconds} s`)
  const measured = s.statsPids.length > 0
  const m = await measure(
    tag,
    `latency round ${round}`,
    async () => {
      const cpuBefore = measured ? treeCpu(s) : 0
      const r = await runOpenLoop(ctx.backendPort, s.port, warmupS)
      return { ...r, cpuSeconds: measured ? treeCpu(s) - cpuBefore : undefined }
    },
    alive,
  )
  alive(`latency round ${round}`)
  park(s)
  const { target, baseline, cpuSeconds } = m.out
  const added = addedUs(target.latencyUs, baseline.latencyUs)
  const rounds = (res.latencyRounds ??= [])
  rounds.push({
    round,
    warmupS,
    target,
    baseline,
    addedUs: added,
    cpuSeconds,
    otherCpuPct: m.pct,
    coreLoad: m.cores,
  })
  if (m.attempts > 1) res.repeated = { ...res.repeated, [`latency round ${round}`]: m.attempts - 1 }
  const l = target.latencyUs
  log(
    `${tag}:   p50 ${l.p50} us, p99 ${l.p99} us, p99.9 ${l.p999} us; added p50 ${added.p50} us, p99 ` +
      `${added.p99} us; ${target.errors + target.non2xx + target.unanswered} errors; generator send lag p99 ` +
      `${target.sendLagUs.p99} us, other processes ${m.pct}% of a core`,
  )
}

/**
 * Runs `rounds` rounds of `turn`, the live targets taking turns within each round; a target that fails is
 * stopped and left out of later rounds. Returns the targets still live, or null when shutting down.
 */
async function inTurns(
  live: Live[],
  rounds: number,
  phase: string,
  turn: (l: Live, round: number) => Promise<void>,
): Promise<Live[] | null> {
  for (let round = 1; round <= rounds; round++) {
    for (const l of live) {
      if (isShuttingDown()) return null
      if (cfg.waitIdleSeconds > 0) await waitForIdle(cfg.waitIdleSeconds)
      try {
        await turn(l, round)
      } catch (e) {
        await fail(l.res, l.s, `[${phase} ${round}/${rounds}] ${l.res.label}`, e)
      }
    }
    live = live.filter((l) => l.res.status === 'ok')
  }
  return live
}

/**
 * After the last round. Throughput: per method the medians over rounds, with per-core load and other
 * processes' CPU of the median round; RSS under load the largest of any round. Latency: medians over
 * rounds, CPU per request summed over rounds.
 */
function summarize(res: TargetResult): void {
  const tr = res.throughputRounds ?? []
  if (tr.length > 0) {
    for (const method of METHODS) {
      const t = summarizeThroughput(tr, method)
      res[method] = t
      const rep = tr.find((r) => r.round === t.medianRound)
      if (rep) {
        res.coreLoad = { ...res.coreLoad, [method]: rep[method].coreLoad }
        res.otherCpuPct = { ...res.otherCpuPct, [method]: rep[method].otherCpuPct }
      }
    }
    if (res.rss) res.rss.loadKiB = Math.max(res.rss.idleKiB, ...tr.map((r) => r.rssMaxKiB ?? 0))
  }
  const rounds = res.latencyRounds ?? []
  if (rounds.length === 0) return
  const sum = summarizeRounds(rounds)
  res.latency = sum
  res.addedUs = sum.addedUs
  res.otherCpuPct = { ...res.otherCpuPct, openloop: Math.max(...rounds.map((r) => r.otherCpuPct)) }
  if (rounds.every((r) => r.cpuSeconds !== undefined)) {
    const seconds = rounds.reduce((a, r) => a + (r.cpuSeconds ?? 0), 0)
    const requests = rounds.reduce((a, r) => a + r.target.sent, 0)
    res.cpu = { seconds, requests, secondsPer1000: seconds / (requests / 1000) }
  }
}

/** Other processes' CPU use over one second, in % of a core. */
async function otherLoadPct(): Promise<number> {
  const snap = cpuSnapshot()
  await sleep(1000)
  return Math.round(100 * foreignCpuSeconds(snap, cpuSnapshot()))
}

/** BENCH_WAIT_IDLE: before each target, wait (up to a bound) until other processes leave the machine alone. */
async function waitForIdle(limitSeconds: number): Promise<void> {
  const until = Date.now() + limitSeconds * 1000
  let pct = await otherLoadPct()
  if (pct <= NOISY_PCT) return
  log(`other processes use ${pct}% of a core; waiting up to ${limitSeconds} s for the machine to go quiet`)
  let quietSeconds = 0
  while (quietSeconds < 3 && Date.now() < until) {
    pct = await otherLoadPct()
    quietSeconds = pct <= NOISY_PCT ? quietSeconds + 1 : 0
  }
  log(quietSeconds < 3 ? `still ${pct}%: going on anyway` : 'quiet now')
}

// ---- main ----

let tmp = ''
function removeTmp(): void {
  if (tmp && !cfg.keepTmp) rmSync(tmp, { recursive: true, force: true })
}

async function shutdown(code: number): Promise<never> {
  await stopAll()
  removeTmp()
  process.exit(code)
}

for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
  process.once(sig, () => {
    log(`\n${sig}: stopping every process the benchmark started`)
    void shutdown(130)
  })
}
process.on('exit', () => killAllSync())

async function main(): Promise<void> {
  const t0 = Date.now()
  const tools = ensureTools()
  const cpus = os.cpus()
  if (cpus.length < 2) log('warning: fewer than 2 CPUs; pinning to cores 0 and 1 will fail')
  // This harness (and everything it starts without an explicit taskset) stays off the proxy's core.
  spawnSync('taskset', ['-a', '-p', '-c', LOAD_CPU, String(process.pid)], { stdio: 'ignore' })

  // Estimate from measured runs: ~1.5 s of start-up and checks per target, ~0.3 s per throughput round on
  // top of wrk's own time, ~0.7 s per open-loop round.
  let perTarget = 1.5
  for (let r = 1; r <= cfg.rounds; r++) perTarget += wrkWarmup(r) + 2 * cfg.wrkSeconds + 0.3
  for (let r = 1; r <= cfg.latRounds; r++) perTarget += roundWarmup(r) + cfg.latSeconds + 0.7
  log(
    `loom bench: ${args.only.join(', ')}; wrk in ${cfg.rounds} round${cfg.rounds === 1 ? '' : 's'} of ` +
      `${cfg.wrkSeconds} s per method, open loop ${cfg.rate} req/s in ${cfg.latRounds} rounds of ` +
      `${cfg.latSeconds} s; about ${Math.ceil((perTarget * args.only.length) / 60)} min`,
  )

  tmp = mkdtempSync(path.join(os.tmpdir(), 'loom-bench-'))
  writeFileSync(path.join(tmp, 'post.lua'), POST_LUA)
  const loadavgBefore = os.loadavg()
  const idleOtherPct = await otherLoadPct()
  if (idleOtherPct > NOISY_PCT) {
    log(`warning: other processes are using ${idleOtherPct}% of a core right now; expect disturbed figures`)
  }

  // Backend: its own nginx, one worker, on the load core.
  const backendPort = await freePort()
  const bdir = path.join(tmp, 'backend')
  mkdirSync(bdir, { recursive: true })
  writeFileSync(path.join(bdir, 'nginx.conf'), backendNginx(bdir, backendPort))
  const backend = startProcess('backend', 'taskset', [
    '-c',
    LOAD_CPU,
    tools.nginx ?? 'nginx',
    '-p',
    bdir,
    '-e',
    path.join(bdir, 'error.log'),
    '-c',
    'nginx.conf',
  ])
  const ready = await waitReady(backendPort, backend, 10_000)
  if (!ready.ok) throw new Error(`backend nginx did not start: ${ready.reason}\n${backend.stderr()}`)
  const bget = await httpRequest(backendPort, 'GET')
  const bpost = await httpRequest(backendPort, 'POST', Buffer.alloc(POST_BYTES, 'p'))
  if (bget.status !== 200 || bget.bodyLength !== BODY_1K.length || bpost.status !== 200) {
    throw new Error(`backend check failed: GET ${bget.status}/${bget.bodyLength} bytes, POST ${bpost.status}`)
  }
  log(`backend nginx on 127.0.0.1:${backendPort} (core ${LOAD_CPU}): GET 200 with 1 KB, POST 16 KB answered 200`)

  let certs: Promise<MtlsPairConfig> | null = null
  const mtls = (): Promise<MtlsPairConfig> =>
    (certs ??= writeMtlsCerts(path.join(tmp, 'mtls-certs')).then((f) => ({
      ...f,
      serverId: SERVER_ID,
      serverHost: SERVER_HOST,
    })))
  const ctx: Ctx = { tmp, backendPort, tools, mtls }
  const results: TargetResult[] = args.only.map((name) => ({
    name,
    label: TARGET_DEFS[name].label,
    status: 'ok' as const,
  }))
  let live: Live[] | null = []
  let i = 0
  for (const res of results) {
    if (isShuttingDown()) return
    const l = await startTarget(res, ++i, results.length, ctx)
    if (l) live.push(l)
  }
  live = await inTurns(live, cfg.rounds, 'throughput', throughputRound)
  if (!live) return
  live = await inTurns(live, cfg.latRounds, 'latency', latencyRound)
  if (!live) return
  for (const l of live) await stopAllOf(l.s)
  for (const res of results) summarize(res)
  await stopProcess(backend)

  const by = (n: string): TargetResult | undefined => results.find((r) => r.name === n && r.status === 'ok')
  const div = (a: number | undefined, b: number | undefined): number | null =>
    a !== undefined && b !== undefined && a > 0 && b > 0 ? Math.round((a / b) * 100) / 100 : null
  const ratios: Record<string, RatioRow> = {}
  const loom = by('loom')
  for (const [key, label] of [
    ['nginx', 'nginx'],
    ['haproxy', 'HAProxy'],
    ['floor', 'undici floor (goal: req/s >= 1.25x)'],
  ] as const) {
    if (!args.only.includes(key)) continue
    const other = by(key)
    ratios[label] = {
      getRps: div(loom?.get?.rps, other?.get?.rps),
      postRps: div(loom?.post?.rps, other?.post?.rps),
      addedP99: div(loom?.addedUs?.p99, other?.addedUs?.p99),
    }
  }

  // the cost of the resilience features, armed but idle: that target against plain Loom (goal: req/s >= 0.90x)
  if (args.only.includes('resilience') && args.only.includes('loom')) {
    const on = by('resilience')
    ratios['resilience on / plain Loom (goal: req/s >= 0.90x)'] = {
      getRps: div(on?.get?.rps, loom?.get?.rps),
      postRps: div(on?.post?.rps, loom?.post?.rps),
      addedP99: div(on?.addedUs?.p99, loom?.addedUs?.p99),
    }
  }

  // the cost of Istio's metrics and metadata exchange: that target against plain Loom (goal: req/s >= 0.90x)
  if (args.only.includes('loom-telemetry') && args.only.includes('loom')) {
    const on = by('loom-telemetry')
    ratios['telemetry on / plain Loom (goal: req/s >= 0.90x)'] = {
      getRps: div(on?.get?.rps, loom?.get?.rps),
      postRps: div(on?.post?.rps, loom?.post?.rps),
      addedP99: div(on?.addedUs?.p99, loom?.addedUs?.p99),
    }
  }

  // the mutual-TLS pairs: Loom's pair against nginx's (goal: added p99 at most 1.5x nginx's)
  for (const [key, label] of [
    ['loom-mtls', 'mTLS pair: Loom pair / nginx pair (goal: added p99 <= 1.5x)'],
    ['loom-mtls-h2', 'mTLS pair: Loom pair, h2 between / nginx pair'],
  ] as const) {
    if (!args.only.includes(key) || !args.only.includes('nginx-mtls')) continue
    const l = by(key)
    const n = by('nginx-mtls')
    ratios[label] = {
      getRps: div(l?.get?.rps, n?.get?.rps),
      postRps: div(l?.post?.rps, n?.post?.rps),
      addedP99: div(l?.addedUs?.p99, n?.addedUs?.p99),
    }
  }

  const report = {
    timestamp: new Date(t0).toISOString(),
    elapsedSeconds: Math.round((Date.now() - t0) / 1000),
    machine: { ...machineInfo(loadavgBefore), otherProcessesPctBeforeStart: idleOtherPct },
    versions: versions(tools),
    config: {
      ...cfg,
      wrkLaterRoundsWarmupSeconds: wrkWarmup(2),
      latLaterRoundsWarmupSeconds: roundWarmup(2),
      targets: args.only,
      proxyCpu: PROXY_CPU,
      loadCpu: LOAD_CPU,
    },
    results,
    ratios,
  }
  const dir = path.join(root, 'bench', 'results')
  mkdirSync(dir, { recursive: true })
  const stamp = report.timestamp.replace(/[:.]/g, '-')
  const json = `${JSON.stringify(report, null, 2)}\n`
  writeFileSync(path.join(dir, `${stamp}.json`), json)
  writeFileSync(path.join(dir, 'latest.json'), json)

  process.stdout.write(`\n${render(results, ratios, { ...cfg, wrkLaterWarmupSeconds: wrkWarmup(2) })}\n\n`)
  process.stdout.write(
    `${report.versions.nginx}; ${report.versions.haproxy}; ${(report.versions.wrk ?? '').split(' [')[0]}; node ${process.version}\n`,
  )
  process.stdout.write(
    `load average before ${loadavgBefore.map((n) => n.toFixed(2)).join(' ')}, took ${report.elapsedSeconds} s; ` +
      `results in bench/results/${stamp}.json and bench/results/latest.json\n`,
  )
  removeTmp()
}

main().catch(async (e) => {
  log(`bench failed: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`)
  await shutdown(1)
})
