/**
 * An OTLP/HTTP trace receiver for tests: `POST /v1/traces` with an `application/x-protobuf`
 * ExportTraceServiceRequest, decoded with protobufjs from the OTLP messages, and the spans kept in arrival order.
 * `failing` makes it answer 503 (a collector in trouble); `stop` closes it.
 */
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { otlpTypes } from '../../src/proxy/tracing/otlp.js'

export interface ReceivedSpan {
  traceId: string
  spanId: string
  parentSpanId: string
  traceState: string
  name: string
  kind: number
  startNs: bigint
  endNs: bigint
  attributes: Record<string, string>
  statusCode: number
  /** the resource's service.name */
  service: string
}

export interface OtlpReceiver {
  readonly port: number
  readonly spans: ReceivedSpan[]
  /** requests received: path, content type */
  readonly requests: { path: string; contentType: string; spans: number }[]
  failing: boolean
  stop(): Promise<void>
}

interface AnyValue {
  string_value?: string
  int_value?: unknown
  bool_value?: boolean
  double_value?: number
}
interface KeyValue {
  key: string
  value?: AnyValue
}

function text(v: AnyValue | undefined): string {
  if (v === undefined) return ''
  if (v.string_value !== undefined) return v.string_value
  if (v.bool_value !== undefined) return String(v.bool_value)
  if (v.double_value !== undefined) return String(v.double_value)
  if (v.int_value !== undefined) return String(v.int_value)
  return ''
}

function attrs(list: KeyValue[] | undefined): Record<string, string> {
  const out: Record<string, string> = {}
  for (const kv of list ?? []) out[kv.key] = text(kv.value)
  return out
}

function hex(b: Uint8Array | undefined): string {
  return b === undefined || b.length === 0 ? '' : Buffer.from(b).toString('hex')
}

function long(x: unknown): bigint {
  if (x === undefined || x === null) return 0n
  if (typeof x === 'number') return BigInt(x)
  const l = x as { low: number; high: number }
  return (BigInt(l.high >>> 0) << 32n) | BigInt(l.low >>> 0)
}

export async function startOtlpReceiver(): Promise<OtlpReceiver> {
  const { request: Req } = otlpTypes()
  const spans: ReceivedSpan[] = []
  const requests: { path: string; contentType: string; spans: number }[] = []
  const state = { failing: false }
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => {
      if (state.failing) {
        res.writeHead(503).end()
        return
      }
      const body = Buffer.concat(chunks)
      let n = 0
      try {
        const msg = Req.toObject(Req.decode(body), { bytes: Uint8Array as unknown as typeof String }) as {
          resource_spans?: {
            resource?: { attributes?: KeyValue[] }
            scope_spans?: { spans?: Record<string, unknown>[] }[]
          }[]
        }
        for (const rs of msg.resource_spans ?? []) {
          const service = attrs(rs.resource?.attributes)['service.name'] ?? ''
          for (const ss of rs.scope_spans ?? []) {
            for (const s of ss.spans ?? []) {
              n++
              spans.push({
                traceId: hex(s.trace_id as Uint8Array),
                spanId: hex(s.span_id as Uint8Array),
                parentSpanId: hex(s.parent_span_id as Uint8Array | undefined),
                traceState: (s.trace_state as string | undefined) ?? '',
                name: s.name as string,
                kind: (s.kind as number | undefined) ?? 0,
                startNs: long(s.start_time_unix_nano),
                endNs: long(s.end_time_unix_nano),
                attributes: attrs(s.attributes as KeyValue[] | undefined),
                statusCode: ((s.status as { code?: number } | undefined)?.code as number | undefined) ?? 0,
                service,
              })
            }
          }
        }
      } catch (err) {
        res.writeHead(400).end(String(err))
        return
      }
      requests.push({ path: req.url ?? '', contentType: req.headers['content-type'] ?? '', spans: n })
      res.writeHead(200, { 'content-type': 'application/x-protobuf' }).end()
    })
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  const port = (server.address() as AddressInfo).port
  return {
    port,
    spans,
    requests,
    get failing() {
      return state.failing
    },
    set failing(v: boolean) {
      state.failing = v
    },
    stop: () =>
      new Promise<void>((r) => {
        server.closeAllConnections()
        server.close(() => r())
      }),
  }
}
