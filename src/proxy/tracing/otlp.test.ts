import assert from 'node:assert/strict'
import { createRequire } from 'node:module'
import { describe, test } from 'node:test'
import type * as PB from 'protobufjs'
import { encodeExportRequest, otlpTypes } from './otlp.js'

const require = createRequire(import.meta.url)
const { Reader } = require('protobufjs') as typeof PB

/** The fields of one message as (number, wire type, value) with protobufjs' raw reader: no schema involved. */
function fields(
  buf: Uint8Array,
): { no: number; type: number; bytes?: Uint8Array; fixed64?: bigint; varint?: number }[] {
  const r = Reader.create(buf)
  const out: { no: number; type: number; bytes?: Uint8Array; fixed64?: bigint; varint?: number }[] = []
  while (r.pos < r.len) {
    const tag = r.uint32()
    const no = tag >>> 3
    const type = tag & 7
    if (type === 2) out.push({ no, type, bytes: r.bytes() })
    else if (type === 1) {
      const lo = BigInt(r.fixed32())
      const hi = BigInt(r.fixed32())
      out.push({ no, type, fixed64: (hi << 32n) | lo })
    } else if (type === 0) out.push({ no, type, varint: r.uint32() })
    else if (type === 5) out.push({ no, type, varint: r.fixed32() })
    else r.skipType(type)
  }
  return out
}

describe('OTLP encoding', () => {
  const span = {
    traceId: '4bf92f3577b34da6a3ce929d0e0e4736',
    spanId: '00f067aa0ba902b7',
    parentSpanId: '1111111111111111',
    traceState: '',
    name: 'reviews.default.svc.cluster.local:9080/*',
    kind: 2,
    startMs: 1_780_000_000_123.25,
    endMs: 1_780_000_000_130.5,
    attributes: ['http.method', 'GET', 'http.status_code', '503'],
    error: true,
  }

  test("the wire carries opentelemetry-proto's field numbers (read without the schema)", () => {
    const body = encodeExportRequest(['service.name', 'reviews.default'], [span])
    const [rs] = fields(body)
    assert.equal(rs!.no, 1) // ExportTraceServiceRequest.resource_spans
    const resourceSpans = fields(rs!.bytes!)
    assert.deepEqual(
      resourceSpans.map((f) => f.no),
      [1, 2],
    ) // resource, scope_spans
    const scopeSpans = fields(resourceSpans[1]!.bytes!)
    assert.deepEqual(
      scopeSpans.map((f) => f.no),
      [1, 2],
    ) // scope, spans
    const s = fields(scopeSpans[1]!.bytes!)
    const by = (no: number) => s.find((f) => f.no === no)!
    assert.equal(Buffer.from(by(1).bytes!).toString('hex'), span.traceId)
    assert.equal(Buffer.from(by(2).bytes!).toString('hex'), span.spanId)
    assert.equal(Buffer.from(by(4).bytes!).toString('hex'), span.parentSpanId)
    assert.equal(Buffer.from(by(5).bytes!).toString(), span.name)
    assert.equal(by(6).varint, 2) // SPAN_KIND_SERVER
    assert.equal(by(7).fixed64, 1_780_000_000_123_250_000n)
    assert.equal(by(8).fixed64, 1_780_000_000_130_500_000n)
    assert.equal(s.filter((f) => f.no === 9).length, 2) // attributes
    assert.equal(fields(by(15).bytes!)[0]!.varint, 2) // status.code = ERROR (field 3)
    assert.equal(fields(by(15).bytes!)[0]!.no, 3)
    assert.equal(by(16).varint, 0x301, 'flags: sampled, with a remote parent')
  })

  test('round trip through the schema', () => {
    const { request } = otlpTypes()
    const msg = request.toObject(request.decode(encodeExportRequest(['service.name', 'x'], [span])), {
      longs: String,
    }) as { resource_spans: { resource: { attributes: { key: string; value: { string_value: string } }[] } }[] }
    assert.equal(msg.resource_spans[0]!.resource.attributes[0]!.value.string_value, 'x')
  })
})
