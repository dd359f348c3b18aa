import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { adsService, type DeltaDiscoveryResponse, type DiscoveryResponse } from './ads.js'
import { encodeResource } from './proto.js'
import { encodeDeltaDiscoveryResponse, encodeDiscoveryResponse } from './response-wire.js'
import { TYPE_URL } from './snapshot.js'

const cluster = (name: string) =>
  encodeResource({ '@type': TYPE_URL.cluster, name, type: 'EDS', eds_cluster_config: { eds_config: { ads: {} } } })

describe('ADS responses written by hand', () => {
  const def = adsService().service
  const sotw = def.StreamAggregatedResources!.responseSerialize as (v: unknown) => Buffer
  const delta = def.DeltaAggregatedResources!.responseSerialize as (v: unknown) => Buffer

  test('a delta response: the bytes protobufjs writes, aliases, removals, empty and non-ASCII strings included', () => {
    const big = cluster(`c-${'x'.repeat(300)}`)
    const cases: DeltaDiscoveryResponse[] = [
      {
        system_version_info: 'v1',
        resources: [
          { name: 'a', version: 'h1', resource: cluster('a') },
          { name: 'outbound/b:80', version: 'h2', resource: big, aliases: ['outbound/b', 'outbound/b.default'] },
          { name: 'gone-soon', version: '' },
        ],
        type_url: TYPE_URL.cluster,
        removed_resources: ['x', 'ÿ-ünïcode-名前'],
        nonce: 's1-42',
        control_plane: { identifier: 'loom' },
      },
      { system_version_info: '', resources: [], type_url: TYPE_URL.endpoint, removed_resources: [], nonce: '' },
      {
        system_version_info: 'v'.repeat(200),
        resources: Array.from({ length: 300 }, (_, i) => ({
          name: `c${i}`,
          version: `h${i}`,
          resource: cluster(`c${i}`),
        })),
        type_url: TYPE_URL.cluster,
        removed_resources: [],
        nonce: 'n',
        control_plane: { identifier: '' },
      },
    ]
    for (const m of cases) assert.deepEqual(encodeDeltaDiscoveryResponse(m), delta(m))
  })

  test('a SotW response: the bytes protobufjs writes', () => {
    const cases: DiscoveryResponse[] = [
      {
        version_info: 'abc',
        resources: [cluster('a'), cluster('ß'), { type_url: TYPE_URL.cluster, value: Buffer.alloc(0) }],
        type_url: TYPE_URL.cluster,
        nonce: '7',
        control_plane: { identifier: 'loom' },
      },
      { version_info: '', resources: [], type_url: '', nonce: '' },
      {
        version_info: 'v',
        resources: Array.from({ length: 1000 }, (_, i) => cluster(`svc-${i}`)),
        type_url: TYPE_URL.cluster,
        nonce: 'x'.repeat(130),
      },
    ]
    for (const m of cases) assert.deepEqual(encodeDiscoveryResponse(m), sotw(m))
  })

  test('a field it does not write: null, and the caller encodes the message as before', () => {
    assert.equal(
      encodeDiscoveryResponse({
        version_info: 'v',
        resources: [],
        type_url: '',
        nonce: '',
        canary: true,
      } as DiscoveryResponse),
      null,
    )
    const withTtl = {
      system_version_info: 'v',
      resources: [{ name: 'a', version: 'h', ttl: { seconds: 5 } }],
      type_url: TYPE_URL.cluster,
      removed_resources: [],
      nonce: 'n',
    } as unknown as DeltaDiscoveryResponse
    assert.equal(encodeDeltaDiscoveryResponse(withTtl), null)
  })
})
