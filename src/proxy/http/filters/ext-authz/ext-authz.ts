/**
 * External authorization (Envoy's envoy.filters.http.ext_authz): before a request goes on, the filter asks an
 * authorization service, over plain HTTP (`http_service`) or gRPC (`grpc_service`, the
 * envoy.service.auth.v3.Authorization/Check call), on one of the proxy's clusters: the call is an ordinary upstream
 * request through the cluster manager (async-client.ts), so the cluster's load balancing, TLS, pools and stats apply.
 *
 * - **Allowed** (HTTP 200 / gRPC status OK): the request goes on, with the headers the service set (HTTP: response
 *   headers matching `allowed_upstream_headers` replace the request's, `allowed_upstream_headers_to_append` are
 *   appended; gRPC: `ok_response.headers`, `headers_to_remove`); headers for the client on success
 *   (`allowed_client_headers_on_success` / `ok_response.response_headers_to_add`) go on the response.
 * - **Denied** (any other HTTP status below 500 / a gRPC status other than OK): the client gets the service's answer,
 *   response flag `UAEX`, reason `ext_authz_denied`: HTTP: its status, body and headers (those matching
 *   `allowed_client_headers`, or all but hop-by-hop ones when unset); gRPC: `denied_response` (status, default 403,
 *   headers, body).
 * - **Error** (no cluster or host, connection failure, timeout, an HTTP 5xx, a gRPC error, an undecodable reply):
 *   `status_on_error` (default 403) with no body, flag `UAEX`, reason `ext_authz_error`; with `failure_mode_allow`
 *   the request goes on instead (and `x-envoy-auth-failure-mode-allowed: true` with `failure_mode_allow_header_add`).
 *
 * `filter_enabled_metadata` makes the check conditional on the stream's dynamic metadata (Istio's CUSTOM action: the
 * RBAC filter before this one sets `istio_ext_authz_shadow_effective_policy_id` when a CUSTOM policy matched).
 * `with_request_body` holds the body (up to `max_request_bytes`, at most 1 MiB, the stream's hold limit) and sends it
 * with the check; a longer body is cut (`allow_partial_message`) or refused with 413.
 *
 * Header names are matched case-insensitively. Stats under the connection manager:
 * `ext_authz.[<stat_prefix>.]ok`, `.denied`, `.error`, `.disabled`, `.failure_mode_allowed`.
 * A stream on a route with `ExtAuthzPerRoute { disabled: true }` gets no filter object.
 */
import { Buffer } from 'node:buffer'
import type { TLSSocket } from 'node:tls'
import type { ExtAuthz, ExtAuthzPerRoute, StringMatcher } from '../../../../config/envoy.js'
import { parseDurationMs } from '../../../../core/duration.js'
import type { ConfigIssue } from '../../../../core/errors.js'
import { compileStringMatcher, type StringTest } from '../../../route/matchers.js'
import type { HttpConnManagerStats } from '../../../stats/stats.js'
import { type AsyncFailure, AsyncRequest, type AsyncResponseHandler, type UpstreamAccess } from '../../async-client.js'
import { Headers } from '../../headers.js'
import { HOP_BY_HOP, type RequestHead } from '../../types.js'
import {
  CONTINUE,
  type FilterCallbacks,
  type FilterStatus,
  type HttpFilterFactory,
  STOP,
  type StreamFilter,
} from '../filter.js'
import { connectionPeer } from '../../../identity/connection-peer.js'
import { compileMetadataMatcher } from '../../../rbac/matcher.js'
import {
  authTypes,
  CHECK_PATH,
  type CheckAttributes,
  type CheckResponse,
  decodeCheckResponse,
  encodeCheckRequest,
  type HeaderValueOption,
} from './grpc-check.js'

/** Dynamic metadata namespace: `error` says why a check failed. */
export const EXT_AUTHZ_METADATA = 'envoy.filters.http.ext_authz'
/** Envoy's default timeout of a check, for both kinds of service. */
export const DEFAULT_TIMEOUT_MS = 200
/** The most request body the filter holds for a check (the stream pauses the client past this). */
export const MAX_BODY_BYTES = 1024 * 1024

export class ExtAuthzStats {
  ok = 0
  denied = 0
  error = 0
  disabled = 0
  failure_mode_allowed = 0
}

type NameTest = (name: string) => boolean

