/**
 * A stream's connection manager timeouts, Envoy's semantics: `stream_idle_timeout` (or the route's `idle_timeout`,
 * which overrides it) and `request_timeout`. One small object per stream sits in the connection manager's deadline
 * sweep (deadlines.ts) under the earliest time either could expire. Activity does not move it: `touch` stamps the
 * sweep's coarse clock (a load and a store), and when the entry comes due it checks the stamp and, if the stream
 * was active meanwhile, takes its place again further on. No Node timer per request.
 */
import type { CompiledRoute } from '../route/router.js'
import type { Deadlines, HasDeadline } from './deadlines.js'
import type { HcmContext } from './hcm.js'

/** What the stream does when one of its timeouts expires (implemented by ActiveStream). */
export interface TimedStream {
  idleTimeout(): void
  requestTimeout(): void
}

export class StreamTimeouts implements HasDeadline {
  deadline = 0
  deadlineSlot = -1
  private readonly stream: TimedStream
  private readonly deadlines: Deadlines
  /** the coarse clock at the stream's last activity */
  private activeAt: number
  /** 0: no idle timeout */
  private readonly idleMs: number
  /** when the whole request must have been received; 0 once it has been (or with no request_timeout) */
  private requestBy: number

  private constructor(stream: TimedStream, deadlines: Deadlines, idleMs: number, requestBy: number, now: number) {
    this.stream = stream
    this.deadlines = deadlines
    this.idleMs = idleMs
    this.requestBy = requestBy
    this.activeAt = now
    this.arm()
  }

  /**
   * The timeouts of a stream whose head has been routed to `route`; null when none applies. `now` is the stream's
   * start (performance.now()), `endStream` whether the head ended the request.
   */
  static start(
    stream: TimedStream,
    hcm: HcmContext,
    route: CompiledRoute | null,
    endStream: boolean,
    now: number,
  ): StreamTimeouts | null {
    // the route's idle_timeout, when set, overrides the connection manager's (0 disables both)
    const idleMs = route !== null && route.idleTimeoutMs >= 0 ? route.idleTimeoutMs : hcm.streamIdleTimeoutMs
    const requestBy = !endStream && hcm.requestTimeoutMs > 0 ? now + hcm.requestTimeoutMs : 0
    if (idleMs === 0 && requestBy === 0) return null
    hcm.deadlines.now = now
    return new StreamTimeouts(stream, hcm.deadlines, idleMs, requestBy, now)
  }

  /** Bytes or headers went one way or the other. */
  touch(): void {
    this.activeAt = this.deadlines.now
  }

  /** The request has been received whole, or the response has started: request_timeout no longer applies. */
  requestDone(): void {
    this.requestBy = 0
    if (this.idleMs === 0) this.cancel()
  }

  cancel(): void {
    this.deadlines.delete(this)
  }

  private arm(): void {
    let at = this.idleMs > 0 ? this.activeAt + this.idleMs : Number.POSITIVE_INFINITY
    if (this.requestBy !== 0 && this.requestBy < at) at = this.requestBy
    if (at !== Number.POSITIVE_INFINITY) this.deadlines.addAt(this, at)
  }

  /** Called by the sweep once `deadline` has passed (the entry is out of the sweep by then). */
  timeout(): void {
    const now = this.deadlines.now
    if (this.requestBy !== 0 && this.requestBy <= now) {
      this.requestBy = 0
      this.stream.requestTimeout()
      return
    }
    if (this.idleMs > 0 && this.activeAt + this.idleMs <= now) {
      this.stream.idleTimeout()
      return
    }
    this.arm()
  }
}
