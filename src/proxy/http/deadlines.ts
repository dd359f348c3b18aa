/**
 * Route timeouts without a timer per request. Creating and clearing a Node timer costs more than the rest of a
 * small request's bookkeeping, and nearly every request finishes long before its timeout (Envoy's default is 15 s).
 * Streams with a deadline sit in a Set; one unref'd interval sweeps it. A timeout fires at most `TICK_MS` late.
 */
export const TICK_MS = 25

export interface HasDeadline {
  deadline: number
  timeout(): void
}

export class Deadlines {
  private readonly active = new Set<HasDeadline>()
  private timer: NodeJS.Timeout | null = null

  /** `now` is the caller's performance.now(), when it has one at hand. */
  add(s: HasDeadline, ms: number, now = performance.now()): void {
    s.deadline = now + ms
    this.active.add(s)
    if (this.timer === null) {
      this.timer = setInterval(sweep, TICK_MS, this)
      this.timer.unref()
    }
  }

  delete(s: HasDeadline): void {
    this.active.delete(s)
  }

  sweep(): void {
    if (this.active.size === 0) {
      if (this.timer !== null) clearInterval(this.timer)
      this.timer = null
      return
    }
    const now = performance.now()
    for (const s of this.active) {
      if (s.deadline <= now) {
        this.active.delete(s)
        s.timeout()
      }
    }
  }
}

function sweep(d: Deadlines): void {
  d.sweep()
}
