/**
 * Feeds a host's peak-EWMA latency estimate (src/proxy/cluster/lb/peak-ewma.ts): sits between the stream (or a
 * GuardedRequest) and the codec's request, stamps the time the request is handed to the pool, and reports the time
 * to the response headers, or to the failure, once. Made only for clusters whose policy samples latency.
 */
import type { Buffer } from 'node:buffer'
import type { Host } from '../cluster/index.js'
import type { Headers } from './headers.js'
import type { UpstreamCallbacks, UpstreamRequest, UpstreamResetReason } from './types.js'

export class LatencySample implements UpstreamRequest, UpstreamCallbacks {
  readonly hostKey: string
  inner: UpstreamRequest | null = null
  readonly #host: Host
  readonly #cb: UpstreamCallbacks
  readonly #start = performance.now()
  #open = true

  constructor(host: Host, cb: UpstreamCallbacks) {
    this.hostKey = host.key
    this.#host = host
    this.#cb = cb
  }

  #failed(): void {
    if (!this.#open) return
    this.#open = false
    const now = performance.now()
    this.#host.latency?.observeFailure(now - this.#start, now)
  }

  // upstream → stream
  onUpstreamHeaders(status: number, headers: Headers, endStream: boolean): void {
    // the codecs drop interim (1xx) heads; a 101 that upgrades the connection counts as the answer
    if (this.#open) {
      this.#open = false
      const now = performance.now()
      this.#host.latency?.observe(now - this.#start, now)
    }
    this.#cb.onUpstreamHeaders(status, headers, endStream)
  }
  onUpstreamData(chunk: Buffer, endStream: boolean): void {
    this.#cb.onUpstreamData(chunk, endStream)
  }
  onUpstreamTrailers(trailers: Headers): void {
    this.#cb.onUpstreamTrailers(trailers)
  }
  onUpstreamReset(reason: UpstreamResetReason, detail: string): void {
    if (reason !== 'overflow') this.#failed()
    this.#cb.onUpstreamReset(reason, detail)
  }
  onUpstreamDrain(): void {
    this.#cb.onUpstreamDrain()
  }

  // stream → upstream
  sendData(chunk: Buffer, endStream: boolean): boolean {
    return this.inner!.sendData(chunk, endStream)
  }
  sendTrailers(trailers: Headers): void {
    this.inner!.sendTrailers(trailers)
  }
  /** The stream gives up before the answer (route timeout, client gone): counts as a failure after that long. */
  reset(): void {
    this.#failed()
    this.inner?.reset()
  }
  pauseResponse(): void {
    this.inner?.pauseResponse()
  }
  resumeResponse(): void {
    this.inner?.resumeResponse()
  }
}
