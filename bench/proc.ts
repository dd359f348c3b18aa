// Process plumbing for the benchmark: owned child processes (each in its own process group, so a proxy's
// workers go down with it), /proc sampling (RSS, CPU time, per-core load), free ports and readiness checks.
import os from 'node:os'
import { type ChildProcess, spawn, spawnSync } from 'node:child_process'
import { readdirSync, readFileSync } from 'node:fs'
import http from 'node:http'
import net from 'node:net'

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))

export interface ExitInfo {
  code: number | null
  signal: string | null
  error?: string
}

export interface Managed {
  name: string
  command: string
  child: ChildProcess
  pid: number
  exit: ExitInfo | null
  exited: Promise<ExitInfo>
  stdout(): string
  stderr(): string
}

const live = new Set<Managed>()
const TAIL = 16 * 1024
let shuttingDown = false
export const isShuttingDown = (): boolean => shuttingDown

/** Starts a process in its own process group; stdout/stderr are captured (stdout whole up to 4 MB, stderr tail). */
export function startProcess(name: string, cmd: string, args: string[], env?: NodeJS.ProcessEnv): Managed {
  if (shuttingDown) throw new Error('shutting down')
  const child = spawn(cmd, args, { detached: true, stdio: ['ignore', 'pipe', 'pipe'], env: env ?? process.env })
  let out = ''
  let err = ''
  child.stdout?.on('data', (d: Buffer) => {
    out += d.toString()
    if (out.length > 4 * 1024 * 1024) out = out.slice(-TAIL)
  })
  child.stderr?.on('data', (d: Buffer) => {
    err += d.toString()
    if (err.length > 2 * TAIL) err = err.slice(-TAIL)
  })
  const m: Managed = {
    name,
    command: [cmd, ...args].join(' '),
    child,
    pid: child.pid ?? -1,
    exit: null,
    exited: Promise.resolve({ code: null, signal: null }),
    stdout: () => out,
    stderr: () => err.slice(-TAIL),
  }
  m.exited = new Promise((resolve) => {
    const done = (info: ExitInfo): void => {
      if (m.exit) return
      m.exit = info
      live.delete(m)
      resolve(info)
    }
    child.once('exit', (code, signal) => done({ code, signal }))
    child.once('error', (e) => {
      err += `\n${e.message}`
      done({ code: null, signal: null, error: e.message })
    })
  })
  if (m.pid > 0) live.add(m)
  return m
}

/** Signals the process group we created for a child (spawned detached, so its pgid is its pid). */
function signalGroup(pid: number, sig: NodeJS.Signals): void {
  if (pid <= 0) return
  try {
    process.kill(-pid, sig)
  } catch {
    // group already gone
  }
}

export async function stopProcess(m: Managed, graceMs = 3000): Promise<void> {
  if (m.exit) {
    signalGroup(m.pid, 'SIGKILL') // stray group members, if any
    return
  }
  signalGroup(m.pid, 'SIGTERM')
  signalGroup(m.pid, 'SIGCONT') // a paused (SIGSTOPped) process only acts on SIGTERM once continued
  const stopped = await Promise.race([m.exited.then(() => true), sleep(graceMs).then(() => false)])
  if (!stopped) {
    signalGroup(m.pid, 'SIGKILL')
    await Promise.race([m.exited, sleep(2000)])
  }
  signalGroup(m.pid, 'SIGKILL')
}

/**
 * Freezes a process group with SIGSTOP: it keeps its memory, sockets and connections but uses no CPU
 * until resumeProcess(). The benchmark parks the proxies that are not being measured this way.
 */
export function pauseProcess(m: Managed): void {
  if (!m.exit) signalGroup(m.pid, 'SIGSTOP')
}

export function resumeProcess(m: Managed): void {
  if (!m.exit) signalGroup(m.pid, 'SIGCONT')
}

/** Stops every process still running and refuses to start new ones. */
export async function stopAll(): Promise<void> {
  shuttingDown = true
  await Promise.all([...live].map((m) => stopProcess(m, 2000)))
}

export function killAllSync(): void {
  for (const m of live) signalGroup(m.pid, 'SIGKILL')
  live.clear()
}

