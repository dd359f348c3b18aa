// User-space instructions per proxied GET, counted by valgrind's callgrind: a steady figure where wall-clock
// rates swing with the machine. `npm run bench:instructions [-- --loom <bin/loom.js> ...]`.
//
// For each configuration (plain: the router alone; resilience: bench/configs.ts's resilience options armed;
// telemetry: Istio's stats filter and metadata exchange as on a sidecar's outbound) the proxy
// runs under callgrind with instrumentation off; a warm-up of WARMUP GETs lets V8 compile the hot path; then, for
// each of ROUNDS rounds, instrumentation is switched on for MEASURE GETs and off again, and the counter is dumped.
// Instructions per GET = the dump's total / MEASURE; the median over rounds is reported. The client (node:http,
// keep-alive, CONCURRENCY connections) and the backend (node:http, 1 KB body) run outside valgrind and are not
// counted. `--loom` points at another checkout's bin/loom.js to compare two versions of the code on one machine.
import { spawnSync } from 'node:child_process'
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import http from 'node:http'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { loomBootstrap } from './configs.js'
import { freePort, startProcess, stopAll, stopProcess, waitReady } from './proc.js'

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

function usage(): never {
  process.stdout.write(
    'usage: node dist/bench/instructions.js [--loom <path/to/bin/loom.js>]... [--only plain,resilience,telemetry]\n' +
      'Counts user-space instructions per proxied GET with valgrind (callgrind): warm-up, then rounds of\n' +
      `measured GETs (BENCH_IC_WARMUP ${WARMUP}, BENCH_IC_REQUESTS ${MEASURE}, BENCH_IC_ROUNDS ${ROUNDS},\n` +
      `BENCH_IC_CONCURRENCY ${CONCURRENCY}); the median per configuration and loom binary. Needs valgrind.\n`,
  )
  process.exit(0)
}

function parseArgs(argv: string[]): { looms: string[]; configs: string[] } {
  const looms: string[] = []
  let configs = ['plain', 'resilience', 'telemetry']
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]
    if (a === '--help' || a === '-h') usage()
    else if (a === '--loom') looms.push(path.resolve(argv[++i] ?? ''))
    else if (a === '--only') configs = (argv[++i] ?? '').split(',').filter(Boolean)
    else throw new Error(`unknown argument ${a} (see --help)`)
  }
  for (const c of configs)
    if (c !== 'plain' && c !== 'resilience' && c !== 'telemetry') throw new Error(`unknown configuration ${c}`)
  if (looms.length === 0) looms.push(path.join(root, 'bin', 'loom.js'))
  return { looms, configs }
}

/** GETs `n` times over `conc` keep-alive connections; throws on any non-200. */
async function load(port: number, n: number, conc: number): Promise<void> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: conc })
  let started = 0
  let failed: string | null = null
  const worker = async (): Promise<void> => {
    while (started < n && failed === null) {
      started++
      await new Promise<void>((resolve) => {
        http
          .get({ host: '127.0.0.1', port, path: '/', agent }, (res) => {
            if (res.statusCode !== 200) failed = `status ${res.statusCode}`
            res.resume()
            res.on('end', resolve)
          })
          .on('error', (e) => {
            failed = e.message
            resolve()
          })
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

async function measure(loom: string, config: string, backendPort: number, dir: string): Promise<number[]> {
  const port = await freePort()
  const admin = await freePort()
  const file = path.join(dir, `${config}.yaml`)
  writeFileSync(
    file,
    loomBootstrap(port, admin, backendPort, { resilience: config === 'resilience', telemetry: config === 'telemetry' }),
  )
  const p = startProcess('loom', 'valgrind', [
    '--tool=callgrind',
    '--smc-check=all-non-file',
    '--instr-atstart=no',
    `--callgrind-out-file=${path.join(dir, 'cg.%p')}`,
    process.execPath,
    loom,
    'proxy',
    '-c',
    file,
  ])
  try {
    const ready = await waitReady(port, p, 120_000)
    if (!ready.ok) throw new Error(`loom under valgrind: ${ready.reason}\n${p.stderr()}`)
    await load(port, WARMUP, CONCURRENCY)
    const seen = new Set<string>()
    const out: number[] = []
    for (let r = 0; r < ROUNDS; r++) {
      control(p.pid, '-i', 'on')
      await load(port, MEASURE, CONCURRENCY)
      control(p.pid, '-d')
      control(p.pid, '-i', 'off')
      out.push(Math.round(lastDumpTotal(dir, p.pid, seen) / MEASURE))
    }
    return out
  } finally {
    await stopProcess(p)
  }
}

async function main(): Promise<void> {
  const { looms, configs } = parseArgs(process.argv.slice(2))
  if (spawnSync('valgrind', ['--version']).status !== 0) throw new Error('valgrind is not installed')
  const dir = mkdtempSync(path.join(os.tmpdir(), 'loom-ic-'))
  const backendPort = await freePort()
  const backend = startProcess('backend', process.execPath, [
    '-e',
    `const b=Buffer.alloc(1024,97);require('node:http').createServer((q,s)=>{q.resume();q.on('end',()=>s.end(b))}).listen(${backendPort},'127.0.0.1')`,
  ])
  try {
    const rows: string[] = []
    for (const loom of looms) {
      for (const config of configs) {
        process.stderr.write(`measuring ${config} with ${loom} ...\n`)
        const rounds = await measure(loom, config, backendPort, dir)
        const median = [...rounds].sort((a, b) => a - b)[Math.floor(rounds.length / 2)] as number
        rows.push(`${config.padEnd(11)} ${String(median).padStart(9)}   rounds ${rounds.join(', ')}   ${loom}`)
      }
    }
    process.stdout.write(
      `config      instr/GET   (median of ${ROUNDS} rounds of ${MEASURE} GETs, ${CONCURRENCY} connections)\n`,
    )
    process.stdout.write(`${rows.join('\n')}\n`)
  } finally {
    await stopProcess(backend)
    await stopAll()
    rmSync(dir, { recursive: true, force: true })
  }
}

main().catch(async (e) => {
  process.stderr.write(`${e instanceof Error ? e.message : String(e)}\n`)
  await stopAll()
  process.exit(1)
})
