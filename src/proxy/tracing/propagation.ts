/**
 * Trace context on the wire: W3C Trace Context (`traceparent`, `tracestate`) and Zipkin's B3, as a single `b3`
 * header or as the `x-b3-*` headers. A request's context is read once, when its span starts; the upstream request
 * carries the new span's context in the format the request came in with, and always as W3C.
 *
 * Ids are kept as lower-case hex strings (32 digits for a trace, 16 for a span), the form the headers carry; they
 * become bytes only when a batch is encoded for export.
 */
import { randomFillSync } from 'node:crypto'
import type { Headers } from '../http/headers.js'

/** How the incoming context was written: W3C only, B3 single header, B3 multi-header. */
export const FORMAT_W3C = 0
export const FORMAT_B3 = 1
export const FORMAT_B3_MULTI = 2
export type ContextFormat = typeof FORMAT_W3C | typeof FORMAT_B3 | typeof FORMAT_B3_MULTI

/** A parent's context as read from a request. `sampled` is null when the parent left the decision open. */
export interface ParentContext {
  traceId: string
  spanId: string
  sampled: boolean | null
  /** W3C `tracestate`, carried on unchanged; '' when none */
  traceState: string
  format: ContextFormat
}

const HEX_RE16 = /^[0-9a-f]{16}$/
const HEX_RE32 = /^[0-9a-f]{32}$/
const ZERO16 = '0000000000000000'
const ZERO32 = '00000000000000000000000000000000'

/** `traceparent: 00-<trace-id>-<parent-id>-<flags>`; null when absent or malformed (a new trace starts). */
export function parseTraceparent(value: string): { traceId: string; spanId: string; sampled: boolean } | null {
  const v = value.trim().toLowerCase()
  if (v.length < 55 || v[2] !== '-' || v[35] !== '-' || v[52] !== '-') return null
  const version = v.slice(0, 2)
  // version ff is forbidden; a future version may append fields after the flags
  if (!/^[0-9a-f]{2}$/.test(version) || version === 'ff' || (version === '00' && v.length !== 55)) return null
  if (version !== '00' && v.length > 55 && v[55] !== '-') return null
  const traceId = v.slice(3, 35)
  const spanId = v.slice(36, 52)
  const flags = v.slice(53, 55)
  if (!HEX_RE32.test(traceId) || !HEX_RE16.test(spanId) || !/^[0-9a-f]{2}$/.test(flags)) return null
  if (traceId === ZERO32 || spanId === ZERO16) return null
  return { traceId, spanId, sampled: (Number.parseInt(flags, 16) & 1) === 1 }
}

/** A B3 trace id (64 or 128 bits) as 32 hex digits, or null. */
function b3TraceId(s: string): string | null {
  const t = s.toLowerCase()
  if (HEX_RE32.test(t)) return t === ZERO32 ? null : t
  if (HEX_RE16.test(t)) return t === ZERO16 ? null : ZERO16 + t
  return null
}

function b3Sampled(s: string | undefined): boolean | null {
  if (s === undefined) return null
  const t = s.toLowerCase()
  if (t === '1' || t === 'true' || t === 'd') return true
  if (t === '0' || t === 'false') return false
  return null
}

/**
 * The single `b3` header: `{trace}-{span}[-{sampling}[-{parent}]]`, or the sampling state alone (`0`, `1`, `d`).
 * Returns the context, `false`/`true` for a bare sampling state, or null when malformed.
 */
export function parseB3(value: string): { traceId: string; spanId: string; sampled: boolean | null } | boolean | null {
  const v = value.trim()
  if (v.length <= 1) {
    const s = b3Sampled(v)
    return s === null ? null : s
  }
  const parts = v.split('-')
  if (parts.length < 2 || parts.length > 4) return null
  const traceId = b3TraceId(parts[0]!)
  const spanId = parts[1]!.toLowerCase()
  if (traceId === null || !HEX_RE16.test(spanId) || spanId === ZERO16) return null
  const sampled = parts.length > 2 ? b3Sampled(parts[2]) : null
  if (parts.length > 2 && sampled === null) return null
  return { traceId, spanId, sampled }
}

/**
 * The incoming context: W3C first (as Envoy's OpenTelemetry tracer), then `b3`, then `x-b3-*`. A B3 header that
 * carries only a sampling state gives no parent; its decision is returned in `forcedSampling` instead.
 */
export function extractContext(h: Headers): ParentContext | boolean | null {
  const tp = h.get('traceparent')
  if (tp !== undefined) {
    const p = parseTraceparent(tp)
    if (p !== null) {
      const format = h.has('b3') ? FORMAT_B3 : h.has('x-b3-traceid') ? FORMAT_B3_MULTI : FORMAT_W3C
      return { ...p, traceState: h.get('tracestate') ?? '', format }
    }
  }
  const b3 = h.get('b3')
  if (b3 !== undefined) {
    const p = parseB3(b3)
    if (typeof p === 'object' && p !== null) return { ...p, traceState: '', format: FORMAT_B3 }
    if (typeof p === 'boolean') return p
  }
  const tid = h.get('x-b3-traceid')
  if (tid !== undefined) {
    const traceId = b3TraceId(tid)
    const spanId = h.get('x-b3-spanid')?.toLowerCase()
    if (traceId !== null && spanId !== undefined && HEX_RE16.test(spanId) && spanId !== ZERO16) {
      const sampled = h.get('x-b3-flags') === '1' ? true : b3Sampled(h.get('x-b3-sampled'))
      return { traceId, spanId, sampled, traceState: '', format: FORMAT_B3_MULTI }
    }
  }
  const s = b3Sampled(h.get('x-b3-sampled'))
  return s
}

/** Writes a span's context into the upstream request: W3C always, and the B3 format the request came in with. */
export function injectContext(
  h: Headers,
  traceId: string,
  spanId: string,
  parentSpanId: string,
  sampled: boolean,
  traceState: string,
  format: ContextFormat,
): void {
  h.set('traceparent', `00-${traceId}-${spanId}-${sampled ? '01' : '00'}`)
  if (traceState !== '') h.set('tracestate', traceState)
  if (format === FORMAT_B3) {
    h.set('b3', `${traceId}-${spanId}-${sampled ? '1' : '0'}${parentSpanId === '' ? '' : `-${parentSpanId}`}`)
  } else if (format === FORMAT_B3_MULTI) {
    h.set('x-b3-traceid', traceId)
    h.set('x-b3-spanid', spanId)
    if (parentSpanId !== '') h.set('x-b3-parentspanid', parentSpanId)
    else h.remove('x-b3-parentspanid')
    h.set('x-b3-sampled', sampled ? '1' : '0')
    h.remove('x-b3-flags')
  }
}

// === ids ===

const POOL_BYTES = 4096
const pool = Buffer.allocUnsafeSlow(POOL_BYTES)
let at = POOL_BYTES

function randomHex(bytes: number): string {
  for (;;) {
    if (at + bytes > POOL_BYTES) {
      randomFillSync(pool)
      at = 0
    }
    const s = pool.toString('hex', at, at + bytes)
    at += bytes
    // all-zero ids are invalid in both formats: draw again (one chance in 2^64)
    if (s !== ZERO16 && s !== ZERO32) return s
  }
}

/** A new 128-bit trace id as 32 hex digits. */
export function newTraceId(): string {
  return randomHex(16)
}

/** A new 64-bit span id as 16 hex digits. */
export function newSpanId(): string {
  return randomHex(8)
}
