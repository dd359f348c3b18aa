/**
 * The watch side of a store, shared by the embedded stores (base-store.ts) and the etcd store: a bounded history of
 * events, the watchers, and the revision below which history is no longer complete.
 */
import { StoreCompactedError, type Watch, type WatchEvent } from './store.js'

export const DEFAULT_HISTORY_LIMIT = 10_000

interface Watcher {
  onEvent: (e: WatchEvent) => void
  /** events at or below it are not delivered (a watch from a revision not reached yet) */
  after: number
  closed: boolean
}

export class WatchHistory {
  private events: WatchEvent[] = []
  /** events up to this revision may be missing from `events` */
  private compacted = 0
  private readonly limit: number
  private readonly watchers = new Set<Watcher>()

  constructor(limit = DEFAULT_HISTORY_LIMIT) {
    if (!Number.isSafeInteger(limit) || limit < 0)
      throw new RangeError(`historyLimit must be an integer >= 0: ${limit}`)
    this.limit = limit
  }

  /** Events up to `revision` are not all known any more (a snapshot loaded, the store listed again). */
  forgetThrough(revision: number): void {
    this.compacted = Math.max(this.compacted, revision)
  }

  /**
   * Delivers the kept events after `fromRevision` synchronously, then live ones as `publish` gets them. Throws
   * StoreCompactedError when events after `fromRevision` are no longer kept.
   */
  watch(fromRevision: number, onEvent: (e: WatchEvent) => void): Watch {
    if (!Number.isSafeInteger(fromRevision) || fromRevision < 0) {
      throw new RangeError(`watch: fromRevision must be an integer >= 0: ${fromRevision}`)
    }
    if (fromRevision < this.compacted) throw new StoreCompactedError(fromRevision, this.compacted)
    const h = this.events
    let lo = 0
    let hi = h.length
    while (lo < hi) {
      const mid = (lo + hi) >>> 1
      if (h[mid]!.revision <= fromRevision) lo = mid + 1
      else hi = mid
    }
    for (const e of h.slice(lo)) onEvent(e)
    const watcher: Watcher = { onEvent, after: fromRevision, closed: false }
    this.watchers.add(watcher)
    return {
      close: () => {
        watcher.closed = true
        this.watchers.delete(watcher)
      },
    }
  }

  /**
   * Keeps `events` (dropping the oldest beyond the limit) and hands them to every watcher in order. An exception
   * from a watcher affects neither the write nor the other watchers; it is rethrown asynchronously.
   */
  publish(events: WatchEvent[]): void {
    for (const e of events) this.events.push(e)
    const excess = this.events.length - this.limit
    if (excess > 0) {
      this.forgetThrough(this.events[excess - 1]!.revision)
      this.events.splice(0, excess)
    }
    if (this.watchers.size === 0) return
    const watchers = [...this.watchers]
    for (const e of events) {
      for (const w of watchers) {
        if (w.closed || e.revision <= w.after) continue
        try {
          w.onEvent(e)
        } catch (error) {
          queueMicrotask(() => {
            throw error
          })
        }
      }
    }
  }

  /** Ends every watch (the store is closing). */
  closeAll(): void {
    for (const w of this.watchers) w.closed = true
    this.watchers.clear()
  }
}
