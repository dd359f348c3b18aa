// Open-loop, fixed-rate HTTP/1.1 load generator, corrected for coordinated omission.
//
// Requests are due at fixed instants (start + i / rate). A worker thread is the clock: it sleeps with
// Atomics.wait (sub-millisecond precision, unlike setTimeout) and tells the main thread how many requests
// are due. The main thread sends each due request on an idle keep-alive connection, or queues it when all
// connections are busy. Latency is measured from the request's *scheduled* instant, not from when it was
// written, so time spent waiting for a stalled target is counted instead of silently omitted.
//
// Several targets can be measured at once ("paired" streams): each gets `rate` req/s on its own
// connections, and their schedules interleave evenly (stream k's requests fall between stream k-1's), so
// hiccups of the generator or of the machine hit all streams alike. The benchmark pairs each proxy with
// the direct path to the backend, which makes "added latency" a difference between two simultaneous
// measurements instead of two runs minutes apart.
//
// Usage: node dist/bench/openloop.js '{"targets":[{"port":8080}],"rate":1000,"connections":16,"warmupS":2,"durationS":10}'
// Prints one JSON object ({ streams: OpenLoopResult[] }, in target order) on stdout. Latencies are in µs.
import { readlinkSync, writeFileSync } from 'node:fs'
import net from 'node:net'
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads'
import * as hdr from 'hdr-histogram-js'

export interface OpenLoopConfig {
  targets: { host?: string; port: number; path?: string }[]
  /** per target */
  rate: number
  connections: number
  warmupS: number
  durationS: number
  drainS?: number
}

export interface OpenLoopResult {
  port: number
  rate: number
  connections: number
  warmupS: number
  durationS: number
  /** requests scheduled and sent, warm-up included (use for per-request CPU cost) */
  sent: number
  /** requests scheduled in the measured window */
  measured: number
  completed: number
  non2xx: number
  errors: number
  /** requests still unanswered at the end; recorded with their elapsed time as a lower bound */
  unanswered: number
  achievedRate: number
  latencyUs: { p50: number; p90: number; p99: number; p999: number; max: number; mean: number }
  /** how late the generator itself wrote requests relative to schedule (queueing included) */
  sendLagUs: { p50: number; p99: number; max: number }
}

interface TickerData {
  startNs: string
  intervalNs: number
  total: number
}

const nowNs = (): bigint => process.hrtime.bigint()

/**
 * Linux delays timed sleeps by up to the thread's timer slack (50 us by default) to batch wake-ups; that
 * would show up as generator lag. Lower it for the calling thread where we may (best effort).
 */
function tightenTimerSlack(): void {
  try {
    const tid = readlinkSync('/proc/thread-self').split('/').pop()
    writeFileSync(`/proc/${tid}/timerslack_ns`, '1')
  } catch {
    // not Linux, or not permitted: the default slack only adds a little constant lag
  }
}

function runClock(): void {
  // Clock thread: posts the cumulative number of requests that are due.
  tightenTimerSlack()
  const { startNs, intervalNs, total } = workerData as TickerData
  const start = BigInt(startNs)
  const interval = BigInt(Math.round(intervalNs))
  const cell = new Int32Array(new SharedArrayBuffer(4))
  let due = 0
  while (due < total) {
    const now = nowNs()
    let n = due
    while (n < total && start + BigInt(n) * interval <= now) n++
    if (n > due) {
      due = n
      parentPort?.postMessage(due)
    }
    if (due >= total) break
    const waitMs = Number(start + BigInt(due) * interval - nowNs()) / 1e6
    if (waitMs > 0) Atomics.wait(cell, 0, 0, waitMs)
  }
}

interface Pending {
  scheduled: bigint
  record: boolean
}

type ParseState = 'head' | 'body' | 'chunk-size' | 'chunk-data' | 'trailers' | 'until-close'

class Conn {
  socket: net.Socket | null = null
  current: Pending | null = null
  private buf: Buffer = Buffer.alloc(0)
  private state: ParseState = 'head'
  private remaining = 0
  private status = 0
  private closeAfter = false

  constructor(private readonly stream: Stream) {}

  connect(): Promise<void> {
    return new Promise((resolve, reject) => {
      const s = net.connect({ host: this.stream.host, port: this.stream.port, noDelay: true })
      s.once('connect', () => {
        s.removeListener('error', reject)
        s.on('error', () => {})
        resolve()
      })
      s.once('error', reject)
      s.on('data', (d: Buffer) => this.onData(d))
      s.on('close', () => this.onClose(s))
      this.socket = s
      this.reset()
    })
  }

  get idle(): boolean {
    return this.current === null && this.socket !== null && !this.socket.connecting && !this.socket.destroyed
  }

