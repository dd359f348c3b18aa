// User-space instructions per proxied GET (and, with `--methods GET,POST`, per proxied 16 KB POST, the benchmark's
// POST), counted by valgrind's callgrind: a steady figure where wall-clock rates swing with the machine.
// `npm run bench:instructions [-- --loom <bin/loom.js> ...]`.
//
// For each configuration (plain: the router alone; resilience: bench/configs.ts's resilience options armed;
// telemetry: Istio's stats filter and metadata exchange as on a sidecar's outbound; mtls: the
// sidecar pair of bench/configs.ts, client -> Loom A -> mTLS -> Loom B -> backend, both proxies counted) the proxies
// run under callgrind with instrumentation off; a warm-up of WARMUP GETs lets V8 compile the hot path; then, for
// each of ROUNDS rounds, instrumentation is switched on for MEASURE GETs and off again, and the counter is dumped.
// Instructions per GET = the dumps' total (summed over the proxies of the configuration) / MEASURE; the median over
// rounds is reported, for mtls also per proxy. With both methods, the warm-up's requests are split between them and
// each method's rounds follow (on the same proxies) a last share of the warm-up in that method; a POST carries
// POST_BYTES of body, with the content type of the benchmark's wrk script. The client (node:http, keep-alive,
// CONCURRENCY connections) and the backend (node:http, 1 KB body) run outside valgrind and are not counted. `--loom` points at another checkout's
// bin/loom.js to compare two versions of the code on one machine. `--syscalls` runs the proxies without valgrind and
// counts their system calls per GET instead (strace -c -f attached for each round), by name.
import { spawn, spawnSync } from 'node:child_process'
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import http from 'node:http'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { loomBootstrap, loomMtlsInbound, loomMtlsOutbound, type MtlsPairConfig, POST_BYTES } from './configs.js'
import { SERVER_HOST, SERVER_ID, writeMtlsCerts } from './mtls-certs.js'
import { freePort, type Managed, sleep, startProcess, stopAll, stopProcess, waitReady } from './proc.js'

const here = path.dirname(fileURLToPath(import.meta.url))
const root = path.resolve(here, '..', '..')
const int = (name: string, fallback: number): number => {
  const n = Number.parseInt(process.env[name] ?? '', 10)
  return Number.isFinite(n) && n > 0 ? n : fallback
}
const WARMUP = int('BENCH_IC_WARMUP', 4000)
const MEASURE = int('BENCH_IC_REQUESTS', 2000)
const ROUNDS = int('BENCH_IC_ROUNDS', 3)
const CONCURRENCY = int('BENCH_IC_CONCURRENCY', 8)
const CONFIGS = ['plain', 'resilience', 'telemetry', 'mtls'] as const
type Config = (typeof CONFIGS)[number]
const METHODS = ['GET', 'POST'] as const
type Method = (typeof METHODS)[number]
/** the POST body: as the benchmark's wrk script (bench/configs.ts POST_LUA) */
const POST_BODY = Buffer.alloc(POST_BYTES, 'p')

function usage(): never {
  process.stdout.write(
    'usage: node dist/bench/instructions.js [--loom <path/to/bin/loom.js>]... [--only plain,resilience,telemetry,mtls]\n' +
      '                                     [--methods GET,POST] [--syscalls]\n' +
      'Counts user-space instructions per proxied request with valgrind (callgrind): warm-up, then rounds of\n' +
      `measured requests (BENCH_IC_WARMUP ${WARMUP}, BENCH_IC_REQUESTS ${MEASURE}, BENCH_IC_ROUNDS ${ROUNDS},\n` +
      `BENCH_IC_CONCURRENCY ${CONCURRENCY}); the median per configuration and loom binary. Needs valgrind.\n` +
      'BENCH_IC_KEEP=1 keeps the callgrind dumps (callgrind_annotate) and configs in the temporary directory;\n' +
      'BENCH_IC_NODE_FLAGS adds node flags to the proxies (--perf-basic-prof: JIT code names in /tmp/perf-<pid>.map).\n' +
      'mtls: the sidecar pair (client -> A -> mTLS -> B -> backend), instructions summed over A and B.\n' +
      `--methods: GET (the default), POST (${POST_BYTES} bytes of body, as the benchmark's), or both, counted apart.\n` +
      '--syscalls: no valgrind; system calls per GET by name, strace -c -f attached to each proxy per round.\n',
  )
  process.exit(0)
}

