// The control-plane benchmark's lean clients read xDS responses from the wire format themselves: what they read
// must be what protobufjs (grpc-js's own deserializer for the ADS service) reads from the same bytes.
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { RecentMessages } from '../bench/control/h2call.js'
import { deltaResponse, nameOf, sotwResponse, vhostRead } from '../bench/control/lean.js'
import { adsService } from '../src/xds/ads.js'
import { encodeResource } from '../src/xds/proto.js'
import { TYPE_URL } from '../src/xds/snapshot.js'

const cluster = (name: string) =>
  encodeResource(
    { name, type: 'EDS', eds_cluster_config: { service_name: name, eds_config: { ads: {} } } },
    TYPE_URL.cluster,
  )

test('a delta response read from the wire: names, versions, aliases, Any bytes, removals, nonce', () => {
  const m = adsService().service.DeltaAggregatedResources!
  const msg = {
    system_version_info: 'v7',
    resources: [
      {
        name: 'outbound|80||a.default.svc.cluster.local',
        version: 'h1',
        resource: cluster('outbound|80||a.default.svc.cluster.local'),
      },
      {
        name: 'outbound|80||b.default.svc.cluster.local',
        version: 'h2',
        resource: cluster('outbound|80||b.default.svc.cluster.local'),
        aliases: ['x', 'y'],
      },
    ],
    type_url: TYPE_URL.cluster,
    removed_resources: ['gone-1', 'gone-2'],
    nonce: '12-3',
    control_plane: { identifier: 'loom' },
  }
  const bytes = m.responseSerialize(msg)
  const ours = deltaResponse(bytes)
  const theirs = m.responseDeserialize(bytes) as typeof msg
  assert.equal(ours.system_version_info, theirs.system_version_info)
  assert.equal(ours.type_url, theirs.type_url)
  assert.equal(ours.nonce, theirs.nonce)
  assert.deepEqual(ours.removed_resources, theirs.removed_resources)
  assert.equal(ours.resources!.length, 2)
  for (let i = 0; i < 2; i++) {
    const a = ours.resources![i]!
    const b = theirs.resources[i]!
    assert.equal(a.name, b.name)
    assert.equal(a.version, b.version)
    assert.deepEqual(a.aliases ?? [], b.aliases ?? [])
    assert.equal(a.resource!.type_url, b.resource.type_url)
    assert.ok(Buffer.from(a.resource!.value).equals(Buffer.from(b.resource.value)))
    assert.equal(nameOf(a.resource!.value), b.name)
  }
})

test('a SotW response read from the wire: version, type, nonce, every Any', () => {
  const m = adsService().service.StreamAggregatedResources!
  const msg = {
    version_info: 'v3',
    resources: [cluster('c1'), cluster('c2'), cluster('c3')],
    type_url: TYPE_URL.cluster,
    nonce: '9-1',
    control_plane: { identifier: 'loom' },
  }
  const bytes = m.responseSerialize(msg)
  const ours = sotwResponse(bytes)
  assert.equal(ours.version_info, 'v3')
  assert.equal(ours.type_url, TYPE_URL.cluster)
  assert.equal(ours.nonce, '9-1')
  assert.deepEqual(
    (ours.resources ?? []).map((r) => nameOf(r.value)),
    ['c1', 'c2', 'c3'],
  )
})

test('a response equal byte for byte to one read lately gets the same reading; any other byte, its own', () => {
  const m = adsService().service.DeltaAggregatedResources!
  const msg = (nonce: string) => ({
    system_version_info: 'v1',
    resources: [{ name: 'c', version: 'h1', resource: cluster('c') }],
    type_url: TYPE_URL.cluster,
    removed_resources: [],
    nonce,
  })
  const recent = new RecentMessages(2)
  const read = (b: Buffer) =>
    recent.candidates(b.length).find((e) => e.bytes.equals(b))?.msg ?? recent.add(b, deltaResponse(b))
  const first = read(m.responseSerialize(msg('s1')))
  // another stream's copy of the same push: equal bytes, a buffer of its own
  assert.equal(read(Buffer.from(m.responseSerialize(msg('s1')))), first)
  // one byte apart (the nonce), the same length: read for itself
  const other = read(m.responseSerialize(msg('s2'))) as { nonce: string }
  assert.notEqual(other, first)
  assert.equal(other.nonce, 's2')
  // bounded: two more distinct ones push the first out
  read(m.responseSerialize(msg('s3')))
  assert.notEqual(read(m.responseSerialize(msg('s1'))), first)
})

test('an on-demand client reads a virtual host once per content: equal bytes share the reading, others do not', () => {
  const vhost = (cluster: string) =>
    encodeResource(
      { name: 'a:80', domains: ['a'], routes: [{ match: { prefix: '/' }, route: { cluster } }] },
      'type.googleapis.com/envoy.config.route.v3.VirtualHost',
    ).value as Uint8Array
  let reads = 0
  const read = (cluster: string) => () => {
    reads++
    return { name: 'a:80', clusters: [cluster] }
  }
  const first = vhostRead(vhost('outbound|80||a'), read('outbound|80||a'))
  // the same content in another message's buffer (at another offset)
  const copy = Buffer.concat([Buffer.from([1, 2, 3]), vhost('outbound|80||a')]).subarray(3)
  assert.equal(vhostRead(copy, read('never')), first)
  assert.equal(reads, 1)
  // the same name routing elsewhere is read for itself
  assert.deepEqual(vhostRead(vhost('outbound|80||b'), read('outbound|80||b')).clusters, ['outbound|80||b'])
  assert.equal(reads, 2)
})
