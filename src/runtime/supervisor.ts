/**
 * Process supervision for `loom up`: start a process with its output appended to a log file, restart it with
 * exponential backoff when it exits unexpectedly, and stop it with SIGTERM then SIGKILL.
 *
 * A process that cannot be started at all (`spawn ... ENOENT`, `EACCES`) counts as one that exited at once: Node
 * reports it with an 'error' event and never an 'exit' event, so without this a stop would wait for an exit that
 * never comes. Every exit is described (`spawn x ENOENT`, `exited with code 3`, `killed by SIGKILL`) and the last
 * lines the process wrote are kept in memory, so whoever waits for the process can say at once why it is gone.
 */
import { type ChildProcess, type StdioOptions, spawn } from 'node:child_process'
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
  /**
   * Give the process an IPC channel to this one (Loom's own processes only): when this process dies, even by
   * SIGKILL, the channel closes and the child stops itself (see `exitWithParent` in parent.ts).
   */
  ipc?: boolean
  /**
   * Run the process in a process group of its own and signal the whole group (applications: a shell or `npm start`
   * that started children of its own must not leave them behind when it is stopped).
   */
  group?: boolean
}

/** How a process ended: an exit code, a signal, or an error before it ever ran. */
export interface ExitInfo {
  code: number | null
  signal: NodeJS.Signals | null
  /** the spawn error (`spawn <command> ENOENT`) when the process never started */
  error?: Error
}

/** `spawn x ENOENT`, `exited with code 3`, `killed by SIGKILL`. */
export function describeExit(e: ExitInfo): string {
  if (e.error !== undefined) return e.error.message
  if (e.signal !== null) return `killed by ${e.signal}`
  return `exited with code ${e.code}`
}

const MAX_BACKOFF_MS = 30_000
const TAIL_LINES = 20
/** after 'exit', how long to wait for the last output to arrive before reporting the exit */
const DRAIN_MS = 250

export class Supervised {
  readonly spec: ProcessSpec
  proc: ChildProcess | null = null
  restarts = 0
  /** how the last run ended */
  lastExit: ExitInfo | null = null
  private stopping = false
  private backoffMs = 500
  private timer: NodeJS.Timeout | null = null
  private readonly out: WriteStream
  private startedAt = 0
  private readonly exitWaiters: (() => void)[] = []
  private readonly exitListeners = new Set<(e: ExitInfo) => void>()
  private tail: string[] = []
  private partialTail = ''
  onStart: ((p: ChildProcess) => void) | null = null
  /** restart after an unexpected exit (off while `loom up` starts: a failure to start is reported, not retried) */
  restartOnExit = true

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

  /** No restarts are wanted any more (a stop has begun). */
  get held(): boolean {
    return this.stopping
  }

  /** The last lines the process wrote (stdout and stderr), oldest first. */
  lastLines(n = 10): string[] {
    const lines = this.partialTail === '' ? this.tail : [...this.tail, this.partialTail]
    return lines.slice(-n)
  }

  /** Called once per exit (after the output written before it has been read), until the returned function is called. */
  onExit(listener: (e: ExitInfo) => void): () => void {
    this.exitListeners.add(listener)
    return () => this.exitListeners.delete(listener)
  }

  private record(d: Buffer): void {
    const lines = (this.partialTail + d.toString()).split('\n')
    this.partialTail = lines.pop() ?? ''
    if (this.partialTail.length > 4096) this.partialTail = this.partialTail.slice(-4096)
    for (const l of lines) this.tail.push(l.length > 4096 ? l.slice(0, 4096) : l)
    if (this.tail.length > TAIL_LINES) this.tail = this.tail.slice(-TAIL_LINES)
  }

