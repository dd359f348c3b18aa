/**
 * A stage between the stream and a codec's request that passes every call through, both ways: subclasses override
 * the calls they watch (GuardedRequest in pools.ts: circuit-breaker slots and outlier results; LatencySample: the
 * peak-EWMA sample) and call `super` to pass them on.
 */
import type { Buffer } from 'node:buffer'
import type { Headers } from './headers.js'
import type { UpstreamCallbacks, UpstreamRequest, UpstreamResetReason } from './types.js'

export class UpstreamPassThrough implements UpstreamRequest, UpstreamCallbacks {
  readonly hostKey: string
  /** the codec's request (or the next stage), set once the pool has made it */
  inner: UpstreamRequest | null = null
  protected readonly cb: UpstreamCallbacks

  constructor(hostKey: string, cb: UpstreamCallbacks) {
    this.hostKey = hostKey
    this.cb = cb
  }

  // upstream → stream
  onUpstreamHeaders(status: number, headers: Headers, endStream: boolean): void {
    this.cb.onUpstreamHeaders(status, headers, endStream)
  }
  onUpstreamData(chunk: Buffer, endStream: boolean): void {
    this.cb.onUpstreamData(chunk, endStream)
  }
  onUpstreamTrailers(trailers: Headers): void {
    this.cb.onUpstreamTrailers(trailers)
  }
  onUpstreamReset(reason: UpstreamResetReason, detail: string): void {
    this.cb.onUpstreamReset(reason, detail)
  }
  onUpstreamDrain(): void {
    this.cb.onUpstreamDrain()
  }

  // stream → upstream
  sendData(chunk: Buffer, endStream: boolean): boolean {
    return this.inner!.sendData(chunk, endStream)
  }
  sendTrailers(trailers: Headers): void {
    this.inner!.sendTrailers(trailers)
  }
  reset(): void {
    this.inner?.reset()
  }
  pauseResponse(): void {
    this.inner?.pauseResponse()
  }
  resumeResponse(): void {
    this.inner?.resumeResponse()
  }
}
