/**
 * Route timeouts without a timer per request. Creating and clearing a Node timer costs more than the rest of a
 * small request's bookkeeping, and nearly every request finishes long before its timeout (Envoy's default is 15 s).
 * Streams with a deadline sit in an array, each knowing its slot, so adding and removing one is a store and a pop
 * (no hashing, no rehashing as the set grows and shrinks); one unref'd interval sweeps it. A timeout fires at most
 * `TICK_MS` late.
 */
import { performance } from 'node:perf_hooks'

export const TICK_MS = 25

export interface HasDeadline {
  deadline: number
  /** the stream's index in Deadlines, -1 when it has none pending */
  deadlineSlot: number
  timeout(): void
}

export class Deadlines {
  private readonly active: HasDeadline[] = []
  private timer: NodeJS.Timeout | null = null
  /**
   * A coarse clock: performance.now() as of the last add or sweep. While anything is pending the sweep runs, so
   * it is at most one tick behind; activity stamps (stream-timeouts.ts) read it instead of the real clock.
   */
  now = performance.now()

  /** `now` is the caller's performance.now(), when it has one at hand. */
  add(s: HasDeadline, ms: number, now = performance.now()): void {
    this.now = now
    this.addAt(s, now + ms)
  }

  /** Pending until `at` (performance.now() ms). */
  addAt(s: HasDeadline, at: number): void {
    s.deadline = at
    if (s.deadlineSlot === -1) {
      s.deadlineSlot = this.active.length
      this.active.push(s)
    }
    if (this.timer === null) {
      this.timer = setInterval(sweep, TICK_MS, this)
      this.timer.unref()
    }
  }

  delete(s: HasDeadline): void {
    const slot = s.deadlineSlot
    if (slot === -1) return
    s.deadlineSlot = -1
    const last = this.active.pop()!
    if (last !== s) {
      this.active[slot] = last
      last.deadlineSlot = slot
    }
  }

  get size(): number {
    return this.active.length
  }

  sweep(): void {
    const active = this.active
    if (active.length === 0) {
      if (this.timer !== null) clearInterval(this.timer)
      this.timer = null
      return
    }
    const now = performance.now()
    this.now = now
    // expired streams are taken out first and told after, so what a timeout does (new streams, other streams
    // ending) cannot disturb the walk; walking down, a removal only moves an already visited stream into the gap
    let expired: HasDeadline[] | null = null
    for (let i = active.length - 1; i >= 0; i--) {
      const s = active[i]!
      if (s.deadline <= now) {
        this.delete(s)
        ;(expired ??= []).push(s)
      }
    }
    if (expired !== null) for (const s of expired) s.timeout()
  }
}

function sweep(d: Deadlines): void {
  d.sweep()
}