interface Args {
  looms: string[]
  configs: Config[]
  methods: Method[]
  syscalls: boolean
}

function parseArgs(argv: string[]): Args {
  const looms: string[] = []
  let configs: string[] = ['plain', 'resilience', 'telemetry']
  let methods: string[] = ['GET']
  let syscalls = false
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]
    if (a === '--help' || a === '-h') usage()
    else if (a === '--loom') looms.push(path.resolve(argv[++i] ?? ''))
    else if (a === '--only') configs = (argv[++i] ?? '').split(',').filter(Boolean)
    else if (a === '--methods') methods = (argv[++i] ?? '').toUpperCase().split(',').filter(Boolean)
    else if (a === '--syscalls') syscalls = true
    else throw new Error(`unknown argument ${a} (see --help)`)
  }
  for (const c of configs)
    if (!(CONFIGS as readonly string[]).includes(c)) throw new Error(`unknown configuration ${c}`)
  for (const m of methods) if (!(METHODS as readonly string[]).includes(m)) throw new Error(`unknown method ${m}`)
  if (methods.length === 0) throw new Error('--methods: name GET, POST or both')
  if (looms.length === 0) looms.push(path.join(root, 'bin', 'loom.js'))
  return { looms, configs: configs as Config[], methods: methods as Method[], syscalls }
}

/** Sends `n` GETs (or POSTs of POST_BODY) over `conc` keep-alive connections; throws on any non-200. */
async function load(port: number, n: number, conc: number, method: Method = 'GET'): Promise<void> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: conc })
  let started = 0
  let failed: string | null = null
  const worker = async (): Promise<void> => {
    while (started < n && failed === null) {
      started++
      await new Promise<void>((resolve) => {
        const post = method === 'POST'
        const headers = post
          ? { 'content-type': 'application/octet-stream', 'content-length': String(POST_BODY.length) }
          : undefined
        http
          .request({ host: '127.0.0.1', port, path: '/', method, agent, headers }, (res) => {
            if (res.statusCode !== 200) failed = `status ${res.statusCode}`
            res.resume()
            res.on('end', resolve)
          })
          .on('error', (e) => {
            failed = e.message
            resolve()
          })
          .end(post ? POST_BODY : undefined)
      })
    }
  }
  await Promise.all(Array.from({ length: conc }, worker))
  agent.destroy()
  if (failed !== null) throw new Error(`load failed: ${failed}`)
}

function control(pid: number, ...args: string[]): void {
  const r = spawnSync('callgrind_control', [...args, String(pid)], { encoding: 'utf8' })
  if (r.status !== 0) throw new Error(`callgrind_control ${args.join(' ')} failed: ${r.stderr || r.stdout}`)
}

/** The total Ir of the newest dump file of `pid` in `dir` (callgrind writes `cg.<pid>.<n>`). */
function lastDumpTotal(dir: string, pid: number, seen: Set<string>): number {
  const files = readdirSync(dir).filter((f) => f.startsWith(`cg.${pid}.`) && !seen.has(f))
  if (files.length !== 1) throw new Error(`expected one new callgrind dump, found ${files.length}`)
  const f = files[0] as string
  seen.add(f)
  const m = /^totals: (\d+)/m.exec(readFileSync(path.join(dir, f), 'latin1'))
  if (!m) throw new Error(`no totals line in ${f}`)
  return Number(m[1])
}