/** Runs a process to completion, killing it after timeoutMs. */
export async function runToEnd(
  name: string,
  cmd: string,
  args: string[],
  timeoutMs: number,
): Promise<{ exit: ExitInfo; stdout: string; stderr: string; timedOut: boolean }> {
  const m = startProcess(name, cmd, args)
  let timedOut = false
  const timer = setTimeout(() => {
    timedOut = true
    void stopProcess(m, 1000)
  }, timeoutMs)
  const exit = await m.exited
  clearTimeout(timer)
  return { exit, stdout: m.stdout(), stderr: m.stderr(), timedOut }
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer()
    srv.once('error', reject)
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address()
      const port = typeof addr === 'object' && addr ? addr.port : 0
      srv.close(() => resolve(port))
    })
  })
}

export interface HttpAnswer {
  status: number
  bodyLength: number
}

export function httpRequest(port: number, method: string, body?: Buffer, timeoutMs = 2000): Promise<HttpAnswer> {
  return new Promise((resolve, reject) => {
    const headers: Record<string, string | number> = {}
    if (body) {
      headers['content-type'] = 'application/octet-stream'
      headers['content-length'] = body.length
    }
    const req = http.request({ host: '127.0.0.1', port, method, path: '/', agent: false, headers }, (res) => {
      let n = 0
      res.on('data', (d: Buffer) => {
        n += d.length
      })
      res.on('end', () => resolve({ status: res.statusCode ?? 0, bodyLength: n }))
      res.on('error', reject)
    })
    req.setTimeout(timeoutMs, () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)))
    req.on('error', reject)
    req.end(body)
  })
}

/** Waits until the port answers GET / with 200, a process (of `procs`) exits, or the time is up. */
export async function waitReady(
  port: number,
  procs: Managed | Managed[] | null,
  timeoutMs: number,
): Promise<{ ok: true; ms: number } | { ok: false; reason: string }> {
  const t0 = Date.now()
  const list = procs === null ? [] : Array.isArray(procs) ? procs : [procs]
  let last = 'never accepted a connection'
  while (Date.now() - t0 < timeoutMs) {
    const dead = list.find((p) => p.exit)
    if (dead?.exit) {
      const e = dead.exit
      const who = list.length > 1 ? `${dead.name} ` : ''
      return {
        ok: false,
        reason: `${who}${e.error ?? `exited with code ${e.code}${e.signal ? ` (signal ${e.signal})` : ''}`}`,
      }
    }
    try {
      const a = await httpRequest(port, 'GET', undefined, 1000)
      if (a.status === 200) return { ok: true, ms: Date.now() - t0 }
      last = `answered GET / with ${a.status}`
    } catch (e) {
      const msg = (e as Error).message
      if (!msg.includes('ECONNREFUSED')) last = msg
    }
    await sleep(100)
  }
  return { ok: false, reason: `not ready within ${timeoutMs / 1000} s (${last})` }
}

// ---- /proc sampling ----

let clkTck = 0
function ticksPerSecond(): number {
  if (clkTck === 0) {
    const r = spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' })
    clkTck = Number.parseInt(r.stdout ?? '', 10) || 100
  }
  return clkTck
}

/** Fields of /proc/<pid>/stat after the command name; index 0 is field 3 (state). */
function statFields(pid: number): string[] | null {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, 'latin1')
    return s.slice(s.lastIndexOf(')') + 2).split(' ')
  } catch {
    return null
  }
}

/** The process and all its descendants. */
export function processTree(root: number): number[] {
  const kids = new Map<number, number[]>()
  for (const d of readdirSync('/proc')) {
    if (d.charCodeAt(0) < 48 || d.charCodeAt(0) > 57) continue
    const f = statFields(Number(d))
    if (!f) continue
    const ppid = Number(f[1])
    const list = kids.get(ppid)
    if (list) list.push(Number(d))
    else kids.set(ppid, [Number(d)])
  }
  const out: number[] = []
  const todo = [root]
  while (todo.length > 0) {
    const p = todo.pop() as number
    out.push(p)
    for (const k of kids.get(p) ?? []) todo.push(k)
  }
  return out
}

export function rssKiB(pid: number): number {
  try {
    const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(readFileSync(`/proc/${pid}/status`, 'latin1'))
    return m ? Number(m[1]) : 0
  } catch {
    return 0
  }
}