function nameTest(list: { patterns: StringMatcher[] } | undefined, path: string, issues: ConfigIssue[]) {
  if (list === undefined) return null
  const tests: StringTest[] = list.patterns.map((p, i) =>
    compileStringMatcher({ ...p, ignore_case: true }, `${path}.patterns[${i}]`, issues),
  )
  return (name: string) => {
    for (const t of tests) if (t(name)) return true
    return false
  }
}

/** Headers of the service's denial a client never gets from it (the reply's own framing decides them). */
const NOT_TO_CLIENT = new Set([...HOP_BY_HOP, 'content-length', 'host', 'date', 'server'])
/** Headers the denial always passes when `allowed_client_headers` is set (Envoy's list). */
const ALWAYS_TO_CLIENT = new Set(['path', 'status', 'www-authenticate', 'location'])
/** Request headers the HTTP check never copies (it sets its own framing). */
const NOT_TO_CHECK = new Set([...HOP_BY_HOP, 'content-length', 'host'])

const DISABLED = Symbol('ext_authz disabled')

/** A route's ExtAuthzPerRoute: the only override is turning the check off. */
export function compileExtAuthzPerRoute(_cfg: ExtAuthzPerRoute): unknown {
  return DISABLED
}

export class ExtAuthzFilterFactory implements HttpFilterFactory {
  readonly name: string
  readonly stats: ExtAuthzStats
  readonly upstream: UpstreamAccess
  readonly grpc: boolean
  readonly cluster: string
  readonly timeoutMs: number
  /** gRPC: the call's :authority; HTTP: unused (the request's own authority is sent) */
  readonly authority: string
  readonly initialMetadata: readonly [string, string][]
  readonly pathPrefix: string
  readonly allowedHeaders: NameTest | null
  readonly headersToAdd: readonly [string, string][]
  readonly upstreamHeaders: NameTest | null
  readonly upstreamAppend: NameTest | null
  readonly clientHeaders: NameTest | null
  readonly clientOnSuccess: NameTest | null
  readonly failureModeAllow: boolean
  readonly failureHeaderAdd: boolean
  readonly statusOnError: number
  readonly maxBody: number
  readonly partialBody: boolean
  readonly packAsBytes: boolean
  readonly enabled: ((cb: FilterCallbacks) => boolean) | null
  readonly includePeerCertificate: boolean

  constructor(
    name: string,
    cfg: ExtAuthz,
    path: string,
    issues: ConfigIssue[],
    hcmStats: HttpConnManagerStats,
    upstream: UpstreamAccess,
  ) {
    this.name = name
    this.upstream = upstream
    const prefix = cfg.stat_prefix !== undefined && cfg.stat_prefix !== '' ? `.${cfg.stat_prefix}` : ''
    this.stats = hcmStats.filterStats(`ext_authz${prefix}`, ExtAuthzStats)
    const g = cfg.grpc_service
    const h = cfg.http_service
    this.grpc = g !== undefined
    if (this.grpc) authTypes()
    const timeout = g !== undefined ? g.timeout : h?.server_uri.timeout
    this.timeoutMs = timeout === undefined ? DEFAULT_TIMEOUT_MS : parseDurationMs(timeout)!
    this.cluster = g !== undefined ? g.envoy_grpc.cluster_name : h!.server_uri.cluster
    this.authority = g?.envoy_grpc.authority || this.cluster
    this.initialMetadata = (g?.initial_metadata ?? []).map((m) => [m.key.toLowerCase(), m.value])
    this.pathPrefix = h?.path_prefix ?? ''
    const req = h?.authorization_request
    const res = h?.authorization_response
    const hp = `${path}.http_service`
    this.allowedHeaders =
      nameTest(cfg.allowed_headers, `${path}.allowed_headers`, issues) ??
      nameTest(req?.allowed_headers, `${hp}.authorization_request.allowed_headers`, issues)
    this.headersToAdd = (req?.headers_to_add ?? []).map((x) => [x.key.toLowerCase(), x.value])
    const rp = `${hp}.authorization_response`
    this.upstreamHeaders = nameTest(res?.allowed_upstream_headers, `${rp}.allowed_upstream_headers`, issues)
    this.upstreamAppend = nameTest(
      res?.allowed_upstream_headers_to_append,
      `${rp}.allowed_upstream_headers_to_append`,
      issues,
    )
    this.clientHeaders = nameTest(res?.allowed_client_headers, `${rp}.allowed_client_headers`, issues)
    this.clientOnSuccess = nameTest(
      res?.allowed_client_headers_on_success,
      `${rp}.allowed_client_headers_on_success`,
      issues,
    )
    this.failureModeAllow = cfg.failure_mode_allow === true
    this.failureHeaderAdd = cfg.failure_mode_allow_header_add === true
    this.statusOnError = cfg.status_on_error?.code ?? 403
    const b = cfg.with_request_body
    this.maxBody = b === undefined ? 0 : Math.min(b.max_request_bytes, MAX_BODY_BYTES)
    this.partialBody = b?.allow_partial_message === true
    this.packAsBytes = b?.pack_as_bytes === true
    this.enabled =
      cfg.filter_enabled_metadata === undefined
        ? null
        : compileMetadataMatcher(cfg.filter_enabled_metadata, `${path}.filter_enabled_metadata`, issues)
    this.includePeerCertificate = cfg.include_peer_certificate === true
  }

