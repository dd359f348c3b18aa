// The parent's side of the simulated proxies: 1–2 child processes running clients.ts, driven over IPC.
import { type ChildProcess, fork } from 'node:child_process'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { isShuttingDown } from '../proc.js'
import type { Collected, Expect, Request, StartOptions, Summary } from './clients.js'

const here = path.dirname(fileURLToPath(import.meta.url))
/** the simulated proxies' niceness (BENCH_CP_CLIENT_NICE): spread over loom control's core too, they take only what it leaves */
const CLIENT_NICE = niceness(process.env.BENCH_CP_CLIENT_NICE)

function niceness(v: string | undefined): number {
  if (v === undefined || v === '') return 19
  const n = Number(v)
  if (!Number.isInteger(n) || n < -20 || n > 19)
    throw new Error(`BENCH_CP_CLIENT_NICE=${v}: expected an integer from -20 to 19`)
  return n
}
type Body = Record<string, unknown>
type DistOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never
type Command = DistOmit<Request, 'id'>

interface Child {
  proc: ChildProcess
  /** client indices [from, to) */
  from: number
  to: number
  stderr: string
  exited: boolean
}

const all = new Set<Fleet>()

/** Kills every fleet's processes (process groups) at once; for exit handlers. */
export function killFleetsSync(): void {
  for (const f of all) f.kill()
}

export class Fleet {
  readonly size: number
  private readonly children: Child[] = []
  private nextId = 1
  private readonly waiting = new Map<number, { resolve(b: Body): void; reject(e: Error): void }>()

  private constructor(size: number) {
    this.size = size
  }

  /** Forks `processes` children (they inherit this process's CPU affinity) and waits until each has loaded. */
  static async open(size: number, processes: number): Promise<Fleet> {
    if (isShuttingDown()) throw new Error('shutting down')
    const f = new Fleet(size)
    all.add(f)
    const per = Math.ceil(size / processes)
    const ready: Promise<void>[] = []
    for (let from = 0; from < size; from += per) {
      const proc = fork(path.join(here, 'clients.js'), [], {
        detached: true,
        stdio: ['ignore', 'ignore', 'pipe', 'ipc'],
        execArgv: [
          '--max-old-space-size=8192',
          ...(process.env.BENCH_CP_CLIENT_NODE_FLAGS ?? '').split(' ').filter(Boolean),
        ],
      })
      if (CLIENT_NICE !== 0 && proc.pid !== undefined) os.setPriority(proc.pid, CLIENT_NICE)
      const c: Child = { proc, from, to: Math.min(size, from + per), stderr: '', exited: false }
      f.children.push(c)
      // a failed send (the process just died) is reported through the send callback, not as a crash
      proc.on('error', (e) => {
        c.stderr = `${c.stderr}\n${e.message}`.slice(-8192)
      })
      proc.stderr?.on('data', (d: Buffer) => {
        c.stderr = (c.stderr + d.toString()).slice(-8192)
      })
      ready.push(
        new Promise((resolve, reject) => {
          proc.on('message', (m: { type: string; id?: number; message?: string } & Body) => {
            if (m.type === 'ready') resolve()
            else if (m.type === 'reply' || m.type === 'error') {
              const w = f.waiting.get(m.id ?? 0)
              if (w === undefined) return
              f.waiting.delete(m.id ?? 0)
              if (m.type === 'error') w.reject(new Error(`client process: ${m.message}`))
              else w.resolve(m)
            }
          })
          proc.once('exit', (code, signal) => {
            c.exited = true
            const err = new Error(
              `client process ${proc.pid} exited (${signal ?? code}): ${c.stderr.trim().slice(-2000)}`,
            )
            reject(err)
            for (const [id, w] of f.waiting) {
              f.waiting.delete(id)
              w.reject(err)
            }
          })
        }),
      )
    }
    await Promise.all(ready)
    return f
  }

  /** every client process is still running */
  get alive(): boolean {
    return this.children.every((c) => !c.exited)
  }

  get pids(): number[] {
    return this.children.map((c) => c.proc.pid ?? -1).filter((p) => p > 0)
  }

  private ask(c: Child, cmd: Command): Promise<Body> {
    if (c.exited || !c.proc.connected) {
      return Promise.reject(new Error(`client process ${c.proc.pid} is gone: ${c.stderr.slice(-2000)}`))
    }
    const id = this.nextId++
    return new Promise((resolve, reject) => {
      this.waiting.set(id, { resolve, reject })
      c.proc.send({ ...cmd, id }, (err) => {
        if (err === null || !this.waiting.delete(id)) return
        reject(new Error(`client process ${c.proc.pid}: ${err.message}`))
      })
    })
  }

  private askAll(cmd: Command): Promise<Body[]> {
    return Promise.all(this.children.map((c) => this.ask(c, cmd)))
  }

  /** Starts the clients; `full` of them (the first ones) decode everything, the others are lean. */
  async start(server: string, opts: StartOptions): Promise<void> {
    await Promise.all(
      this.children.map((c, k) =>
        this.ask(c, {
          type: 'start',
          server,
          from: c.from,
          to: c.to,
          opts: { ...opts, full: k === 0 ? opts.full : 0 },
        }),
      ),
    )
  }

  async mark(): Promise<void> {
    await this.askAll({ type: 'mark' })
  }

  async summary(expect: Expect): Promise<Summary> {
    const parts = (await this.askAll({ type: 'summary', expect })).map((b) => b.summary as Summary)
    const out: Summary = {
      clients: 0,
      lean: 0,
      connected: 0,
      matching: 0,
      reconnects: 0,
      nacks: 0,
      responses: 0,
      lastResponseAt: 0,
      vhostResponses: 0,
      absent: 0,
      bytes: 0,
      warnings: {},
    }
    for (const p of parts) {
      out.clients += p.clients
      out.lean += p.lean
      out.vhostResponses += p.vhostResponses
      out.absent += p.absent
      out.bytes += p.bytes
      out.connected += p.connected
      out.matching += p.matching
      out.reconnects += p.reconnects
      out.nacks += p.nacks
      out.responses += p.responses
      out.lastResponseAt = Math.max(out.lastResponseAt, p.lastResponseAt)
      for (const [k, v] of Object.entries(p.warnings)) out.warnings[k] = (out.warnings[k] ?? 0) + v
    }
    return out
  }

  async collect(expect: Expect): Promise<Collected> {
    const parts = (await this.askAll({ type: 'collect', expect })).map((b) => b.collected as Collected)
    return { done: parts.flatMap((p) => p.done), received: parts.flatMap((p) => p.received) }
  }

  /** Closes the clients, then ends the processes. */
  async stop(): Promise<void> {
    await Promise.race([this.askAll({ type: 'close' }).catch(() => []), new Promise((r) => setTimeout(r, 2000))])
    for (const c of this.children) c.proc.disconnect?.()
    // a profiled client writes its profile as it exits: give it the time
    const grace = process.env.BENCH_CP_CLIENT_NODE_FLAGS ? 20_000 : 200
    await Promise.race([
      Promise.all(this.children.map((c) => (c.exited ? null : new Promise((r) => c.proc.once('exit', r))))),
      new Promise((r) => setTimeout(r, grace)),
    ])
    this.kill()
    all.delete(this)
  }

  kill(): void {
    for (const c of this.children) {
      if (c.exited || c.proc.pid === undefined) continue
      try {
        process.kill(-c.proc.pid, 'SIGKILL')
      } catch {
        // already gone
      }
    }
  }
}
