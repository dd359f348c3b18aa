import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import * as v from 'valibot'
import { HttpConnectionManager } from '../../config/envoy.js'
import { TypeUrls } from '../../config/type-urls.js'
import { applyEdgeRules, compileInternalAddresses, isInternalAddress } from './edge.js'
import type { HcmContext } from './hcm.js'
import { Headers } from './headers.js'
import type { ActiveStream } from './stream.js'
import type { RequestHead } from './types.js'

interface Options {
  useRemoteAddress?: boolean
  hops?: number
  skipXffAppend?: boolean
  internal?: { address_prefix: string; prefix_len?: number }[]
  generateRequestId?: boolean
  preserve?: boolean
  explainFilter?: boolean
}

/** Runs the rules on `list` from `peer`; returns the headers upstream gets and the stream's addresses. */
function run(list: string[], o: Options = {}, peer = '203.0.113.9', scheme: 'http' | 'https' = 'http') {
  const useRemoteAddress = o.useRemoteAddress ?? false
  const hcm = {
    useRemoteAddress,
    xffTrustedHops: o.hops ?? 0,
    appendXff: useRemoteAddress && o.skipXffAppend !== true,
    generateRequestId: o.generateRequestId ?? true,
    preserveExternalRequestId: o.preserve ?? false,
    internalAddresses: compileInternalAddresses(o.internal),
    explainFilter: o.explainFilter ?? false,
  } as unknown as HcmContext
  const s = { peerIp: peer, sourceIp: peer, requestId: '' } as ActiveStream
  const head = { scheme, headers: new Headers(list) } as RequestHead
  applyEdgeRules(s, hcm, head)
  return { h: head.headers, client: s.sourceIp, requestId: s.requestId }
}

describe('internal addresses', () => {
  test('none without cidr_ranges', () => {
    assert.equal(compileInternalAddresses(undefined), null)
    assert.equal(isInternalAddress(null, '10.0.0.1'), false)
    assert.equal(isInternalAddress(null, '127.0.0.1'), false)
  })

  test('IPv4 and IPv6 ranges; IPv4-mapped peers match IPv4 ranges', () => {
    const l = compileInternalAddresses([
      { address_prefix: '10.0.0.0', prefix_len: 8 },
      { address_prefix: 'fd00::', prefix_len: 8 },
    ])
    assert.equal(isInternalAddress(l, '10.1.2.3'), true)
    assert.equal(isInternalAddress(l, '::ffff:10.1.2.3'), true)
    assert.equal(isInternalAddress(l, '11.0.0.1'), false)
    assert.equal(isInternalAddress(l, 'fd12::1'), true)
    assert.equal(isInternalAddress(l, 'fe80::1'), false)
    assert.equal(isInternalAddress(l, 'not-an-ip'), false)
    assert.equal(isInternalAddress(l, ''), false)
  })

  test('the schema takes IP prefixes only', () => {
    const hcm = (cidr: unknown) => ({
      '@type': TypeUrls.hcm,
      stat_prefix: 's',
      rds: { config_source: { ads: {} }, route_config_name: 'r' },
      internal_address_config: { cidr_ranges: [cidr] },
    })
    assert.equal(v.safeParse(HttpConnectionManager, hcm({ address_prefix: '10.0.0.0', prefix_len: 8 })).success, true)
    assert.equal(v.safeParse(HttpConnectionManager, hcm({ address_prefix: '::1', prefix_len: 128 })).success, true)
    assert.equal(v.safeParse(HttpConnectionManager, hcm({ address_prefix: '10.0.0.0', prefix_len: 33 })).success, false)
    assert.equal(
      v.safeParse(HttpConnectionManager, hcm({ address_prefix: 'mesh.local', prefix_len: 8 })).success,
      false,
    )
  })
})

describe('trusted client address', () => {
  test('use_remote_address: the peer; with N trusted hops the Nth from the right of x-forwarded-for', () => {
    const xff = ['x-forwarded-for', '192.0.2.1, 198.51.100.2,198.51.100.3']
    assert.equal(run([...xff], { useRemoteAddress: true }).client, '203.0.113.9')
    assert.equal(run([...xff], { useRemoteAddress: true, hops: 1 }).client, '198.51.100.3')
    assert.equal(run([...xff], { useRemoteAddress: true, hops: 3 }).client, '192.0.2.1')
    assert.equal(run([...xff], { useRemoteAddress: true, hops: 4 }).client, '203.0.113.9', 'list too short: the peer')
  })

  test('without use_remote_address: the (N+1)th from the right, else the peer', () => {
    const xff = ['x-forwarded-for', '192.0.2.1, 198.51.100.2']
    assert.equal(run([...xff]).client, '198.51.100.2')
    assert.equal(run([...xff], { hops: 1 }).client, '192.0.2.1')
    assert.equal(run([...xff], { hops: 2 }).client, '203.0.113.9')
    assert.equal(run([]).client, '203.0.113.9')
    assert.equal(run(['x-forwarded-for', 'unknown']).client, '203.0.113.9', 'not an address: the peer')
  })

  test('several x-forwarded-for fields are one list', () => {
    const r = run(['x-forwarded-for', '192.0.2.1', 'a', '1', 'x-forwarded-for', '198.51.100.2'], {
      useRemoteAddress: true,
      hops: 1,
    })
    assert.equal(r.client, '198.51.100.2')
    assert.deepEqual(r.h.getAll('x-forwarded-for'), ['192.0.2.1, 198.51.100.2, 203.0.113.9'])
  })
})