  create(cb: FilterCallbacks, perRoute: unknown): StreamFilter | null {
    if (perRoute === DISABLED) return null
    return new ExtAuthzFilter(this, cb)
  }
}

const IDLE = 0
const BUFFERING = 1
const CHECKING = 2
const DONE = 3

class ExtAuthzFilter implements StreamFilter, AsyncResponseHandler {
  private readonly f: ExtAuthzFilterFactory
  private readonly cb: FilterCallbacks
  private state = IDLE
  /** the check was started from decodeHeaders and has not returned yet: an allow then continues inline */
  private inline = false
  private passInline = false
  private call: AsyncRequest | null = null
  private chunks: Buffer[] | null = null
  private bytes = 0
  /** headers the service wants on the client's response when the request was allowed */
  private onSuccess: [string, string][] | null = null

  constructor(f: ExtAuthzFilterFactory, cb: FilterCallbacks) {
    this.f = f
    this.cb = cb
  }

  decodeHeaders(_head: RequestHead, endStream: boolean): FilterStatus {
    const f = this.f
    if (f.enabled !== null && !f.enabled(this.cb)) {
      f.stats.disabled++
      this.state = DONE
      return CONTINUE
    }
    if (f.maxBody > 0 && !endStream) {
      this.state = BUFFERING
      this.chunks = []
      return STOP
    }
    this.inline = true
    this.check(null, false)
    this.inline = false
    return this.passInline ? CONTINUE : STOP
  }

  decodeData(chunk: Buffer, endStream: boolean): void {
    if (this.state !== BUFFERING) return
    const f = this.f
    if (chunk.length > 0) this.chunks!.push(chunk)
    this.bytes += chunk.length
    if (this.bytes < f.maxBody && !endStream) return
    if (this.bytes > f.maxBody && !f.partialBody) {
      this.state = DONE
      this.cb.sendLocalReply(413, '', 'request_payload_too_large', 'Payload Too Large')
      return
    }
    this.bufferedCheck()
  }

  decodeTrailers(): void {
    if (this.state === BUFFERING) this.bufferedCheck()
  }

  private bufferedCheck(): void {
    const all = Buffer.concat(this.chunks!, this.bytes)
    this.chunks = null
    const partial = all.length > this.f.maxBody
    this.check(partial ? all.subarray(0, this.f.maxBody) : all, partial)
  }

  encodeHeaders(_status: number, headers: Headers): void {
    const add = this.onSuccess
    if (add === null) return
    for (let i = 0; i < add.length; i++) headers.add(add[i]![0], add[i]![1])
  }

  onDestroy(): void {
    const c = this.call
    this.call = null
    this.state = DONE
    c?.cancel()
  }

  // === the check ===

  private check(body: Buffer | null, partial: boolean): void {
    this.state = CHECKING
    const f = this.f
    const head = this.cb.head!
    const call = f.grpc ? this.grpcCall(head, body) : this.httpCall(head, body, partial)
    const r = AsyncRequest.send(f.upstream, f.cluster, call.head, call.body, f.timeoutMs, this)
    if (this.state === CHECKING) this.call = r
  }