  send(p: Pending): void {
    this.current = p
    this.stream.recordSendLag(p)
    this.socket?.write(this.stream.request)
  }

  private reset(): void {
    this.buf = Buffer.alloc(0)
    this.state = 'head'
    this.remaining = 0
    this.closeAfter = false
  }

  private onClose(s: net.Socket): void {
    if (this.socket !== s) return
    this.socket = null
    if (this.state === 'until-close' && this.current) {
      this.finish()
    } else if (this.current) {
      this.stream.fail(this.current)
      this.current = null
    }
    this.stream.reconnect(this)
  }

  private onData(d: Buffer): void {
    this.buf = this.buf.length === 0 ? d : Buffer.concat([this.buf, d])
    for (;;) {
      if (this.state === 'head') {
        const end = this.buf.indexOf('\r\n\r\n')
        if (end < 0) return
        this.parseHead(this.buf.toString('latin1', 0, end))
        this.buf = this.buf.subarray(end + 4)
      } else if (this.state === 'body') {
        const take = Math.min(this.remaining, this.buf.length)
        this.remaining -= take
        this.buf = this.buf.subarray(take)
        if (this.remaining > 0) return
        this.finish()
      } else if (this.state === 'chunk-size') {
        const eol = this.buf.indexOf('\r\n')
        if (eol < 0) return
        const size = Number.parseInt(this.buf.toString('latin1', 0, eol), 16)
        this.buf = this.buf.subarray(eol + 2)
        if (size === 0) this.state = 'trailers'
        else {
          this.state = 'chunk-data'
          this.remaining = size + 2
        }
      } else if (this.state === 'chunk-data') {
        const take = Math.min(this.remaining, this.buf.length)
        this.remaining -= take
        this.buf = this.buf.subarray(take)
        if (this.remaining > 0) return
        this.state = 'chunk-size'
      } else if (this.state === 'trailers') {
        if (this.buf.length < 2) return
        if (this.buf[0] === 13 && this.buf[1] === 10) {
          this.buf = this.buf.subarray(2)
        } else {
          const end = this.buf.indexOf('\r\n\r\n')
          if (end < 0) return
          this.buf = this.buf.subarray(end + 4)
        }
        this.finish()
      } else {
        this.buf = Buffer.alloc(0)
        return
      }
    }
  }

  private parseHead(head: string): void {
    const lines = head.split('\r\n')
    this.status = Number.parseInt(lines[0]?.slice(9, 12) ?? '0', 10)
    let length = -1
    let chunked = false
    for (let i = 1; i < lines.length; i++) {
      const line = lines[i] ?? ''
      const colon = line.indexOf(':')
      if (colon < 0) continue
      const name = line.slice(0, colon).trim().toLowerCase()
      const value = line
        .slice(colon + 1)
        .trim()
        .toLowerCase()
      if (name === 'content-length') length = Number.parseInt(value, 10)
      else if (name === 'transfer-encoding') chunked = value.includes('chunked')
      else if (name === 'connection') this.closeAfter = value.includes('close')
    }
    if (this.status === 204 || this.status === 304 || (this.status >= 100 && this.status < 200)) {
      this.state = 'body'
      this.remaining = 0
    } else if (chunked) {
      this.state = 'chunk-size'
    } else if (length >= 0) {
      this.state = 'body'
      this.remaining = length
    } else {
      this.state = 'until-close'
    }
  }

  private finish(): void {
    const p = this.current
    const informational = this.status >= 100 && this.status < 200
    this.state = 'head'
    this.remaining = 0
    if (informational) return
    this.current = null
    if (p) this.stream.complete(p, this.status)
    if (this.closeAfter) {
      this.closeAfter = false
      this.socket?.destroy()
      return
    }
    this.stream.next(this)
  }
}

class Stream {
  readonly host: string
  readonly port: number
  readonly request: Buffer
  readonly latency = hdr.build({ lowestDiscernibleValue: 1, numberOfSignificantValueDigits: 3, useWebAssembly: false })
  readonly sendLag = hdr.build({ lowestDiscernibleValue: 1, numberOfSignificantValueDigits: 3, useWebAssembly: false })
  readonly conns: Conn[] = []
  readonly queue: Pending[] = []
  running = true
  sent = 0
  completed = 0
  measuredCompleted = 0
  non2xx = 0
  errors = 0
  inFlight = 0

  constructor(target: OpenLoopConfig['targets'][number], connections: number) {
    this.host = target.host ?? '127.0.0.1'
    this.port = target.port
    this.request = Buffer.from(
      `GET ${target.path ?? '/'} HTTP/1.1\r\nHost: ${this.host}:${this.port}\r\nUser-Agent: loom-openloop\r\nAccept: */*\r\n\r\n`,
      'latin1',
    )
    for (let i = 0; i < connections; i++) this.conns.push(new Conn(this))
  }