describe('headers', () => {
  test('edge request: sanitized, x-envoy-external-address set, x-request-id replaced', () => {
    const { h, requestId } = run(
      [
        'x-forwarded-proto',
        'https',
        'x-envoy-retry-on',
        '5xx',
        'x-loom-a',
        '1',
        'x-envoy-internal',
        'true',
        'x-request-id',
        'client',
        'x-envoyish',
        'kept',
      ],
      { useRemoteAddress: true },
    )
    assert.equal(h.get('x-forwarded-proto'), 'http')
    assert.equal(h.get('x-envoy-retry-on'), undefined)
    assert.equal(h.get('x-loom-a'), undefined)
    assert.equal(h.get('x-envoy-internal'), undefined)
    assert.equal(h.get('x-envoyish'), 'kept', 'only the x-envoy- prefix is reserved')
    assert.equal(h.get('x-envoy-external-address'), '203.0.113.9')
    assert.equal(h.get('x-forwarded-for'), '203.0.113.9')
    assert.notEqual(requestId, 'client')
    assert.equal(h.get('x-request-id'), requestId)
  })

  test('edge request: x-loom-explain is left to the explain filter when the chain has one', () => {
    const list = ['x-loom-explain', '1', 'x-loom-explain-record', 'forged', 'x-loom-a', '1']
    const without = run([...list], { useRemoteAddress: true }).h
    assert.equal(without.get('x-loom-explain'), undefined)
    const withFilter = run([...list], { useRemoteAddress: true, explainFilter: true }).h
    assert.equal(withFilter.get('x-loom-explain'), '1')
    assert.equal(withFilter.get('x-loom-explain-record'), undefined)
    assert.equal(withFilter.get('x-loom-a'), undefined)
  })

  test('edge request over TLS: x-forwarded-proto https', () => {
    assert.equal(
      run(['x-forwarded-proto', 'http'], { useRemoteAddress: true }, '203.0.113.9', 'https').h.get('x-forwarded-proto'),
      'https',
    )
  })

  test('internal peer at an edge proxy: trusted and marked', () => {
    const { h, requestId } = run(
      ['x-forwarded-proto', 'https', 'x-envoy-retry-on', '5xx', 'x-request-id', 'mine'],
      { useRemoteAddress: true, internal: [{ address_prefix: '10.0.0.0', prefix_len: 8 }] },
      '10.0.0.7',
    )
    assert.equal(h.get('x-forwarded-proto'), 'https')
    assert.equal(h.get('x-envoy-retry-on'), '5xx')
    assert.equal(h.get('x-envoy-internal'), 'true')
    assert.equal(h.get('x-envoy-external-address'), undefined)
    assert.equal(requestId, 'mine')
  })

  test('without use_remote_address: a single internal x-forwarded-for address marks the request internal', () => {
    const internal = [{ address_prefix: '10.0.0.0', prefix_len: 8 }]
    assert.equal(run(['x-forwarded-for', '10.1.1.1'], { internal }).h.get('x-envoy-internal'), 'true')
    assert.equal(run(['x-forwarded-for', '192.0.2.1, 10.1.1.1'], { internal }).h.get('x-envoy-internal'), undefined)
    assert.equal(run(['x-envoy-internal', 'true'], { internal }, '10.0.0.7').h.get('x-envoy-internal'), undefined)
  })

  test('generate_request_id: false leaves x-request-id alone; the stream still logs it', () => {
    assert.equal(run([], { useRemoteAddress: true, generateRequestId: false }).h.get('x-request-id'), undefined)
    const r = run(['x-request-id', 'c'], { useRemoteAddress: true, generateRequestId: false })
    assert.equal(r.h.get('x-request-id'), 'c')
    assert.equal(r.requestId, 'c')
  })

  test('a sidecar changes nothing but adds what is missing', () => {
    const list = ['x-forwarded-for', '192.0.2.1', 'x-forwarded-proto', 'https', 'x-envoy-a', '1', 'x-request-id', 'r']
    const { h } = run([...list])
    assert.deepEqual(h.list, list)
    const added = run(['a', '1']).h
    assert.equal(added.get('x-forwarded-proto'), 'http')
    assert.match(added.get('x-request-id') ?? '', /^[0-9a-f-]{36}$/)
    assert.equal(added.get('x-forwarded-for'), undefined)
  })
})
