/**
 * A connection manager's tracing (Envoy's HttpConnectionManager `tracing` with the `envoy.tracers.opentelemetry`
 * provider), compiled once per config. A connection manager without `tracing` has no tracer and its streams pay
 * one null check.
 *
 * Per stream: `start` reads the incoming context (W3C, else B3; propagation.ts), takes the sampling decision as
 * Envoy does (an incoming sampled flag wins; else `x-client-trace-id` with client_sampling, `x-envoy-force-trace`,
 * then random_sampling, keyed on `x-request-id` so every hop of a request draws alike; overall_sampling last),
 * makes the span's ids and writes the span's context into the request the upstream will see: W3C always, and the B3
 * format the request came in with. A request not sampled still carries a context (flag 0), so later hops agree.
 * `finish` (sampled spans only) fills Envoy's span tags from the finished stream and queues the span for export.
 *
 * The span is the connection manager's: SERVER on an INBOUND listener (Envoy's ingress operation), CLIENT on an
 * OUTBOUND one (egress). Its name is the route's `decorator.operation`, else Envoy's `ingress` / `egress <host>`.
 * With `spawn_upstream_span` a CLIENT child span covers the upstream request and is the one propagated.
 */
import { performance } from 'node:perf_hooks'
import type { Tracing } from '../../config/envoy.js'
import { parseDurationMs } from '../../core/duration.js'
import type { UpstreamAccess } from '../http/async-client.js'
import type { RequestHead } from '../http/types.js'
import { exporterFor, type OtlpExporter } from './exporter.js'
import { type FinishedSpan, SPAN_KIND_CLIENT, SPAN_KIND_SERVER } from './otlp.js'
import { type ContextFormat, extractContext, FORMAT_W3C, injectContext, newSpanId, newTraceId } from './propagation.js'

/** What a span reads of its stream when it finishes (ActiveStream has these fields). */
export interface TracedStream {
  readonly head: RequestHead | null
  readonly route: { readonly operation: string | null } | null
  readonly cluster: { readonly name: string } | null
  readonly host: { readonly key: string } | null
  readonly status: number
  readonly flag: string
  readonly requestId: string
  readonly sourceIp: string
  readonly bytesReceived: number
  readonly bytesSent: number
  readonly startTime: number
  readonly originalPath: string
}

/** The proxy's identity in span tags: `node_id` and `zone` (set once from the bootstrap or the xDS node). */
const node = { id: '', zone: '' }

export function setTracingNode(id: string, zone: string | undefined): void {
  node.id = id
  node.zone = zone ?? ''
}

/** One stream's span: its ids and decision, made at the request's start. */
export class ActiveSpan {
  readonly traceId: string
  readonly spanId: string
  readonly parentSpanId: string
  readonly traceState: string
  readonly sampled: boolean
  /** the upstream span (spawn_upstream_span), '' when none */
  readonly upstreamSpanId: string
  /** the authority and path the request arrived with, for http.url and the egress name */
  readonly url: string
  readonly authority: string
  constructor(
    traceId: string,
    spanId: string,
    parentSpanId: string,
    traceState: string,
    sampled: boolean,
    upstreamSpanId: string,
    url: string,
    authority: string,
  ) {
    this.traceId = traceId
    this.spanId = spanId
    this.parentSpanId = parentSpanId
    this.traceState = traceState
    this.sampled = sampled
    this.upstreamSpanId = upstreamSpanId
    this.url = url
    this.authority = authority
  }
}

interface HeaderTag {
  tag: string
  header: string
  otherwise: string
}

/** Envoy's Percent (0..100) as a fraction of 10000 draws: `otherwise` when unset; a Percent without value is 0. */
function per10k(p: { value?: number } | undefined, otherwise: number): number {
  const v = p === undefined ? otherwise : (p.value ?? 0)
  return Math.round(Math.min(100, Math.max(0, v)) * 100)
}

function draw(requestId: string, byRequestId: boolean): number {
  if (byRequestId && requestId.length >= 8) {
    const n = Number.parseInt(requestId.slice(0, 8), 16)
    if (!Number.isNaN(n)) return n % 10000
  }
  return Math.floor(Math.random() * 10000)
}

export class HcmTracer {
  readonly exporter: OtlpExporter
  private readonly random: number
  private readonly client: number
  private readonly overall: number
  private readonly spawnUpstream: boolean
  private readonly kind: number
  private readonly egress: boolean
  private readonly maxPathTagLength: number
  /** literal and environment tags, resolved at compile time: flat [tag, value, ...] */
  private readonly fixedTags: string[]
  private readonly headerTags: HeaderTag[]
  /** random sampling keyed on x-request-id (Envoy's default, Istio's useRequestIdForTraceSampling) */
  private readonly byRequestId: boolean

