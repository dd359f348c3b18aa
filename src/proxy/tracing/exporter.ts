/**
 * The OTLP/HTTP exporter: finished spans wait in a bounded queue and go to the collector in batches, as
 * `POST <path>` with an `application/x-protobuf` ExportTraceServiceRequest, through the proxy's own cluster
 * (Envoy's `http_service.http_uri.cluster`), so the cluster's endpoints, pools and stats apply.
 *
 * Nothing here runs on a request's path but `add`, which pushes onto an array (or counts a drop when the queue is
 * full). A batch leaves when `BATCH_SPANS` are waiting or every `FLUSH_INTERVAL_MS`; one export is in flight at a
 * time. A collector that is down, slow or answers an error costs the spans of that batch, counted
 * (`tracing.opentelemetry.spans_dropped`), never a request's time.
 *
 * Exporters are process-wide, keyed by their settings, so a new config version with the same collector keeps its
 * queue and timer.
 */
import { Buffer } from 'node:buffer'
import { log } from '../../core/log.js'
import {
  type AsyncFailure,
  AsyncRequest,
  type AsyncResponseHandler,
  type UpstreamAccess,
} from '../http/async-client.js'
import { Headers } from '../http/headers.js'
import type { CounterSet } from '../stats/stats.js'
import { encodeExportRequest, type FinishedSpan } from './otlp.js'

/** Spans in one export request at most (and the queue length that sends one at once). */
export const BATCH_SPANS = 512
/** Spans kept waiting at most; past it new spans are dropped and counted. */
export const QUEUE_SPANS = 8192
/** How often waiting spans are sent, however few. */
export const FLUSH_INTERVAL_MS = 1000

export interface ExporterSettings {
  cluster: string
  /** the request's :path */
  path: string
  /** the request's :authority */
  authority: string
  timeoutMs: number
  /** extra request headers (http_service.request_headers_to_add), flat name/value pairs */
  headers: readonly string[]
  /** resource attributes (service.name...), flat name/value pairs */
  resource: readonly string[]
}

export class OtlpExporter implements AsyncResponseHandler {
  readonly settings: ExporterSettings
  private access: UpstreamAccess
  private readonly stats: CounterSet
  private queue: FinishedSpan[] = []
  private inFlight = 0
  private timer: NodeJS.Timeout | null = null
  private warned = false

  constructor(settings: ExporterSettings, access: UpstreamAccess) {
    this.settings = settings
    this.access = access
    this.stats = access.store.forCounters('tracing.opentelemetry.')
    const v = this.stats.values
    for (const k of ['spans_sent', 'spans_dropped', 'http_reports_sent', 'http_reports_success', 'http_reports_failed'])
      v[k] ??= 0
  }

  /** The proxy's clusters may be replaced by a new config: the exporter follows them. */
  rebind(access: UpstreamAccess): void {
    this.access = access
  }

  /** Queues a finished span (the request path's only call). */
  add(span: FinishedSpan): void {
    const q = this.queue
    if (q.length >= QUEUE_SPANS) {
      this.stats.values.spans_dropped!++
      return
    }
    q.push(span)
    if (q.length >= BATCH_SPANS && this.inFlight === 0) setImmediate(flushNow, this)
    else if (this.timer === null) {
      this.timer = setTimeout(onTimer, FLUSH_INTERVAL_MS, this)
      this.timer.unref()
    }
  }

  /** Sends what is waiting (up to one batch) unless an export is in flight. */
  flush(): void {
    if (this.timer !== null) {
      clearTimeout(this.timer)
      this.timer = null
    }
    if (this.inFlight > 0 || this.queue.length === 0) return
    const batch = this.queue.length <= BATCH_SPANS ? this.queue : this.queue.slice(0, BATCH_SPANS)
    this.queue = this.queue.length <= BATCH_SPANS ? [] : this.queue.slice(BATCH_SPANS)
    let body: Uint8Array
    try {
      body = encodeExportRequest(this.settings.resource, batch)
    } catch (err) {
      this.stats.values.spans_dropped! += batch.length
      log('warn', 'tracing', 'could not encode spans', { error: (err as Error).message })
      return
    }
    const s = this.settings
    const headers = new Headers(['content-type', 'application/x-protobuf', ...s.headers])
    headers.add('content-length', String(body.length))
    this.inFlight = batch.length
    this.stats.values.http_reports_sent!++
    AsyncRequest.send(
      this.access,
      s.cluster,
      {
        method: 'POST',
        authority: s.authority,
        path: s.path,
        scheme: 'http',
        headers,
        upgrade: null,
        protocol: 'HTTP/1.1',
      },
      Buffer.from(body.buffer, body.byteOffset, body.byteLength),
      s.timeoutMs,
      this,
    )
  }

  onAsyncResponse(status: number, _headers: Headers, _body: Buffer): void {
    const n = this.inFlight
    this.inFlight = 0
    if (status >= 200 && status < 300) {
      this.stats.values.http_reports_success!++
      this.stats.values.spans_sent! += n
    } else this.failed(n, `the collector answered ${status}`)
    this.next()
  }

  onAsyncFailure(reason: AsyncFailure, detail: string): void {
    const n = this.inFlight
    this.inFlight = 0
    this.failed(n, `${reason}: ${detail}`)
    this.next()
  }

  private failed(n: number, why: string): void {
    this.stats.values.http_reports_failed!++
    this.stats.values.spans_dropped! += n
    if (!this.warned) {
      this.warned = true
      log('warn', 'tracing', 'spans not exported (dropped; counted in tracing.opentelemetry.spans_dropped)', {
        cluster: this.settings.cluster,
        why,
      })
    }
  }

  private next(): void {
    if (this.queue.length >= BATCH_SPANS) setImmediate(flushNow, this)
    else if (this.queue.length > 0 && this.timer === null) {
      this.timer = setTimeout(onTimer, FLUSH_INTERVAL_MS, this)
      this.timer.unref()
    }
  }
}

function onTimer(e: OtlpExporter): void {
  e.flush()
}

function flushNow(e: OtlpExporter): void {
  e.flush()
}

const exporters = new Map<string, OtlpExporter>()

/** The exporter for these settings (one per distinct collector and resource, process-wide). */
export function exporterFor(settings: ExporterSettings, access: UpstreamAccess): OtlpExporter {
  const key = JSON.stringify(settings)
  let e = exporters.get(key)
  if (e === undefined) exporters.set(key, (e = new OtlpExporter(settings, access)))
  else e.rebind(access)
  return e
}
