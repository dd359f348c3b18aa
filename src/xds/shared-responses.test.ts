import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { adsService, type DeltaDiscoveryResponse, type DiscoveryResponse } from './ads.js'
import { encodeResource } from './proto.js'
import { SharedResponses } from './shared-responses.js'
import { TYPE_URL } from './snapshot.js'

const cluster = (name: string) =>
  encodeResource({ '@type': TYPE_URL.cluster, name, type: 'EDS', eds_cluster_config: { eds_config: { ads: {} } } })

describe('responses encoded once for every stream', () => {
  const def = adsService().service
  const shared = new SharedResponses()
  const service = shared.service(def)
  const decode = (method: string, b: Buffer) => def[method]!.responseDeserialize(b) as Record<string, unknown>

  test('a delta response: the shared bytes with the stream nonce decode as the whole message would', () => {
    const msg = (nonce: string): DeltaDiscoveryResponse => ({
      system_version_info: 'v1',
      resources: [
        { name: 'a', version: 'h1', resource: cluster('a') },
        { name: 'b', version: 'h2', resource: cluster('b'), aliases: ['outbound/b:80'] },
      ],
      type_url: TYPE_URL.cluster,
      removed_resources: ['gone'],
      nonce,
      control_plane: { identifier: 'loom' },
    })
    const one = shared.encode('delta', 'k1', msg('s1-1'))
    const two = shared.encode('delta', 'k1', msg('a-much-longer-nonce-'.repeat(10)))
    assert.equal(shared.stats().encodes, 1)
    assert.equal(shared.stats().reuses, 1)
    assert.deepEqual(
      decode('DeltaAggregatedResources', one),
      decode('DeltaAggregatedResources', def.DeltaAggregatedResources!.responseSerialize(msg('s1-1'))),
    )
    assert.equal(decode('DeltaAggregatedResources', two).nonce, 'a-much-longer-nonce-'.repeat(10))
    // what the service sends: bytes as they are, objects serialized
    assert.equal(service.DeltaAggregatedResources!.responseSerialize(one), one)
    assert.deepEqual(
      service.DeltaAggregatedResources!.responseSerialize(msg('x')),
      def.DeltaAggregatedResources!.responseSerialize(msg('x')),
    )
  })

  test('one push for many streams with one nonce: the same bytes, composed once; another nonce, its own', () => {
    const own = new SharedResponses()
    own.service(def)
    const msg = (nonce: string): DeltaDiscoveryResponse => ({
      system_version_info: 'v2',
      resources: [{ name: 'c', version: 'h3', resource: cluster('c') }],
      type_url: TYPE_URL.cluster,
      removed_resources: [],
      nonce,
    })
    const first = own.encode('delta', 'k', msg('s7'))
    assert.equal(own.encode('delta', 'k', msg('s7')), first)
    const other = own.encode('delta', 'k', msg('st-1'))
    assert.notEqual(other, first)
    assert.equal(decode('DeltaAggregatedResources', other).nonce, 'st-1')
    // the first bytes are unchanged, and the content is not encoded again
    assert.equal(decode('DeltaAggregatedResources', first).nonce, 's7')
    const again = own.encode('delta', 'k', msg('s7'))
    assert.deepEqual(decode('DeltaAggregatedResources', again), decode('DeltaAggregatedResources', first))
    assert.equal(own.stats().encodes, 1)
    assert.equal(own.stats().bytes, again.length)
  })

  test('a SotW response, and a different key is encoded anew', () => {
    const msg = (nonce: string, name: string): DiscoveryResponse => ({
      version_info: name,
      resources: [cluster(name)],
      type_url: TYPE_URL.cluster,
      nonce,
    })
    const a = decode('StreamAggregatedResources', shared.encode('sotw', 'x', msg('n1', 'x')))
    const b = decode('StreamAggregatedResources', shared.encode('sotw', 'y', msg('n2', 'y')))
    assert.equal(a.nonce, 'n1')
    assert.equal(a.version_info, 'x')
    assert.equal(b.nonce, 'n2')
    assert.equal(b.version_info, 'y')
  })

  test('kept bytes are bounded, the least recently used going first', () => {
    const small = new SharedResponses(1 << 20, 2)
    small.service(def)
    const msg = (v: string): DiscoveryResponse => ({
      version_info: v,
      resources: [],
      type_url: TYPE_URL.cluster,
      nonce: 'n',
    })
    small.encode('sotw', 'a', msg('a'))
    small.encode('sotw', 'b', msg('b'))
    small.encode('sotw', 'a', msg('a'))
    small.encode('sotw', 'c', msg('c'))
    assert.equal(small.stats().entries, 2)
    small.encode('sotw', 'a', msg('a'))
    assert.equal(small.stats().reuses, 2, '"a" was used last, so "b" went')
  })

  test('the bounds hold over both protocols; one key in each is two entries, each of its own protocol', () => {
    const small = new SharedResponses(1 << 20, 2)
    small.service(def)
    const sotw: DiscoveryResponse = { version_info: 'v', resources: [], type_url: TYPE_URL.cluster, nonce: 'n' }
    const delta: DeltaDiscoveryResponse = {
      system_version_info: 'v',
      resources: [],
      type_url: TYPE_URL.cluster,
      removed_resources: [],
      nonce: 'n',
    }
    const a = small.encode('sotw', 'k', sotw)
    const b = small.encode('delta', 'k', delta)
    assert.equal(small.stats().entries, 2)
    assert.equal(decode('StreamAggregatedResources', a).version_info, 'v')
    assert.equal(decode('DeltaAggregatedResources', b).system_version_info, 'v')
    small.encode('delta', 'k2', delta)
    assert.equal(small.stats().entries, 2, 'a third entry, in either protocol, drops one')
    assert.equal(small.encode('delta', 'k2', delta), small.encode('delta', 'k2', delta), 'the newest is kept')
  })
})
