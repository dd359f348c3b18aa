import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { canonicalJson, makeSnapshot, SnapshotCache, versionOf } from './cache.js'
import { decodeResource } from './proto.js'
import { TYPE_URL } from './snapshot.js'

function cluster(name: string, timeout = '1s') {
  return {
    name,
    type: 'EDS',
    eds_cluster_config: { eds_config: { ads: {} }, service_name: name },
    connect_timeout: timeout,
  }
}
function cla(name: string, ip = '10.0.0.1') {
  return {
    cluster_name: name,
    endpoints: [
      {
        locality: { zone: 'a' },
        load_balancing_weight: 1,
        lb_endpoints: [{ endpoint: { address: { socket_address: { address: ip, port_value: 80 } } } }],
      },
    ],
  }
}
function snap(n = 3, ip = '10.0.0.1') {
  const names = Array.from({ length: n }, (_, i) => `c${i}`)
  return makeSnapshot({
    [TYPE_URL.cluster]: names.map((c) => cluster(c)),
    [TYPE_URL.endpoint]: names.map((c) => cla(c, ip)),
  })
}

describe('SnapshotCache', () => {
  test('canonical JSON ignores key order and undefined members', () => {
    assert.equal(canonicalJson({ b: 1, a: [{ y: 2, x: undefined, w: null }] }), '{"a":[{"w":null,"y":2}],"b":1}')
    assert.equal(canonicalJson({ a: 1, b: 2 }), canonicalJson({ b: 2, a: 1 }))
  })

  test('versions are content hashes per type', () => {
    const cache = new SnapshotCache()
    cache.setSnapshot('a', snap())
    cache.setSnapshot('b', snap())
    const a = cache.getSnapshot('a')!
    const b = cache.getSnapshot('b')!
    assert.match(a.resources.get(TYPE_URL.cluster)!.version, /^[0-9a-f]{16}$/)
    assert.equal(a.resources.get(TYPE_URL.cluster)!.version, b.resources.get(TYPE_URL.cluster)!.version)
    assert.notEqual(a.resources.get(TYPE_URL.cluster)!.version, a.resources.get(TYPE_URL.endpoint)!.version)
    // a change to the endpoints only changes the EDS version
    const changed = cache.setSnapshot('b', snap(3, '10.0.0.2'))
    assert.deepEqual(changed, [TYPE_URL.endpoint])
    const b2 = cache.getSnapshot('b')!
    assert.equal(b2.resources.get(TYPE_URL.cluster)!.version, a.resources.get(TYPE_URL.cluster)!.version)
    assert.notEqual(b2.resources.get(TYPE_URL.endpoint)!.version, a.resources.get(TYPE_URL.endpoint)!.version)
    // the same content again is no change at all
    assert.deepEqual(cache.setSnapshot('b', snap(3, '10.0.0.2')), [])
    // per-resource hashes
    const e = cache.getEntry('b')!.types.get(TYPE_URL.endpoint)!
    assert.equal(e.items.size, 3)
    assert.match(e.items.get('c0')!.hash, /^[0-9a-f]{16}$/)
    assert.deepEqual(decodeResource(e.items.get('c1')!.any, { withType: false }), cla('c1', '10.0.0.2'))
  })

  test('encodes each distinct resource once and shares the bytes across nodes', () => {
    const cache = new SnapshotCache()
    for (let i = 0; i < 100; i++) cache.setSnapshot(`node-${i}`, snap(5))
    const s = cache.stats()
    assert.equal(s.nodes, 100)
    assert.equal(s.encodes, 10)
    assert.equal(s.reuses, 990)
    assert.equal(s.encodedResources, 10)
    const a = cache.getEntry('node-0')!.types.get(TYPE_URL.cluster)!.items.get('c0')!.any
    const b = cache.getEntry('node-99')!.types.get(TYPE_URL.cluster)!.items.get('c0')!.any
    assert.equal(a, b)
    // one node changes its endpoints: only the new content is encoded; the bytes live while someone uses them
    cache.setSnapshot('node-0', snap(5, '10.9.9.9'))
    assert.equal(cache.stats().encodes, 15)
    assert.equal(cache.stats().encodedResources, 15)
    cache.clear('node-0')
    assert.equal(cache.stats().encodedResources, 10)
    cache.clear()
    assert.deepEqual(
      { ...cache.stats(), encodes: 0, reuses: 0 },
      {
        nodes: 0,
        sharedTypes: 0,
        encodedResources: 0,
        encodedBytes: 0,
        encodes: 0,
        reuses: 0,
      },
    )
  })

  test('nodes with the same content share one CachedType per type; a node pays only for what is its own', () => {
    const cache = new SnapshotCache()
    for (let i = 0; i < 50; i++) cache.setSnapshot(`node-${i}`, snap(5))
    assert.equal(cache.stats().sharedTypes, 2)
    const a = cache.getEntry('node-0')!
    const b = cache.getEntry('node-49')!
    assert.equal(a.types.get(TYPE_URL.cluster), b.types.get(TYPE_URL.cluster))
    assert.equal(a.snapshot.resources.get(TYPE_URL.endpoint)!.items, b.snapshot.resources.get(TYPE_URL.endpoint)!.items)
    // equal content in fresh objects (another translation) is found too
    cache.setSnapshot('node-50', snap(5))
    assert.equal(cache.getEntry('node-50')!.types.get(TYPE_URL.cluster), a.types.get(TYPE_URL.cluster))
    // one node's own endpoints: a type of its own, the clusters still shared
    cache.setSnapshot('node-7', snap(5, '10.9.9.9'))
    assert.equal(cache.stats().sharedTypes, 3)
    const own = cache.getEntry('node-7')!
    assert.equal(own.types.get(TYPE_URL.cluster), a.types.get(TYPE_URL.cluster))
    assert.notEqual(own.types.get(TYPE_URL.endpoint)!.version, a.types.get(TYPE_URL.endpoint)!.version)
    // the version is the content hash, however the content was found
    assert.equal(a.types.get(TYPE_URL.cluster)!.version, versionOf(a.types.get(TYPE_URL.cluster)!.items.values()))
    // a shared type lives while some node holds it
    cache.clear('node-7')
    assert.equal(cache.stats().sharedTypes, 2)
    for (let i = 0; i < 50; i++) cache.clear(`node-${i}`)
    assert.equal(cache.stats().sharedTypes, 2)
    cache.clear('node-50')
    assert.equal(cache.stats().sharedTypes, 0)
    assert.equal(cache.stats().encodedResources, 0)
  })

  test('watchers hear about changed types of their node', () => {
    const cache = new SnapshotCache()
    const seen: string[] = []
    const stop = cache.watch('a', (id, types) => seen.push(`${id}:${types.length}`))
    const stopAll = cache.watch('*', (id) => seen.push(`*${id}`))
    cache.setSnapshot('a', snap())
    cache.setSnapshot('b', snap())
    cache.setSnapshot('a', snap())
    cache.setSnapshot('a', snap(3, '10.1.1.1'))
    stop()
    cache.clear('a')
    stopAll()
    cache.setSnapshot('c', snap())
    assert.deepEqual(seen, ['a:2', '*a', '*b', 'a:1', '*a', '*a'])
  })

  test('a resource that does not encode is rejected and the old snapshot stays', () => {
    const cache = new SnapshotCache()
    cache.setSnapshot('a', snap(1))
    const before = cache.stats()
    const bad = makeSnapshot({ [TYPE_URL.cluster]: [cluster('c0'), { ...cluster('bad'), conect_timeout: '1s' }] })
    assert.throws(() => cache.setSnapshot('a', bad), /cannot encode Cluster "bad": \$\.conect_timeout: unknown field/)
    assert.equal(cache.getSnapshot('a')!.resources.get(TYPE_URL.endpoint)!.items.size, 1)
    assert.deepEqual({ ...cache.stats(), reuses: 0 }, { ...before, reuses: 0 })
  })
  test('a warm snapshot keeps its resources encoded for the nodes to come, and is no node', () => {
    const cache = new SnapshotCache()
    cache.warm('default', snap(3))
    const warmed = cache.stats()
    assert.equal(warmed.encodes, 6)
    assert.equal(warmed.nodes, 0)
    assert.deepEqual(cache.nodeIds(), [])
    assert.deepEqual(cache.warmKeys(), ['default'])
    // a node with the same content (other objects) encodes nothing
    cache.setSnapshot('n1', snap(3))
    assert.equal(cache.stats().encodes, 6)
    // a node with one more cluster encodes only that one
    cache.setSnapshot('n2', snap(4))
    assert.equal(cache.stats().encodes, 8)
    // the nodes gone, the warm snapshot still holds its resources; let go, they go
    cache.clear()
    assert.equal(cache.stats().encodedResources, 6)
    cache.warm('default', null)
    assert.equal(cache.stats().encodedResources, 0)
    assert.deepEqual(cache.warmKeys(), [])
    // warmed again with other content: the old content goes
    cache.warm('default', snap(2))
    cache.warm('default', snap(1, '10.0.0.9'))
    assert.equal(cache.stats().encodedResources, 2)
  })
})