  start(): ChildProcess | null {
    if (this.stopping) return null
    const { command, args, env, cwd } = this.spec
    const stdio: StdioOptions = this.spec.ipc ? ['ignore', 'pipe', 'pipe', 'ipc'] : ['ignore', 'pipe', 'pipe']
    this.tail = []
    this.partialTail = ''
    this.lastExit = null
    let p: ChildProcess
    try {
      p = spawn(command, args, { env, cwd, stdio, detached: this.spec.group === true })
    } catch (err) {
      // a synchronous failure (bad arguments): report it like an asynchronous one
      const e = err as Error
      process.nextTick(() => this.exited({ code: null, signal: null, error: e }, null))
      return null
    }
    this.proc = p
    this.startedAt = Date.now()
    if (this.spec.ipc) {
      // the channel is only there to close when this process dies; it must not keep this process alive
      p.channel?.unref()
    }
    p.stdout!.on('data', (d: Buffer) => {
      this.out.write(d)
      this.record(d)
    })
    let partial = ''
    p.stderr!.on('data', (d: Buffer) => {
      this.out.write(d)
      this.record(d)
      if (this.spec.onStderrLine === undefined) return
      partial += d.toString()
      const lines = partial.split('\n')
      partial = lines.pop() ?? ''
      for (const l of lines) this.spec.onStderrLine(l)
    })
    let done = false
    const finish = (info: ExitInfo) => {
      if (done) return
      done = true
      this.exited(info, p)
    }
    p.on('error', (err) => {
      // before the process ran (no pid): it never will, and no 'exit' event follows
      if (p.pid === undefined) {
        this.out.write(`[loom] cannot start ${command}: ${err.message}\n`)
        finish({ code: null, signal: null, error: err })
      } else this.out.write(`[loom] ${this.spec.name}: ${err.message}\n`)
    })
    p.on('exit', (code, signal) => finish({ code, signal }))
    this.onStart?.(p)
    return p
  }

  private exited(info: ExitInfo, p: ChildProcess | null): void {
    this.out.write(`[loom] ${this.spec.name} ${describeExit(info)}\n`)
    if (this.proc === p) this.proc = null
    this.lastExit = info
    for (const w of this.exitWaiters.splice(0)) w()
    // the output written just before the exit may still be in the pipes: let it arrive before telling why
    const report = () => {
      for (const l of [...this.exitListeners]) l(info)
    }
    if (p === null || (p.stdout?.readableEnded !== false && p.stderr?.readableEnded !== false)) report()
    else {
      let pending = 2
      const t = setTimeout(report, DRAIN_MS)
      const one = () => {
        if (--pending === 0) {
          clearTimeout(t)
          report()
        }
      }
      for (const s of [p.stdout, p.stderr]) {
        if (s === null || s.readableEnded) one()
        else s.once('end', one).once('close', one)
      }
    }
    if (this.stopping || !this.restartOnExit) return
    // a process that ran a while gets a fresh backoff; one that keeps crashing waits longer each time
    if (Date.now() - this.startedAt > 10_000) this.backoffMs = 500
    log('warn', 'up', 'process exited; restarting', {
      name: this.spec.name,
      why: describeExit(info),
      in_ms: this.backoffMs,
    })
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

  /** SIGKILL now, without waiting (the last resort of a second Ctrl-C). */
  kill(): void {
    this.hold()
    const p = this.proc
    if (p !== null && this.running) this.signal(p, 'SIGKILL')
  }

  /** Signals the process, or its whole process group when it has one. */
  private signal(p: ChildProcess, sig: NodeJS.Signals): void {
    if (this.spec.group === true && p.pid !== undefined) {
      try {
        process.kill(-p.pid, sig)
        return
      } catch {
        // the group is gone (or never was): the process itself
      }
    }
    p.kill(sig)
  }

  /** Whether anything of the process group started as `pid` is still there. */
  private groupAlive(pid: number): boolean {
    try {
      process.kill(-pid, 0)
      return true
    } catch {
      return false
    }
  }

  /**
   * SIGTERM, then SIGKILL after `graceMs`; resolves when the process is gone (with a process group: when the group
   * is gone too, or has been sent SIGKILL at the end of the grace). No restart follows.
   */
  stop(graceMs = 5000): Promise<void> {
    this.hold()
    const p = this.proc
    if (p === null || !this.running) {
      this.out.end()
      return Promise.resolve()
    }
    const deadline = Date.now() + graceMs
    return new Promise((resolve) => {
      const kill = setTimeout(() => this.signal(p, 'SIGKILL'), graceMs)
      this.exitWaiters.push(() => {
        clearTimeout(kill)
        const finish = () => {
          this.out.end()
          resolve()
        }
        const pid = p.pid
        if (this.spec.group !== true || pid === undefined) return finish()
        // the leader is gone; what it started got the same SIGTERM and has the rest of the grace
        const poll = () => {
          if (!this.groupAlive(pid)) return finish()
          if (Date.now() >= deadline) {
            try {
              process.kill(-pid, 'SIGKILL')
            } catch {
              // gone meanwhile
            }
            return finish()
          }
          setTimeout(poll, 50)
        }
        poll()
      })
      this.signal(p, 'SIGTERM')
    })
  }
}