/** One proxy of a configuration: its name in the output and its bootstrap. */
interface ProxySpec {
  name: string
  file: string
  /** admin port, for the connection counters */
  admin: number
}

/** The proxies of a configuration and the port the client sends to. */
interface Setup {
  port: number
  proxies: ProxySpec[]
}

let certs: Promise<MtlsPairConfig> | null = null

async function setup(config: Config, backendPort: number, dir: string): Promise<Setup> {
  const port = await freePort()
  const admin = await freePort()
  if (config !== 'mtls') {
    const file = path.join(dir, `${config}.yaml`)
    writeFileSync(
      file,
      loomBootstrap(port, admin, backendPort, {
        resilience: config === 'resilience',
        telemetry: config === 'telemetry',
      }),
    )
    return { port, proxies: [{ name: 'loom', file, admin }] }
  }
  certs ??= writeMtlsCerts(path.join(dir, 'mtls-certs')).then((f) => ({
    ...f,
    serverId: SERVER_ID,
    serverHost: SERVER_HOST,
  }))
  const m = await certs
  const peerPort = await freePort()
  const adminB = await freePort()
  const fileA = path.join(dir, 'mtls-a.yaml')
  const fileB = path.join(dir, 'mtls-b.yaml')
  writeFileSync(fileA, loomMtlsOutbound(port, admin, peerPort, m, false))
  writeFileSync(fileB, loomMtlsInbound(peerPort, adminB, backendPort, m))
  // B first: A's readiness check goes through it
  return {
    port,
    proxies: [
      { name: 'B', file: fileB, admin: adminB },
      { name: 'A', file: fileA, admin },
    ],
  }
}

/** Sum of the `upstream_cx_total` counters on a proxy's admin /stats (connections it opened). */
function upstreamConnections(admin: number): Promise<number> {
  return new Promise((resolve) => {
    http
      .get({ host: '127.0.0.1', port: admin, path: '/stats', agent: false, timeout: 10_000 }, (res) => {
        let text = ''
        res.setEncoding('utf8')
        res.on('data', (d: string) => {
          text += d
        })
        res.on('end', () => {
          let n = 0
          for (const m of text.matchAll(/^cluster\.[^\n]*\.upstream_cx_total: (\d+)$/gm)) n += Number(m[1])
          resolve(n)
        })
      })
      .on('error', () => resolve(Number.NaN))
  })
}

/** Per round: the count of each proxy (instructions, or system calls by name). */
interface Rounds {
  /** per round, per proxy: the total per request */
  totals: number[][]
  /** per round, per proxy: system calls per request by name (--syscalls only) */
  byName: Map<string, number>[][]
  /** per proxy: upstream connections it opened during the measured rounds (and the second half of the warm-up) */
  newConnections: number[]
}

/** Extra node flags for the proxies, e.g. `--perf-basic-prof` to name JIT code in the dumps (/tmp/perf-<pid>.map). */
const NODE_FLAGS = (process.env.BENCH_IC_NODE_FLAGS ?? '').split(/\s+/).filter(Boolean)

function startProxies(loom: string, s: Setup, dir: string, syscalls: boolean): Managed[] {
  return s.proxies.map((p) => {
    // under valgrind a TLS handshake can take longer than the configs' 1 s connect timeout: a 503, not a count
    if (!syscalls)
      writeFileSync(p.file, readFileSync(p.file, 'utf8').replaceAll('connect_timeout: 1s', 'connect_timeout: 60s'))
    const args = [...NODE_FLAGS, loom, 'proxy', '-c', p.file]
    if (syscalls) return startProcess(p.name, process.execPath, args)
    return startProcess(p.name, 'valgrind', [
      '--tool=callgrind',
      '--smc-check=all-non-file',
      '--instr-atstart=no',
      `--callgrind-out-file=${path.join(dir, 'cg.%p')}`,
      process.execPath,
      ...args,
    ])
  })
}

