import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { type FamilyType, parseLabels, parsePrometheusText, type Sample } from './prom-text.js'

const FAMILIES = new Map<string, FamilyType>([
  ['istio_requests_total', 'counter'],
  ['istio_request_duration_milliseconds', 'histogram'],
])

function read(text: string): { samples: Sample[]; malformed: number } {
  const samples: Sample[] = []
  const { malformed } = parsePrometheusText(text, FAMILIES, (s) => samples.push(s))
  return { samples, malformed }
}

describe('Prometheus text reader', () => {
  test('reads the wanted counters and histograms, skips comments and other families', () => {
    const text = [
      '# HELP istio_requests_total Total requests.',
      '# TYPE istio_requests_total counter',
      'istio_requests_total{reporter="destination",source_workload="productpage-v1",response_code="200"} 12',
      'envoy_cluster_upstream_rq_total{envoy_cluster_name="x"} 99',
      'istio_requests_totally_other{a="b"} 5',
      '# TYPE istio_request_duration_milliseconds histogram',
      'istio_request_duration_milliseconds_bucket{reporter="destination",le="0.5"} 1',
      'istio_request_duration_milliseconds_bucket{reporter="destination",le="+Inf"} 3',
      'istio_request_duration_milliseconds_sum{reporter="destination"} 7.25',
      'istio_request_duration_milliseconds_count{reporter="destination"} 3',
      'istio_request_duration_milliseconds{reporter="destination"} 3',
      '',
    ].join('\n')
    const { samples, malformed } = read(text)
    assert.equal(malformed, 0)
    assert.deepEqual(
      samples.map((s) => [s.family, s.kind, s.value]),
      [
        ['istio_requests_total', 'value', 12],
        ['istio_request_duration_milliseconds', 'bucket', 1],
        ['istio_request_duration_milliseconds', 'bucket', 3],
        ['istio_request_duration_milliseconds', 'sum', 7.25],
        ['istio_request_duration_milliseconds', 'count', 3],
      ],
    )
    assert.equal(samples[0]!.labelText, 'reporter="destination",source_workload="productpage-v1",response_code="200"')
  })

  test('label values with braces, commas, quotes and escapes; timestamps; special values; CRLF', () => {
    const text =
      'istio_requests_total{path="/a}b,c",q="say \\"hi\\"",nl="x\\ny",bs="c:\\\\d"} 4 1700000000000\r\n' +
      'istio_requests_total{a="1"} +Inf\n' +
      'istio_requests_total{a="2"} NaN\n' +
      'istio_requests_total 1e3\n'
    const { samples, malformed } = read(text)
    assert.equal(malformed, 0)
    assert.equal(samples.length, 4)
    assert.equal(samples[0]!.value, 4)
    assert.deepEqual(parseLabels(samples[0]!.labelText), [
      ['path', '/a}b,c'],
      ['q', 'say "hi"'],
      ['nl', 'x\ny'],
      ['bs', 'c:\\d'],
    ])
    assert.equal(samples[1]!.value, Number.POSITIVE_INFINITY)
    assert.ok(Number.isNaN(samples[2]!.value))
    assert.equal(samples[3]!.labelText, '')
    assert.equal(samples[3]!.value, 1000)
  })

  test('a malformed line of a wanted family is counted and skipped, the rest is read', () => {
    const text =
      'istio_requests_total{a="1" 3\n' + // no closing brace
      'istio_requests_total{a="2"} lots\n' + // not a number
      'istio_requests_total{a="3"}\n' + // no value
      'istio_requests_total{a="4"} 8\n'
    const { samples, malformed } = read(text)
    assert.equal(malformed, 3)
    assert.deepEqual(
      samples.map((s) => s.value),
      [8],
    )
  })

  test('parseLabels refuses what is not a label set', () => {
    assert.equal(parseLabels('a=1'), null)
    assert.equal(parseLabels('a="1'), null)
    assert.equal(parseLabels('1a="x"'), null)
    assert.deepEqual(parseLabels(''), [])
    assert.deepEqual(parseLabels('a="",b="2",'), [
      ['a', ''],
      ['b', '2'],
    ])
  })
})