  constructor(cfg: Tracing, direction: string | undefined, access: UpstreamAccess, byRequestId = true) {
    const otel = cfg.provider!.typed_config
    const http = otel.http_service!
    const uri = new URL(http.http_uri.uri)
    this.exporter = exporterFor(
      {
        cluster: http.http_uri.cluster,
        path: `${uri.pathname}${uri.search}` || '/v1/traces',
        authority: uri.host,
        timeoutMs: http.http_uri.timeout === undefined ? 1000 : (parseDurationMs(http.http_uri.timeout) ?? 1000),
        headers: (http.request_headers_to_add ?? []).flatMap((h) => [h.header.key.toLowerCase(), h.header.value]),
        resource: ['service.name', otel.service_name ?? 'unknown_service:loom'],
      },
      access,
    )
    this.random = per10k(cfg.random_sampling, 100)
    this.client = per10k(cfg.client_sampling, 100)
    this.overall = per10k(cfg.overall_sampling, 100)
    this.spawnUpstream = cfg.spawn_upstream_span === true
    this.egress = direction === 'OUTBOUND'
    this.kind = this.egress ? SPAN_KIND_CLIENT : SPAN_KIND_SERVER
    this.maxPathTagLength = cfg.max_path_tag_length ?? 256
    this.byRequestId = byRequestId
    this.fixedTags = []
    this.headerTags = []
    for (const t of cfg.custom_tags ?? []) {
      if (t.literal !== undefined) this.fixedTags.push(t.tag, t.literal.value ?? '')
      else if (t.environment !== undefined) {
        const v = process.env[t.environment.name] ?? t.environment.default_value
        if (v !== undefined) this.fixedTags.push(t.tag, v)
      } else if (t.request_header !== undefined)
        this.headerTags.push({
          tag: t.tag,
          header: t.request_header.name.toLowerCase(),
          otherwise: t.request_header.default_value ?? '',
        })
    }
  }

  /** The stream's span: ids, decision, and the context written into the upstream request's headers. */
  start(head: RequestHead, requestId: string): ActiveSpan {
    const h = head.headers
    const incoming = extractContext(h)
    let traceId: string
    let parentSpanId = ''
    let traceState = ''
    let format: ContextFormat = FORMAT_W3C
    let sampled: boolean | null = null
    if (typeof incoming === 'object' && incoming !== null) {
      traceId = incoming.traceId
      parentSpanId = incoming.spanId
      traceState = incoming.traceState
      format = incoming.format
      sampled = incoming.sampled
    } else {
      traceId = newTraceId()
      if (typeof incoming === 'boolean') sampled = incoming
    }
    if (sampled === null) {
      if (h.has('x-client-trace-id') && draw(requestId, false) < this.client) sampled = true
      else if (h.has('x-envoy-force-trace')) sampled = true
      else sampled = draw(requestId, this.byRequestId) < this.random
      if (sampled && this.overall < 10000) sampled = draw(requestId, false) < this.overall
    }
    const spanId = newSpanId()
    const upstreamSpanId = this.spawnUpstream ? newSpanId() : ''
    const propagated = upstreamSpanId === '' ? spanId : upstreamSpanId
    const parentOfPropagated = upstreamSpanId === '' ? parentSpanId : spanId
    injectContext(h, traceId, propagated, parentOfPropagated, sampled, traceState, format)
    const proto = h.get('x-forwarded-proto') ?? head.scheme
    return new ActiveSpan(
      traceId,
      spanId,
      parentSpanId,
      traceState,
      sampled,
      upstreamSpanId,
      `${proto}://${head.authority}`,
      head.authority,
    )
  }

  /** A sampled stream ended after `ms`: its span (and upstream span) queued for export. */
  finish(s: TracedStream, span: ActiveSpan, ms: number): void {
    if (!span.sampled) return
    const head = s.head
    const startMs = performance.timeOrigin + s.startTime
    const endMs = startMs + ms
    const status = s.status
    const error = status === 0 || status >= 500
    const op = s.route?.operation ?? null
    const name = op ?? (this.egress ? `egress ${span.authority}` : 'ingress')
    let url = `${span.url}${s.originalPath}`
    if (url.length > this.maxPathTagLength) url = url.slice(0, this.maxPathTagLength)
    const a: string[] = ['component', 'proxy', 'node_id', node.id]
    if (node.zone !== '') a.push('zone', node.zone)
    a.push(
      'guid:x-request-id',
      s.requestId,
      'http.url',
      url,
      'http.method',
      head?.method ?? '',
      'downstream_cluster',
      head?.headers.get('x-envoy-downstream-service-cluster') ?? '-',
      'user_agent',
      head?.headers.get('user-agent') ?? '-',
      'http.protocol',
      head?.protocol ?? '',
      'peer.address',
      s.sourceIp,
      'request_size',
      String(s.bytesReceived),
      'response_size',
      String(s.bytesSent),
      'response_flags',
      s.flag === '' ? '-' : s.flag,
      'http.status_code',
      String(status),
    )
    if (s.cluster !== null) a.push('upstream_cluster', s.cluster.name, 'upstream_cluster.name', s.cluster.name)
    if (s.host !== null) a.push('upstream_address', s.host.key)
    if (error) a.push('error', 'true')
    for (let i = 0; i < this.fixedTags.length; i++) a.push(this.fixedTags[i]!)
    for (const t of this.headerTags) {
      const v = head?.headers.get(t.header) ?? t.otherwise
      if (v !== '') a.push(t.tag, v)
    }
    const main: FinishedSpan = {
      traceId: span.traceId,
      spanId: span.spanId,
      parentSpanId: span.parentSpanId,
      traceState: span.traceState,
      name,
      kind: this.kind,
      startMs,
      endMs,
      attributes: a,
      error,
    }
    this.exporter.add(main)
    if (span.upstreamSpanId !== '' && s.cluster !== null) {
      const up: string[] = [
        'component',
        'proxy',
        'upstream_cluster',
        s.cluster.name,
        'http.status_code',
        String(status),
      ]
      if (s.host !== null) up.push('upstream_address', s.host.key)
      this.exporter.add({
        traceId: span.traceId,
        spanId: span.upstreamSpanId,
        parentSpanId: span.spanId,
        traceState: span.traceState,
        name: s.cluster.name,
        kind: SPAN_KIND_CLIENT,
        startMs,
        endMs,
        attributes: up,
        error,
      })
    }
  }
}