/** strace -c -f attached to `pid` until `stop` is called; resolves to the calls by name. */
function straceAttach(pid: number, file: string): { attached: Promise<void>; stop(): Promise<Map<string, number>> } {
  const child = spawn('strace', ['-c', '-f', '-o', file, '-p', String(pid)], { stdio: ['ignore', 'ignore', 'pipe'] })
  let err = ''
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
  const attached = new Promise<void>((resolve, reject) => {
    child.stderr.on('data', (d: Buffer) => {
      err += d.toString()
      if (err.includes('attached')) resolve()
    })
    child.once('exit', () => reject(new Error(`strace exited: ${err}`)))
  })
  return {
    attached,
    async stop() {
      child.kill('SIGINT')
      await exited
      const calls = new Map<string, number>()
      for (const line of readFileSync(file, 'utf8').split('\n')) {
        const t = line.trim().split(/\s+/)
        if (t.length < 5 || !/^\d/.test(t[0] ?? '') || t[t.length - 1] === 'total') continue
        calls.set(t[t.length - 1] as string, Number(t[3]))
      }
      return calls
    },
  }
}

/** Half of the warm-up's requests, split between the methods measured (so each one's path is compiled). */
async function warm(port: number, methods: readonly Method[]): Promise<void> {
  const each = Math.ceil(WARMUP / 2 / methods.length)
  for (const m of methods) await load(port, each, CONCURRENCY, m)
}

async function measure(
  loom: string,
  config: Config,
  backendPort: number,
  dir: string,
  methods: readonly Method[],
  syscalls: boolean,
): Promise<Map<Method, Rounds>> {
  const s = await setup(config, backendPort, dir)
  const procs: Managed[] = []
  try {
    for (const p of startProxies(loom, s, dir, syscalls)) procs.push(p)
    const ready = await waitReady(s.port, procs, 180_000)
    if (!ready.ok)
      throw new Error(
        `loom${syscalls ? '' : ' under valgrind'}: ${ready.reason}\n${procs.map((p) => p.stderr()).join('\n')}`,
      )
    // the counters are read halfway through the warm-up: whatever V8 compiles for the admin page is done before the
    // first measured round
    await warm(s.port, methods)
    const seen = new Set<string>()
    const out = new Map<Method, Rounds>()
    for (const method of methods) {
      const cxBefore = await Promise.all(s.proxies.map((p) => upstreamConnections(p.admin)))
      // the rest of the warm-up: this method's share, just before its rounds
      await load(s.port, Math.ceil(WARMUP / 2 / methods.length), CONCURRENCY, method)
      const totals: number[][] = []
      const byName: Map<string, number>[][] = []
      for (let r = 0; r < ROUNDS; r++) {
        if (syscalls) {
          const traces = procs.map((p, i) => straceAttach(p.pid, path.join(dir, `strace.${method}.${r}.${i}`)))
          await Promise.all(traces.map((t) => t.attached))
          await sleep(300)
          await load(s.port, MEASURE, CONCURRENCY, method)
          const counts = await Promise.all(traces.map((t) => t.stop()))
          const perRq = counts.map((c) => new Map([...c].map(([k, v]) => [k, v / MEASURE])))
          byName.push(perRq)
          totals.push(perRq.map((c) => [...c.values()].reduce((a, b) => a + b, 0)))
        } else {
          for (const p of procs) control(p.pid, '-i', 'on')
          await load(s.port, MEASURE, CONCURRENCY, method)
          for (const p of procs) {
            control(p.pid, '-d')
            control(p.pid, '-i', 'off')
          }
          totals.push(procs.map((p) => Math.round(lastDumpTotal(dir, p.pid, seen) / MEASURE)))
        }
      }
      const cxAfter = await Promise.all(s.proxies.map((p) => upstreamConnections(p.admin)))
      out.set(method, { totals, byName, newConnections: cxAfter.map((n, i) => n - (cxBefore[i] as number)) })
    }
    return out
  } finally {
    for (const p of procs.reverse()) await stopProcess(p)
  }
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] as number
const fmt = (n: number, syscalls: boolean): string => (syscalls ? n.toFixed(2) : String(Math.round(n)))

