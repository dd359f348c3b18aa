/**
 * The contracts between the three stages of an HTTP request inside the proxy:
 *
 *   downstream codec (H1 or H2 server side) ──► ActiveStream (route, cluster, host) ──► upstream codec (H1 or H2 pool)
 *
 * Codecs speak to the stream and the stream to codecs only through these interfaces, so every pairing of protocols
 * (H1→H1, H1→H2, H2→H1, H2→H2) goes through the same routing code. Calls are plain method calls on long-lived
 * objects: no closures or events on the per-request path.
 */
import type { Socket } from 'node:net'
import type { Headers } from './headers.js'

/** A request as the stream sees it, whatever protocol it arrived on. Headers exclude pseudo-headers. */
export interface RequestHead {
  method: string
  /** host[:port], lower case */
  authority: string
  /** origin-form path with query */
  path: string
  scheme: 'http' | 'https'
  headers: Headers
  /** Upgrade token (e.g. `websocket`) for an HTTP/1.1 upgrade request, else null. */
  upgrade: string | null
  /** 'HTTP/1.0' | 'HTTP/1.1' | 'HTTP/2' */
  protocol: string
}

/** Implemented by downstream codecs: how the stream answers the client. */
export interface DownstreamSink {
  sendHeaders(status: number, headers: Headers, endStream: boolean): void
  /** Returns false when the client is not keeping up; the sink then calls stream.onDownstreamDrain() later. */
  sendData(chunk: Buffer, endStream: boolean): boolean
  sendTrailers(trailers: Headers): void
  /** Abort the response: H1 closes the connection, H2 resets the stream. */
  reset(): void
  pauseRequest(): void
  resumeRequest(): void
  /** Called once, when the stream is finished in both directions or was reset. */
  onStreamComplete(): void
  /** After a 101 from upstream: the downstream connection becomes a byte pipe; data flows through onRequestData. */
  upgraded(): void
  /**
   * Called before a local reply to a request whose rest will not be read (a timeout): H1 answers with
   * `connection: close` and closes once the reply is out instead of reading the rest of the body.
   */
  abandonRequest?(): void
}

/** Why an upstream request failed before or during its response (mapped to Envoy response flags). */
export type UpstreamResetReason =
  | 'connect_failure'
  | 'connect_timeout'
  | 'connection_termination'
  | 'protocol_error'
  | 'remote_reset'
  /** HTTP/2 RST_STREAM REFUSED_STREAM: the upstream did not process the request */
  | 'refused_stream'
  | 'overflow'

/** Implemented by ActiveStream: what an upstream codec reports. */
export interface UpstreamCallbacks {
  onUpstreamHeaders(status: number, headers: Headers, endStream: boolean): void
  onUpstreamData(chunk: Buffer, endStream: boolean): void
  onUpstreamTrailers(trailers: Headers): void
  onUpstreamReset(reason: UpstreamResetReason, detail: string): void
  /** The upstream can take more request data after sendData returned false. */
  onUpstreamDrain(): void
}

/** Implemented by upstream codecs: one request on a pooled connection or stream. */
export interface UpstreamRequest {
  sendData(chunk: Buffer, endStream: boolean): boolean
  sendTrailers(trailers: Headers): void
  reset(): void
  pauseResponse(): void
  resumeResponse(): void
  /**
   * Cancels the request because the route timeout expired (as reset(), and outlier detection counts a local-origin
   * timeout). Requests to clusters with circuit breakers or outlier detection have it.
   */
  timedOut?(): void
  /** `address:port` of the upstream host, for logs. */
  readonly hostKey: string
  /** The connection the request went on (null before it is open), for the access log. */
  socket?(): Socket | null
}

/** Hop-by-hop headers (RFC 9110 §7.6.1) a proxy never forwards, plus HTTP/2-forbidden ones. */
export const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'transfer-encoding',
  'upgrade',
  'te',
  'http2-settings',
])