  private httpCall(head: RequestHead, body: Buffer | null, partial: boolean) {
    const f = this.f
    const h = new Headers()
    const l = head.headers.list
    const allowed = f.allowedHeaders
    for (let i = 0; i < l.length; i += 2) {
      const n = l[i]!
      if (NOT_TO_CHECK.has(n)) continue
      if (n === 'authorization' || allowed?.(n)) h.add(n, l[i + 1]!)
    }
    for (const [k, v] of f.headersToAdd) h.set(k, v)
    if (body !== null) h.set('x-envoy-auth-partial-body', partial ? 'true' : 'false')
    h.set('content-length', String(body === null ? 0 : body.length))
    const check: RequestHead = {
      method: head.method,
      authority: head.authority,
      path: f.pathPrefix + head.path,
      scheme: 'http',
      headers: h,
      upgrade: null,
      protocol: 'HTTP/1.1',
    }
    return { head: check, body }
  }

  private grpcCall(head: RequestHead, body: Buffer | null) {
    const f = this.f
    const cb = this.cb
    const headers: Record<string, string> = {
      ':authority': head.authority,
      ':method': head.method,
      ':path': head.path,
    }
    const l = head.headers.list
    const allowed = f.allowedHeaders
    for (let i = 0; i < l.length; i += 2) {
      const n = l[i]!
      if (allowed !== null && !allowed(n)) continue
      const prev = headers[n]
      headers[n] = prev === undefined ? l[i + 1]! : `${prev},${l[i + 1]!}`
    }
    const q = head.path.indexOf('?')
    const now = Date.now()
    const socket = cb.downstreamSocket
    const attributes: CheckAttributes = {
      source: {},
      destination: {},
      request: {
        time: { seconds: Math.floor(now / 1000), nanos: (now % 1000) * 1e6 },
        http: {
          id: head.headers.get('x-request-id') ?? '',
          method: head.method,
          headers,
          path: head.path,
          host: head.authority,
          scheme: head.scheme,
          query: q < 0 ? '' : head.path.slice(q + 1),
          size: body?.length ?? (Number(head.headers.get('content-length')) || 0),
          protocol: head.protocol,
        },
      },
    }
    if (body !== null) {
      if (f.packAsBytes) attributes.request.http.raw_body = body
      else attributes.request.http.body = body.toString('utf8')
    }
    if (socket !== null) {
      if (cb.sourceIp !== '')
        attributes.source.address = { socket_address: { address: cb.sourceIp, port_value: socket.remotePort ?? 0 } }
      if (socket.localAddress !== undefined)
        attributes.destination.address = {
          socket_address: { address: socket.localAddress, port_value: socket.localPort ?? 0 },
        }
      const peer = connectionPeer(socket)
      if (peer !== null && peer.uris.length > 0) attributes.source.principal = peer.uris[0]
      if (peer !== null && f.includePeerCertificate) {
        const raw = (socket as TLSSocket).getPeerCertificate?.()?.raw
        if (raw !== undefined) attributes.source.certificate = encodeURIComponent(pem(raw))
      }
    }
    const h = new Headers(['content-type', 'application/grpc', 'te', 'trailers', 'grpc-timeout', `${f.timeoutMs}m`])
    for (const [k, v] of f.initialMetadata) h.add(k, v)
    const check: RequestHead = {
      method: 'POST',
      authority: f.authority,
      path: CHECK_PATH,
      scheme: 'http',
      headers: h,
      upgrade: null,
      protocol: 'HTTP/2',
    }
    return { head: check, body: encodeCheckRequest(attributes) }
  }

  // === the answer ===

  onAsyncResponse(status: number, headers: Headers, body: Buffer, trailers: Headers | null): void {
    this.call = null
    if (this.state !== CHECKING) return
    if (this.f.grpc) return this.grpcAnswer(status, headers, body, trailers)
    if (status === 200) return this.httpAllowed(headers)
    if (status >= 500) return this.error(`authorization service answered ${status}`)
    const f = this.f
    const out = new Headers()
    const l = headers.list
    for (let i = 0; i < l.length; i += 2) {
      const n = l[i]!
      if (NOT_TO_CLIENT.has(n)) continue
      if (f.clientHeaders === null || ALWAYS_TO_CLIENT.has(n) || f.clientHeaders(n)) out.add(n, l[i + 1]!)
    }
    this.denied(status, out, body)
  }

  onAsyncFailure(reason: AsyncFailure, detail: string): void {
    this.call = null
    if (this.state !== CHECKING) return
    this.error(`${reason}${detail === '' ? '' : `: ${detail}`}`)
  }