/** One output block for a configuration and a loom binary. */
function report(label: string, loom: string, names: string[], r: Rounds, syscalls: boolean): string {
  const sums = r.totals.map((t) => t.reduce((a, b) => a + b, 0))
  const lines = [
    `${label.padEnd(16)} ${fmt(median(sums), syscalls).padStart(9)}   rounds ${sums.map((n) => fmt(n, syscalls)).join(', ')}   ${loom}`,
  ]
  if (names.length > 1) {
    names.forEach((name, i) => {
      const own = r.totals.map((t) => t[i] as number)
      lines.push(
        `  ${name.padEnd(9)} ${fmt(median(own), syscalls).padStart(9)}   rounds ${own.map((n) => fmt(n, syscalls)).join(', ')}`,
      )
    })
  }
  if (syscalls) {
    names.forEach((name, i) => {
      const all = new Set(r.byName.flatMap((round) => [...(round[i] as Map<string, number>).keys()]))
      const rows = [...all]
        .map((k) => [k, median(r.byName.map((round) => (round[i] as Map<string, number>).get(k) ?? 0))] as const)
        .filter(([, v]) => v >= 0.01)
        .sort((a, b) => b[1] - a[1])
      lines.push(`  ${name}: ${rows.map(([k, v]) => `${k} ${v.toFixed(2)}`).join(', ')}`)
    })
  }
  const opened = names.map((name, i) => `${names.length > 1 ? `${name} ` : ''}${r.newConnections[i]}`).join(', ')
  lines.push(`  upstream connections opened in the measured rounds and the warm-up's second half: ${opened}`)
  return lines.join('\n')
}

async function main(): Promise<void> {
  const { looms, configs, methods, syscalls } = parseArgs(process.argv.slice(2))
  if (syscalls) {
    if (spawnSync('strace', ['-V']).status !== 0) throw new Error('strace is not installed')
  } else if (spawnSync('valgrind', ['--version']).status !== 0) throw new Error('valgrind is not installed')
  const dir = mkdtempSync(path.join(os.tmpdir(), 'loom-ic-'))
  const backendPort = await freePort()
  const backend = startProcess('backend', process.execPath, [
    '-e',
    `const b=Buffer.alloc(1024,97);const h=require('node:http').createServer((q,s)=>{q.resume();q.on('end',()=>s.end(b))});h.keepAliveTimeout=0;h.listen(${backendPort},'127.0.0.1')`,
  ])
  try {
    const blocks: string[] = []
    for (const loom of looms) {
      for (const config of configs) {
        process.stderr.write(`measuring ${config} with ${loom} ...\n`)
        const byMethod = await measure(loom, config, backendPort, dir, methods, syscalls)
        const names = config === 'mtls' ? ['B', 'A'] : ['loom']
        for (const [method, r] of byMethod) blocks.push(report(`${config} ${method}`, loom, names, r, syscalls))
      }
    }
    const what = syscalls ? 'syscalls/request' : 'instr/request'
    const post = methods.includes('POST') ? `, POST body ${POST_BYTES} bytes` : ''
    process.stdout.write(
      `config method   ${what}   (median of ${ROUNDS} rounds of ${MEASURE} requests, ${CONCURRENCY} connections${post})\n`,
    )
    process.stdout.write(`${blocks.join('\n')}\n`)
  } finally {
    await stopProcess(backend)
    await stopAll()
    if (process.env.BENCH_IC_KEEP === '1') process.stderr.write(`callgrind dumps kept in ${dir}\n`)
    else rmSync(dir, { recursive: true, force: true })
  }
}

main().catch(async (e) => {
  process.stderr.write(`${e instanceof Error ? e.message : String(e)}\n`)
  await stopAll()
  process.exit(1)
})
