/**
 * OTLP trace messages (opentelemetry-proto: `opentelemetry.proto.collector.trace.v1.ExportTraceServiceRequest` and
 * what it holds) as protobufjs types, for OTLP/HTTP with protobuf bodies. The schema below is Loom's own text of the
 * messages it writes, with the upstream names, field numbers and types (wire-compatible with the published .proto
 * files; fields Loom never writes, such as events and links, are left out and decode as empty). Parsed on first use,
 * off the request path.
 */
import { createRequire } from 'node:module'
import type * as PB from 'protobufjs'

const require = createRequire(import.meta.url)

export const OTLP_PROTO = `
syntax = "proto3";
package opentelemetry.proto.collector.trace.v1;

message AnyValue {
  oneof value {
    string string_value = 1;
    bool bool_value = 2;
    int64 int_value = 3;
    double double_value = 4;
    bytes bytes_value = 7;
  }
}
message KeyValue {
  string key = 1;
  AnyValue value = 2;
}
message Resource {
  repeated KeyValue attributes = 1;
  uint32 dropped_attributes_count = 2;
}
message InstrumentationScope {
  string name = 1;
  string version = 2;
  repeated KeyValue attributes = 3;
  uint32 dropped_attributes_count = 4;
}
message Status {
  string message = 2;
  enum StatusCode {
    STATUS_CODE_UNSET = 0;
    STATUS_CODE_OK = 1;
    STATUS_CODE_ERROR = 2;
  }
  StatusCode code = 3;
}
message Span {
  bytes trace_id = 1;
  bytes span_id = 2;
  string trace_state = 3;
  bytes parent_span_id = 4;
  fixed32 flags = 16;
  string name = 5;
  enum SpanKind {
    SPAN_KIND_UNSPECIFIED = 0;
    SPAN_KIND_INTERNAL = 1;
    SPAN_KIND_SERVER = 2;
    SPAN_KIND_CLIENT = 3;
    SPAN_KIND_PRODUCER = 4;
    SPAN_KIND_CONSUMER = 5;
  }
  SpanKind kind = 6;
  fixed64 start_time_unix_nano = 7;
  fixed64 end_time_unix_nano = 8;
  repeated KeyValue attributes = 9;
  uint32 dropped_attributes_count = 10;
  Status status = 15;
}
message ScopeSpans {
  InstrumentationScope scope = 1;
  repeated Span spans = 2;
  string schema_url = 3;
}
message ResourceSpans {
  Resource resource = 1;
  repeated ScopeSpans scope_spans = 2;
  string schema_url = 3;
}
message ExportTraceServiceRequest {
  repeated ResourceSpans resource_spans = 1;
}
message ExportTracePartialSuccess {
  int64 rejected_spans = 1;
  string error_message = 2;
}
message ExportTraceServiceResponse {
  ExportTracePartialSuccess partial_success = 1;
}
`

export const SPAN_KIND_SERVER = 2
export const SPAN_KIND_CLIENT = 3
export const STATUS_CODE_ERROR = 2

let types: { request: PB.Type; response: PB.Type } | null = null

/** The request and response types (parsed once). */
export function otlpTypes(): { request: PB.Type; response: PB.Type } {
  if (types === null) {
    const pb = require('protobufjs') as typeof PB
    const root = pb.parse(OTLP_PROTO, { keepCase: true }).root
    types = {
      request: root.lookupType('opentelemetry.proto.collector.trace.v1.ExportTraceServiceRequest'),
      response: root.lookupType('opentelemetry.proto.collector.trace.v1.ExportTraceServiceResponse'),
    }
  }
  return types
}

/** A finished span, as the tracer hands it to the exporter. Times are Unix epoch milliseconds (fractional). */
export interface FinishedSpan {
  traceId: string
  spanId: string
  /** '' for a root span */
  parentSpanId: string
  traceState: string
  name: string
  kind: number
  startMs: number
  endMs: number
  /** string attributes, flat: [key0, value0, key1, value1, ...] */
  attributes: string[]
  error: boolean
}

/** Milliseconds since the epoch as fixed64 nanoseconds (protobufjs' Long-like form). */
function nanos(ms: number): { low: number; high: number; unsigned: boolean } {
  const ns = BigInt(Math.round(ms * 1000)) * 1000n
  return { low: Number(ns & 0xffffffffn), high: Number(ns >> 32n), unsigned: true }
}

function attrs(list: readonly string[]): object[] {
  const out: object[] = []
  for (let i = 0; i < list.length; i += 2) out.push({ key: list[i], value: { string_value: list[i + 1] } })
  return out
}

/** One ExportTraceServiceRequest body: one resource (the proxy's service), one scope, the spans in order. */
export function encodeExportRequest(resource: readonly string[], spans: readonly FinishedSpan[]): Uint8Array {
  const { request } = otlpTypes()
  const message = {
    resource_spans: [
      {
        resource: { attributes: attrs(resource) },
        scope_spans: [
          {
            scope: { name: 'loom' },
            spans: spans.map((s) => ({
              trace_id: Buffer.from(s.traceId, 'hex'),
              span_id: Buffer.from(s.spanId, 'hex'),
              ...(s.parentSpanId === '' ? {} : { parent_span_id: Buffer.from(s.parentSpanId, 'hex') }),
              ...(s.traceState === '' ? {} : { trace_state: s.traceState }),
              // the W3C flags (sampled), and whether the parent is remote (bits 8 and 9): it is, when there is one
              flags: s.parentSpanId === '' ? 0x101 : 0x301,
              name: s.name,
              kind: s.kind,
              start_time_unix_nano: nanos(s.startMs),
              end_time_unix_nano: nanos(s.endMs),
              attributes: attrs(s.attributes),
              ...(s.error ? { status: { code: STATUS_CODE_ERROR } } : {}),
            })),
          },
        ],
      },
    ],
  }
  return request.encode(message as unknown as PB.Message).finish()
}
