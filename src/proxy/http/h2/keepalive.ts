/**
 * HTTP/2 connection keepalive (Envoy's `http2_protocol_options.connection_keepalive`): a session that has received
 * nothing for `intervalMs` gets a PING; if neither the PING's answer nor any other byte arrives within `timeoutMs`,
 * the session is destroyed.
 *
 * Loom turns this on by default (60 s / 10 s) because of a gap in node:http2: when nghttp2 ends a session itself
 * (a header field over 64 KiB, its stream reset rate limit, ...) it sends GOAWAY and stops reading, but Node is not
 * told and never closes the socket; the peer's FIN is never read. Only an unanswered PING finds such a session.
 * PINGs do not count as activity for the idle timeout.
 */
import type * as H2T from 'node:http2'
import { parseDurationMs } from '../../../core/duration.js'

export interface KeepaliveOptions {
  /** 0 turns keepalive off */
  intervalMs: number
  timeoutMs: number
}

export const DEFAULT_KEEPALIVE: KeepaliveOptions = { intervalMs: 60_000, timeoutMs: 10_000 }

/** `connection_keepalive` as configured, or Loom's default when unset. */
export function keepaliveOptions(ka: { interval: string; timeout: string } | undefined): KeepaliveOptions {
  if (ka === undefined) return DEFAULT_KEEPALIVE
  return { intervalMs: parseDurationMs(ka.interval)!, timeoutMs: parseDurationMs(ka.timeout)! }
}

export function keepalive(session: H2T.Http2Session, o: KeepaliveOptions): void {
  if (o.intervalMs <= 0) return
  const socket = session.socket
  let lastRead = -1
  let probe: NodeJS.Timeout | null = null
  const tick = setInterval(() => {
    if (session.destroyed || probe !== null) return
    const read = socket.bytesRead
    if (read !== lastRead) {
      lastRead = read
      return
    }
    let answered = false
    try {
      session.ping((err) => {
        if (err === null) answered = true
      })
    } catch {
      // closing or closed: its own close will follow
      return
    }
    probe = setTimeout(() => {
      probe = null
      if (!answered && socket.bytesRead === read && !session.destroyed) {
        session.destroy(new Error('keepalive timeout'), 0x2)
      }
    }, o.timeoutMs)
    probe.unref()
  }, o.intervalMs)
  tick.unref()
  session.once('close', () => {
    clearInterval(tick)
    if (probe !== null) clearTimeout(probe)
  })
}