export const treeRssKiB = (root: number): number => processTree(root).reduce((a, p) => a + rssKiB(p), 0)

/** utime+stime of the process tree, in seconds (children that already exited are not counted). */
export function treeCpuSeconds(root: number): number {
  let ticks = 0
  for (const p of processTree(root)) {
    const f = statFields(p)
    if (f) ticks += Number(f[11]) + Number(f[12])
  }
  return ticks / ticksPerSecond()
}

export interface CoreTimes {
  busy: number
  steal: number
  total: number
}

export function coreTimes(): CoreTimes[] {
  const out: CoreTimes[] = []
  for (const line of readFileSync('/proc/stat', 'latin1').split('\n')) {
    const m = /^cpu(\d+)\s+(.*)$/.exec(line)
    if (!m) continue
    const v = (m[2] ?? '').split(/\s+/).map(Number)
    const [user = 0, nice = 0, system = 0, idle = 0, iowait = 0, irq = 0, softirq = 0, steal = 0] = v
    const total = user + nice + system + idle + iowait + irq + softirq + steal
    out[Number(m[1])] = { busy: user + nice + system + irq + softirq, steal, total }
  }
  return out
}

/** Per-core busy and steal percentages between two coreTimes() snapshots. */
export function coreLoad(a: CoreTimes[], b: CoreTimes[]): { busyPct: number; stealPct: number }[] {
  return b.map((end, i) => {
    const start = a[i] ?? { busy: 0, steal: 0, total: 0 }
    const total = end.total - start.total || 1
    return {
      busyPct: Math.round((100 * (end.busy - start.busy)) / total),
      stealPct: Math.round((100 * (end.steal - start.steal)) / total),
    }
  })
}

/** Samples the tree's RSS every intervalMs until stopped; returns the maximum seen. */
export function rssSampler(roots: number | number[], intervalMs = 200): { stop(): number } {
  const all = typeof roots === 'number' ? [roots] : roots
  const sum = (): number => all.reduce((a, r) => a + treeRssKiB(r), 0)
  let max = sum()
  const t = setInterval(() => {
    max = Math.max(max, sum())
  }, intervalMs)
  return {
    stop() {
      clearInterval(t)
      max = Math.max(max, sum())
      return max
    },
  }
}

// ---- other processes (machine noise) ----

export interface CpuSnapshot {
  /** per process: its own CPU ticks plus those of the children it has reaped */
  ticks: Map<number, number>
  /** this harness and its descendants at the time */
  ours: Set<number>
}

/** CPU ticks of every user-space process (kernel threads are skipped), and which of them are ours. */
export function cpuSnapshot(): CpuSnapshot {
  const ticks = new Map<number, number>()
  for (const d of readdirSync('/proc')) {
    if (d.charCodeAt(0) < 48 || d.charCodeAt(0) > 57) continue
    const pid = Number(d)
    const f = statFields(pid)
    if (!f || pid === 2 || f[1] === '2') continue
    ticks.set(pid, Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14]))
  }
  return { ticks, ours: new Set(processTree(process.pid)) }
}

/**
 * CPU seconds that processes other than this harness and its descendants used between two snapshots:
 * other people's builds and tests running on the same machine, which distort the figures. A process that
 * ended in between is accounted through its parent's reaped-children time, minus what it had used before.
 */
export function foreignCpuSeconds(a: CpuSnapshot, b: CpuSnapshot): number {
  let ticks = 0
  for (const [pid, t] of b.ticks) {
    if (b.ours.has(pid) || a.ours.has(pid)) continue
    ticks += t - (a.ticks.get(pid) ?? 0)
  }
  for (const [pid, t] of a.ticks) {
    if (!b.ticks.has(pid) && !a.ours.has(pid)) ticks -= t
  }
  return Math.max(0, ticks) / ticksPerSecond()
}

/** The machine a benchmark ran on, for its JSON report. */
export function machineInfo(loadavgBefore: number[]): Record<string, unknown> {
  const cpus = os.cpus()
  return {
    cpus: cpus.length,
    model: cpus[0]?.model ?? '',
    kernel: os.release(),
    memoryGiB: Math.round(os.totalmem() / 2 ** 30),
    loadavgBefore,
    loadavgAfter: os.loadavg(),
  }
}
