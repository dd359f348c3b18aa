/**
 * The HTTP filter chain's contracts (Envoy's model, in Loom's own shape).
 *
 * The connection manager's `http_filters` run in order on the request (decode) and in reverse on the response
 * (encode); the router is the last one and is not a `StreamFilter` here: it is the stream's own upstream step.
 * A filter's config is validated by its schema (src/config/envoy.ts) and compiled once per config version into an
 * `HttpFilterFactory`; per stream, `create` returns the filter object only when the filter has something to do for
 * that stream's route, so a stream pays nothing for filters that do not apply to it.
 */
import type { Buffer } from 'node:buffer'
import type { Socket } from 'node:net'
import type { Host, UpstreamCluster } from '../../cluster/index.js'
import type { CompiledRoute } from '../../route/router.js'
import type { Headers } from '../headers.js'
import type { RequestHead } from '../types.js'

/** Go on to the next filter. */
export const CONTINUE = 0
/**
 * Later filters (and the router) do not see the request until this filter calls `continueDecoding()`; request
 * body bytes that arrive meanwhile are held by the stream (bounded: past the limit the client is paused) and shown
 * to the stopped filter's decodeData / decodeTrailers (a filter that needs the body, such as ext_authz, reads it
 * there; it goes upstream from the stream's hold once decoding continues).
 */
export const STOP = 1
export type FilterStatus = typeof CONTINUE | typeof STOP

/** What a filter may do to its stream. Implemented by the stream itself: no per-stream closures. */
export interface FilterCallbacks {
  readonly head: RequestHead | null
  /** the route matched for this stream, or null (the router answers NR after the filters) */
  readonly route: CompiledRoute | null
  readonly sourceIp: string
  /**
   * The downstream connection's socket: a TLSSocket on a TLS listener (peer certificate, SNI, ALPN), else a plain
   * Socket; null when the stream has none. Filters read it and never write to or close it; what they derive from it
   * per connection (a peer's identity, say) they cache keyed by the socket, not per stream.
   */
  readonly downstreamSocket: Socket | null
  /**
   * Dynamic metadata (Envoy's): what one filter learns about the stream for later filters and the access log, by
   * namespace (a filter's name, or Istio's `istio_authn` for the verified request principal and claims).
   */
  setMetadata(namespace: string, key: string, value: unknown): void
  metadata(namespace: string): Readonly<Record<string, unknown>> | undefined
  /** resumes a chain that a filter stopped; a no-op once the stream is over */
  continueDecoding(): void
  /**
   * Ends the stream with a local reply, encoded like any response (stats, access log, flag): `text` as a one-line
   * plain-text body with `x-loom-reason: reason`, a Buffer as the body as it is, or no body when null (then
   * `headers` say what it is).
   */
  sendLocalReply(status: number, flag: string, reason: string, text: string | Buffer | null, headers?: Headers): void
  /** adds an Envoy response flag (DI, ...) to the stream's flags */
  addFlag(flag: string): void
}

/**
 * What a stream records about itself, read by filters that report on it (Istio's stats filter) in onDestroy, when
 * it is final. The connection manager's stream implements it beside FilterCallbacks.
 */
export interface StreamInfo {
  /** the cluster the router chose (null before routing, or when it chose none) */
  readonly cluster: UpstreamCluster | null
  /** the host it chose */
  readonly host: Host | null
  /** the response status (0: none) and Envoy response flags (`''`: none) */
  readonly status: number
  readonly flag: string
  /** request and response body bytes */
  readonly bytesReceived: number
  readonly bytesSent: number
  /** when the stream began (performance.now() milliseconds) */
  readonly startTime: number
  /** from its start to its end (milliseconds): set when the stream ends, before any filter's onDestroy */
  readonly durationMs: number
}

/** One filter's work on one stream. Every hook is optional. */
export interface StreamFilter {
  decodeHeaders?(head: RequestHead, endStream: boolean): FilterStatus
  decodeData?(chunk: Buffer, endStream: boolean): void
  decodeTrailers?(trailers: Headers): void
  encodeHeaders?(status: number, headers: Headers, endStream: boolean): void
  encodeData?(chunk: Buffer, endStream: boolean): void
  encodeTrailers?(trailers: Headers): void
  /** the stream is over (completed, reset or replied locally): release timers and counters */
  onDestroy?(): void
}

/** A filter's compiled config, shared by every stream of a connection manager. */
export interface HttpFilterFactory {
  /** the name in `http_filters`, which `typed_per_filter_config` keys refer to */
  readonly name: string
  /** a filter object for this stream, or null when the filter has nothing to do for it */
  create(cb: FilterCallbacks, perRoute: unknown): StreamFilter | null
}

/** Counters a filter keeps, rendered under its connection manager (`http.<prefix>.<filter>.<name>`). */
export interface FilterStatsSink {
  counter(name: string): { value: number }
}
