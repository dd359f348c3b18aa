/**
 * Process supervision for `loom up`: start a process with its output appended to a log file, restart it with
 * exponential backoff when it exits unexpectedly, and stop it with SIGTERM then SIGKILL.
 */
import { type ChildProcess, spawn } from 'node:child_process'
import { createWriteStream, mkdirSync, type WriteStream } from 'node:fs'
import { dirname } from 'node:path'
import { log } from '../core/log.js'

export interface ProcessSpec {
  name: string
  command: string
  args: string[]
  env: NodeJS.ProcessEnv
  cwd: string
  logFile: string
  /** called with each line the process writes to stderr (for ready lines); optional */
  onStderrLine?: (line: string) => void
}

const MAX_BACKOFF_MS = 30_000

export class Supervised {
  readonly spec: ProcessSpec
  proc: ChildProcess | null = null
  restarts = 0
  private stopping = false
  private backoffMs = 500
  private timer: NodeJS.Timeout | null = null
  private readonly out: WriteStream
  private startedAt = 0
  private readonly exitWaiters: (() => void)[] = []
  onStart: ((p: ChildProcess) => void) | null = null

  constructor(spec: ProcessSpec) {
    this.spec = spec
    mkdirSync(dirname(spec.logFile), { recursive: true })
    this.out = createWriteStream(spec.logFile, { flags: 'a' })
    this.out.on('error', () => {})
  }

  get pid(): number | null {
    return this.proc?.pid ?? null
  }

  get running(): boolean {
    return this.proc !== null && this.proc.exitCode === null && this.proc.signalCode === null
  }

  start(): ChildProcess {
    const { command, args, env, cwd } = this.spec
    const p = spawn(command, args, { env, cwd, stdio: ['ignore', 'pipe', 'pipe'] })
    this.proc = p
    this.startedAt = Date.now()
    p.stdout!.pipe(this.out, { end: false })
    let partial = ''
    p.stderr!.on('data', (d: Buffer) => {
      this.out.write(d)
      if (this.spec.onStderrLine === undefined) return
      partial += d.toString()
      const lines = partial.split('\n')
      partial = lines.pop() ?? ''
      for (const l of lines) this.spec.onStderrLine(l)
    })
    p.on('error', (err) => this.out.write(`[loom] cannot start ${command}: ${err.message}\n`))
    p.on('exit', (code, signal) => this.onExit(code, signal))
    this.onStart?.(p)
    return p
  }

  private onExit(code: number | null, signal: NodeJS.Signals | null): void {
    this.out.write(`[loom] ${this.spec.name} exited (${signal ?? `code ${code}`})\n`)
    this.proc = null
    for (const w of this.exitWaiters.splice(0)) w()
    if (this.stopping) return
    // a process that ran a while gets a fresh backoff; one that keeps crashing waits longer each time
    if (Date.now() - this.startedAt > 10_000) this.backoffMs = 500
    log('warn', 'up', 'process exited; restarting', { name: this.spec.name, code, signal, in_ms: this.backoffMs })
    this.timer = setTimeout(() => {
      this.timer = null
      if (this.stopping) return
      this.restarts++
      this.start()
    }, this.backoffMs)
    this.backoffMs = Math.min(this.backoffMs * 2, MAX_BACKOFF_MS)
  }

  /** No more restarts from now on (shutdown has begun; the process may be exiting on a signal of its own). */
  hold(): void {
    this.stopping = true
    if (this.timer !== null) {
      clearTimeout(this.timer)
      this.timer = null
    }
  }

  /** SIGTERM, then SIGKILL after `graceMs`; resolves when the process is gone. No restart follows. */
  stop(graceMs = 5000): Promise<void> {
    this.stopping = true
    if (this.timer !== null) clearTimeout(this.timer)
    const p = this.proc
    if (p === null) {
      this.out.end()
      return Promise.resolve()
    }
    return new Promise((resolve) => {
      const kill = setTimeout(() => p.kill('SIGKILL'), graceMs)
      this.exitWaiters.push(() => {
        clearTimeout(kill)
        this.out.end()
        resolve()
      })
      p.kill('SIGTERM')
    })
  }
}
