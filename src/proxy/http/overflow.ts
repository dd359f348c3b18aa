/** A request refused by a circuit breaker before reaching a codec: it fails on the next tick (503 `UO`). */
import type { UpstreamCallbacks, UpstreamRequest } from './types.js'

export class OverflowRequest implements UpstreamRequest {
  readonly hostKey: string
  #cancelled = false

  constructor(hostKey: string, cb: UpstreamCallbacks, detail: string) {
    this.hostKey = hostKey
    process.nextTick(() => {
      if (!this.#cancelled) cb.onUpstreamReset('overflow', detail)
    })
  }

  sendData(): boolean {
    return true
  }
  sendTrailers(): void {}
  reset(): void {
    this.#cancelled = true
  }
  pauseResponse(): void {}
  resumeResponse(): void {}
}
