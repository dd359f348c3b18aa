import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { Headers } from '../http/headers.js'
import {
  extractContext,
  FORMAT_B3,
  FORMAT_B3_MULTI,
  FORMAT_W3C,
  injectContext,
  newSpanId,
  newTraceId,
  parseB3,
  parseTraceparent,
} from './propagation.js'

const T = '4bf92f3577b34da6a3ce929d0e0e4736'
const S = '00f067aa0ba902b7'

describe('trace context', () => {
  test('traceparent: valid, sampled flag, and what W3C says to ignore', () => {
    assert.deepEqual(parseTraceparent(`00-${T}-${S}-01`), { traceId: T, spanId: S, sampled: true })
    assert.deepEqual(parseTraceparent(`00-${T.toUpperCase()}-${S}-00`), { traceId: T, spanId: S, sampled: false })
    assert.equal(parseTraceparent(`00-${'0'.repeat(32)}-${S}-01`), null)
    assert.equal(parseTraceparent(`00-${T}-${'0'.repeat(16)}-01`), null)
    assert.equal(parseTraceparent(`ff-${T}-${S}-01`), null)
    assert.equal(parseTraceparent(`00-${T}-${S}-01-extra`), null, 'version 00 has exactly four fields')
    assert.deepEqual(parseTraceparent(`01-${T}-${S}-03-future`), { traceId: T, spanId: S, sampled: true })
    assert.equal(parseTraceparent('garbage'), null)
  })

  test('b3: full, 64-bit trace ids, sampling only, debug', () => {
    assert.deepEqual(parseB3(`${T}-${S}-1-${S}`), { traceId: T, spanId: S, sampled: true })
    assert.deepEqual(parseB3(`a3ce929d0e0e4736-${S}`), {
      traceId: `${'0'.repeat(16)}a3ce929d0e0e4736`,
      spanId: S,
      sampled: null,
    })
    assert.deepEqual(parseB3(`${T}-${S}-d`), { traceId: T, spanId: S, sampled: true })
    assert.equal(parseB3('0'), false)
    assert.equal(parseB3('1'), true)
    assert.equal(parseB3(`${T}-${S}-x`), null)
  })

  test('W3C is read first; the B3 format seen is remembered for the upstream', () => {
    const w3c = extractContext(new Headers(['traceparent', `00-${T}-${S}-01`, 'tracestate', 'a=b']))
    assert.deepEqual(w3c, { traceId: T, spanId: S, sampled: true, traceState: 'a=b', format: FORMAT_W3C })
    const both = extractContext(new Headers(['traceparent', `00-${T}-${S}-01`, 'b3', `${T}-${S}`]))
    assert.equal((both as { format: number }).format, FORMAT_B3)
    const multi = extractContext(new Headers(['x-b3-traceid', T, 'x-b3-spanid', S, 'x-b3-flags', '1']))
    assert.deepEqual(multi, { traceId: T, spanId: S, sampled: true, traceState: '', format: FORMAT_B3_MULTI })
    assert.equal(extractContext(new Headers(['x-b3-sampled', '0'])), false)
    assert.equal(extractContext(new Headers()), null)
  })

  test('inject writes W3C always and the B3 format the request came in with', () => {
    const h = new Headers(['b3', 'old', 'x-b3-flags', '1'])
    injectContext(h, T, 'aaaaaaaaaaaaaaaa', S, true, 'k=v', FORMAT_B3)
    assert.equal(h.get('traceparent'), `00-${T}-aaaaaaaaaaaaaaaa-01`)
    assert.equal(h.get('tracestate'), 'k=v')
    assert.equal(h.get('b3'), `${T}-aaaaaaaaaaaaaaaa-1-${S}`)
    const m = new Headers(['x-b3-flags', '1'])
    injectContext(m, T, 'aaaaaaaaaaaaaaaa', '', false, '', FORMAT_B3_MULTI)
    assert.deepEqual(m.toObject(), {
      traceparent: `00-${T}-aaaaaaaaaaaaaaaa-00`,
      'x-b3-traceid': T,
      'x-b3-spanid': 'aaaaaaaaaaaaaaaa',
      'x-b3-sampled': '0',
    })
  })

  test('ids are random hex of the right length', () => {
    const ids = new Set(Array.from({ length: 1000 }, () => newSpanId()))
    assert.equal(ids.size, 1000)
    assert.match(newTraceId(), /^[0-9a-f]{32}$/)
    assert.match(newSpanId(), /^[0-9a-f]{16}$/)
  })
})