  dispatch(p: Pending): void {
    this.sent++
    this.inFlight++
    for (const c of this.conns) {
      if (c.idle) {
        c.send(p)
        return
      }
    }
    this.queue.push(p)
  }

  next(c: Conn): void {
    const p = this.queue.shift()
    if (p) c.send(p)
  }

  recordSendLag(p: Pending): void {
    if (!p.record) return
    const lagUs = Number(nowNs() - p.scheduled) / 1000
    this.sendLag.recordValue(Math.max(1, Math.round(lagUs)))
  }

  private recordLatency(p: Pending, end: bigint): void {
    if (p.record) this.latency.recordValue(Math.max(1, Math.round(Number(end - p.scheduled) / 1000)))
  }

  complete(p: Pending, status: number): void {
    this.inFlight--
    this.completed++
    if (status < 200 || status >= 300) this.non2xx++
    if (p.record) this.measuredCompleted++
    this.recordLatency(p, nowNs())
  }

  fail(p: Pending): void {
    this.inFlight--
    this.errors++
    this.recordLatency(p, nowNs())
  }

  reconnect(c: Conn): void {
    if (!this.running) return
    const retry = (): void => {
      if (!this.running) return
      c.connect().then(
        () => this.next(c),
        () => {
          this.errors++
          setTimeout(retry, 50)
        },
      )
    }
    setTimeout(retry, 1)
  }

  /** Stops; requests still waiting are recorded with the time they waited so far (a lower bound). */
  finish(cfg: OpenLoopConfig): OpenLoopResult {
    this.running = false
    const unanswered = this.inFlight
    const end = nowNs()
    for (const p of this.queue) this.recordLatency(p, end)
    for (const c of this.conns) {
      if (c.current) this.recordLatency(c.current, end)
      c.socket?.destroy()
    }
    const h = this.latency
    return {
      port: this.port,
      rate: cfg.rate,
      connections: cfg.connections,
      warmupS: cfg.warmupS,
      durationS: cfg.durationS,
      sent: this.sent,
      measured: Math.round(cfg.durationS * cfg.rate),
      completed: this.completed,
      non2xx: this.non2xx,
      errors: this.errors,
      unanswered,
      achievedRate: Math.round(this.measuredCompleted / cfg.durationS),
      latencyUs: {
        p50: h.getValueAtPercentile(50),
        p90: h.getValueAtPercentile(90),
        p99: h.getValueAtPercentile(99),
        p999: h.getValueAtPercentile(99.9),
        max: h.maxValue,
        mean: Math.round(h.mean),
      },
      sendLagUs: {
        p50: this.sendLag.getValueAtPercentile(50),
        p99: this.sendLag.getValueAtPercentile(99),
        max: this.sendLag.maxValue,
      },
    }
  }
}

async function main(cfg: OpenLoopConfig): Promise<void> {
  tightenTimerSlack()
  const streams = cfg.targets.map((t) => new Stream(t, cfg.connections))
  await Promise.all(streams.flatMap((st) => st.conns.map((c) => c.connect())))

  // One schedule for all streams: tick i goes to stream i % n, ticks are 1 / (rate * n) apart.
  const n = streams.length
  const intervalNs = 1e9 / (cfg.rate * n)
  const warmupTicks = Math.round(cfg.warmupS * cfg.rate) * n
  const total = warmupTicks + Math.round(cfg.durationS * cfg.rate) * n
  const start = nowNs() + 20_000_000n
  const schedule = (i: number): bigint => start + BigInt(Math.round(i * intervalNs))

  let tick = 0
  const clock = new Worker(new URL(import.meta.url), {
    workerData: { startNs: start.toString(), intervalNs, total } satisfies TickerData,
  })
  await new Promise<void>((resolve, reject) => {
    clock.on('message', (due: number) => {
      for (; tick < due; tick++) {
        streams[tick % n]?.dispatch({ scheduled: schedule(tick), record: tick >= warmupTicks })
      }
    })
    clock.once('error', reject)
    clock.once('exit', () => resolve())
  })

  // Let outstanding requests finish, within a bound.
  const drainUntil = Date.now() + (cfg.drainS ?? 2) * 1000
  while (streams.some((st) => st.inFlight > 0) && Date.now() < drainUntil) await new Promise((r) => setTimeout(r, 5))
  const results = streams.map((st) => st.finish(cfg))
  process.stdout.write(`${JSON.stringify({ streams: results })}\n`)
  process.exit(0)
}

if (isMainThread) await main(JSON.parse(process.argv[2] ?? '{}') as OpenLoopConfig)
else runClock()
