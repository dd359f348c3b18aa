/**
 * Envoy's route retry policy, compiled once per route: which responses and resets are retriable (`retry_on`), how
 * many retries, the per-try timeout, the back-off and the previous-hosts predicate. The per-request side is
 * `RetryState` (made only for routes with a policy) and `UpstreamAttempt` (one per attempt) in stream.ts.
 */
import type { RetryPolicy } from '../../config/envoy.js'
import { parseDurationMs } from '../../core/duration.js'
import type { UpstreamResetReason } from './types.js'

// retry_on bits
export const R_5XX = 1
export const R_GATEWAY = 2
export const R_RESET = 4
export const R_CONNECT = 8
export const R_4XX = 16
export const R_REFUSED = 32
export const R_CODES = 64
export const R_GRPC_CANCELLED = 128
export const R_GRPC_DEADLINE = 256
export const R_GRPC_INTERNAL = 512
export const R_GRPC_EXHAUSTED = 1024
export const R_GRPC_UNAVAILABLE = 2048

const BITS: Record<string, number> = {
  '5xx': R_5XX,
  'gateway-error': R_GATEWAY,
  reset: R_RESET,
  'connect-failure': R_CONNECT,
  'retriable-4xx': R_4XX,
  'refused-stream': R_REFUSED,
  'retriable-status-codes': R_CODES,
  cancelled: R_GRPC_CANCELLED,
  'deadline-exceeded': R_GRPC_DEADLINE,
  internal: R_GRPC_INTERNAL,
  'resource-exhausted': R_GRPC_EXHAUSTED,
  unavailable: R_GRPC_UNAVAILABLE,
}
const GRPC_BITS = R_GRPC_CANCELLED | R_GRPC_DEADLINE | R_GRPC_INTERNAL | R_GRPC_EXHAUSTED | R_GRPC_UNAVAILABLE

/** Request body bytes kept for a retry; past this the request is not retried (Envoy: the buffer limit). */
export const RETRY_BUFFER_LIMIT_BYTES = 64 * 1024

export class CompiledRetryPolicy {
  readonly retryOn: number
  readonly numRetries: number
  /** 0: none (the route timeout bounds every attempt) */
  readonly perTryTimeoutMs: number
  readonly baseIntervalMs: number
  readonly maxIntervalMs: number
  readonly previousHosts: boolean
  /** host picks after the first when the predicate rejects one (Envoy: host_selection_retry_max_attempts, default 1) */
  readonly hostSelectionAttempts: number
  readonly statusCodes: ReadonlySet<number>

  constructor(p: RetryPolicy) {
    let bits = 0
    for (const t of (p.retry_on ?? '').split(',')) {
      const b = BITS[t.trim()]
      if (b !== undefined) bits |= b
    }
    this.retryOn = bits
    this.numRetries = p.num_retries ?? 1
    this.perTryTimeoutMs = p.per_try_timeout === undefined ? 0 : (parseDurationMs(p.per_try_timeout) ?? 0)
    const base = p.retry_back_off === undefined ? 25 : (parseDurationMs(p.retry_back_off.base_interval) ?? 25)
    this.baseIntervalMs = Math.max(1, base)
    const max = p.retry_back_off?.max_interval
    this.maxIntervalMs =
      max === undefined ? this.baseIntervalMs * 10 : (parseDurationMs(max) ?? this.baseIntervalMs * 10)
    this.previousHosts = (p.retry_host_predicate ?? []).length > 0
    const hs = p.host_selection_retry_max_attempts
    this.hostSelectionAttempts = hs === undefined ? 1 : Number(hs)
    this.statusCodes = new Set(p.retriable_status_codes ?? [])
  }

  /** Whether a response with these headers may be retried. */
  retriableResponse(status: number, grpcStatus: string | undefined): boolean {
    const on = this.retryOn
    if ((on & R_5XX) !== 0 && status >= 500) return true
    if ((on & R_GATEWAY) !== 0 && (status === 502 || status === 503 || status === 504)) return true
    if ((on & R_4XX) !== 0 && status === 409) return true
    if ((on & R_CODES) !== 0 && this.statusCodes.has(status)) return true
    if ((on & GRPC_BITS) !== 0 && grpcStatus !== undefined) {
      switch (grpcStatus) {
        case '1':
          return (on & R_GRPC_CANCELLED) !== 0
        case '4':
          return (on & R_GRPC_DEADLINE) !== 0
        case '8':
          return (on & R_GRPC_EXHAUSTED) !== 0
        case '13':
          return (on & R_GRPC_INTERNAL) !== 0
        case '14':
          return (on & R_GRPC_UNAVAILABLE) !== 0
      }
    }
    return false
  }

  /**
   * Whether a reset may be retried (Envoy's wouldRetryFromReset): never a pool overflow; `5xx`, `gateway-error` and
   * `reset` take every other reset; `connect-failure` a failed or timed out connect; `refused-stream` REFUSED_STREAM.
   * A per-try timeout counts as a reset (`reason` null).
   */
  retriableReset(reason: UpstreamResetReason | null): boolean {
    if (reason === 'overflow') return false
    const on = this.retryOn
    if ((on & (R_5XX | R_GATEWAY | R_RESET)) !== 0) return true
    if ((on & R_CONNECT) !== 0 && (reason === 'connect_failure' || reason === 'connect_timeout')) return true
    if ((on & R_REFUSED) !== 0 && reason === 'refused_stream') return true
    return false
  }

  /**
   * Envoy's jittered exponential back-off for retry `n` (1, 2, ...): uniform in [0, (2^n - 1) × base), then at most
   * max_interval (as Envoy's JitteredExponentialBackOffStrategy: the cap applies to the drawn value).
   */
  backOffMs(n: number): number {
    const span = this.baseIntervalMs * (2 ** Math.min(n, 30) - 1)
    return Math.min(Math.floor(Math.random() * span), this.maxIntervalMs)
  }
}

export function compileRetryPolicy(p: RetryPolicy | undefined): CompiledRetryPolicy | null {
  return p === undefined ? null : new CompiledRetryPolicy(p)
}
