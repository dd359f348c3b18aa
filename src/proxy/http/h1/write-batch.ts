/**
 * Writes deferred to the end of the event loop iteration.
 *
 * A message that is complete (a head and a small body) is not written the moment it is ready but queued here, and
 * every queued message is written when the poll phase is over (one setImmediate per iteration, not per message).
 * The writes of one iteration then leave back to back. On loopback and in VMs most of a write's cost is waking the
 * process at the other end; written back to back, later writes find it already awake. Envoy defers its writes to
 * the event loop the same way. The delay is the rest of the current iteration: microseconds.
 *
 * A codec holding deferred bytes must flush them itself before anything else it writes or ends on that socket, so
 * that order on the wire never changes.
 */
export interface DeferredWriter {
  flushDeferred(): void
}

const queue: DeferredWriter[] = []
let scheduled = false

function run(): void {
  scheduled = false
  // flushing never defers again, but if it did the newcomer would still be written in this loop. One writer that
  // throws (a bug) must not leave the others' bytes unsent: all are flushed, then the first error is raised.
  let failure: unknown = null
  for (let i = 0; i < queue.length; i++) {
    try {
      queue[i]!.flushDeferred()
    } catch (err) {
      failure ??= err
    }
  }
  queue.length = 0
  if (failure !== null) throw failure
}

export function deferWrite(w: DeferredWriter): void {
  queue.push(w)
  if (!scheduled) {
    scheduled = true
    setImmediate(run)
  }
}