  private httpAllowed(res: Headers): void {
    const f = this.f
    const req = this.cb.head!.headers
    const l = res.list
    if (f.upstreamHeaders !== null || f.upstreamAppend !== null || f.clientOnSuccess !== null) {
      for (let i = 0; i < l.length; i += 2) {
        const n = l[i]!
        if (NOT_TO_CLIENT.has(n)) continue
        const value = l[i + 1]!
        if (f.upstreamHeaders?.(n)) req.set(n, value)
        else if (f.upstreamAppend?.(n)) req.add(n, value)
        if (f.clientOnSuccess?.(n)) (this.onSuccess ??= []).push([n, value])
      }
    }
    this.allowed()
  }

  private grpcAnswer(status: number, headers: Headers, body: Buffer, trailers: Headers | null): void {
    const grpcStatus = (trailers ?? headers).get('grpc-status')
    if (status !== 200 || grpcStatus === undefined)
      return this.error(`authorization service answered HTTP ${status} without a gRPC status`)
    if (grpcStatus !== '0') {
      const msg = (trailers ?? headers).get('grpc-message')
      return this.error(`authorization call failed: gRPC status ${grpcStatus}${msg ? ` (${msg})` : ''}`)
    }
    let res: CheckResponse
    try {
      res = decodeCheckResponse(body)
    } catch (err) {
      return this.error(`bad CheckResponse: ${(err as Error).message}`)
    }
    if ((res.status?.code ?? 0) === 0) {
      const ok = res.ok_response
      if (ok !== undefined) {
        const req = this.cb.head!.headers
        for (const name of ok.headers_to_remove ?? []) {
          const n = name.toLowerCase()
          if (n !== 'host' && !n.startsWith(':')) req.remove(n)
        }
        applyOptions(req, ok.headers)
        for (const o of ok.response_headers_to_add ?? []) {
          const k = o.header?.key?.toLowerCase()
          if (k) (this.onSuccess ??= []).push([k, o.header?.value ?? ''])
        }
      }
      return this.allowed()
    }
    const d = res.denied_response
    const out = new Headers()
    applyOptions(out, d?.headers)
    this.denied(d?.status?.code || 403, out, Buffer.from(d?.body ?? ''))
  }

  private allowed(): void {
    this.state = DONE
    this.f.stats.ok++
    this.proceed()
  }

  private denied(status: number, headers: Headers, body: Buffer): void {
    this.state = DONE
    this.f.stats.denied++
    this.cb.sendLocalReply(status, 'UAEX', 'ext_authz_denied', body, headers)
  }

  private error(detail: string): void {
    const f = this.f
    this.state = DONE
    f.stats.error++
    if (f.failureModeAllow) {
      f.stats.failure_mode_allowed++
      if (f.failureHeaderAdd) this.cb.head!.headers.set('x-envoy-auth-failure-mode-allowed', 'true')
      return this.proceed()
    }
    this.cb.setMetadata(EXT_AUTHZ_METADATA, 'error', detail)
    this.cb.sendLocalReply(f.statusOnError, 'UAEX', 'ext_authz_error', null, new Headers())
  }

  private proceed(): void {
    if (this.inline) this.passInline = true
    else this.cb.continueDecoding()
  }
}

const ADD_IF_ABSENT = 1
const OVERWRITE_IF_EXISTS = 3

/**
 * HeaderValueOptions of a CheckResponse. `append` decides when set; otherwise `append_action` (ADD_IF_ABSENT,
 * OVERWRITE_IF_EXISTS), and with neither the header replaces the request's ("append defaults to false" here).
 */
function applyOptions(h: Headers, opts: HeaderValueOption[] | undefined): void {
  if (opts === undefined) return
  for (const o of opts) {
    const k = o.header?.key?.toLowerCase()
    if (!k || k.startsWith(':')) continue
    const v = o.header?.value ?? ''
    if (o.append !== undefined) {
      if (o.append.value === true) h.add(k, v)
      else h.set(k, v)
      continue
    }
    const action = o.append_action ?? 0
    if (action === ADD_IF_ABSENT && h.has(k)) continue
    if (action === OVERWRITE_IF_EXISTS && !h.has(k)) continue
    h.set(k, v)
  }
}

function pem(der: Buffer): string {
  const b64 = der.toString('base64').replace(/.{64}/g, '$&\n')
  return `-----BEGIN CERTIFICATE-----\n${b64}${b64.endsWith('\n') ? '' : '\n'}-----END CERTIFICATE-----\n`
}
