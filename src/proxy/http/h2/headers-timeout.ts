/**
 * `request_headers_timeout` on HTTP/2. node:http2 hands a stream over only once its header block is complete, so a
 * block still arriving (HEADERS, then CONTINUATION frames trickled) cannot be seen from JavaScript. But while a block
 * is open its sender may send nothing else (RFC 9113 §6.10: any other frame is a connection error), not even a PING
 * ACK. So: every half timeout, a session that has received bytes since the last look gets a PING; one still
 * unanswered a whole timeout later means the client is stuck in a header block (or not answering at all), and the
 * session is closed (GOAWAY, then close; there is no stream to answer 408 on). A head is cut between 1 and 1.5
 * timeouts after its first byte. The probe is skipped while the proxy's own writes to the client are backed up (a
 * client not reading could not answer in time either). One unref'd interval per session, only where the timeout is
 * set; a busy connection gets one PING per half timeout.
 */
import type * as H2T from 'node:http2'
import type { HttpConnManagerStats } from '../../stats/stats.js'

export function headersTimeout(session: H2T.Http2Session, ms: number, stats: HttpConnManagerStats): void {
  if (ms <= 0) return
  const socket = session.socket
  let lastRead = socket.bytesRead
  let ticks = 0
  /** the tick the outstanding probe was sent at; -1 when none is */
  let probeAt = -1
  const backedUp = () => socket.writableLength > 0 || (session.state.outboundQueueSize ?? 0) > 0
  const tick = setInterval(
    () => {
      if (session.destroyed || session.closed) return
      ticks++
      if (probeAt >= 0) {
        if (ticks - probeAt >= 2 && !backedUp()) {
          stats.downstream_rq_header_timeout++
          session.destroy()
        }
        return
      }
      const read = socket.bytesRead
      if (read === lastRead || backedUp()) return
      lastRead = read
      try {
        session.ping((err) => {
          if (err === null) {
            probeAt = -1
            lastRead = socket.bytesRead
          }
        })
        probeAt = ticks
      } catch {
        // closing or closed: its own close will follow
      }
    },
    Math.max(1, Math.floor(ms / 2)),
  )
  tick.unref()
  session.once('close', () => clearInterval(tick))
}
