/**
 * Feeds a host's peak-EWMA latency estimate (src/proxy/cluster/lb/peak-ewma.ts): sits between the stream (or a
 * GuardedRequest) and the codec's request, stamps the time the request is handed to the pool, and reports the time
 * to the response headers, or to the failure, once. Made only for clusters whose policy samples latency.
 */
import type { Host } from '../cluster/index.js'
import type { Headers } from './headers.js'
import { UpstreamPassThrough } from './pass-through.js'
import type { UpstreamCallbacks, UpstreamResetReason } from './types.js'

export class LatencySample extends UpstreamPassThrough {
  readonly #host: Host
  readonly #start = performance.now()
  #open = true

  constructor(host: Host, cb: UpstreamCallbacks) {
    super(host.key, cb)
    this.#host = host
  }

  #failed(): void {
    if (!this.#open) return
    this.#open = false
    const now = performance.now()
    this.#host.latency?.observeFailure(now - this.#start, now)
  }

  override onUpstreamHeaders(status: number, headers: Headers, endStream: boolean): void {
    // the codecs drop interim (1xx) heads; a 101 that upgrades the connection counts as the answer
    if (this.#open) {
      this.#open = false
      const now = performance.now()
      this.#host.latency?.observe(now - this.#start, now)
    }
    super.onUpstreamHeaders(status, headers, endStream)
  }
  override onUpstreamReset(reason: UpstreamResetReason, detail: string): void {
    if (reason !== 'overflow') this.#failed()
    super.onUpstreamReset(reason, detail)
  }
  /** The stream gives up before the answer (route timeout, client gone): counts as a failure after that long. */
  override reset(): void {
    this.#failed()
    super.reset()
  }
}
