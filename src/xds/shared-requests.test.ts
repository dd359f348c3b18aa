import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { adsService } from './ads.js'
import { namesRun, SharedRequestNames } from './shared-requests.js'
import { TYPE_URL } from './snapshot.js'

const names = (n: number, from = 0) =>
  Array.from({ length: n }, (_, i) => `outbound|80||svc-${String(from + i).padStart(5, '0')}.default.svc.cluster.local`)

describe('request name lists decoded once for every stream', () => {
  const def = adsService().service
  const serialize = (method: string, msg: unknown) => def[method]!.requestSerialize(msg) as Buffer
  const plain = (method: string, b: Buffer) => def[method]!.requestDeserialize(b) as Record<string, unknown>
  const delta = (subscribe: string[], nonce: string, extra: Record<string, unknown> = {}) =>
    serialize('DeltaAggregatedResources', {
      type_url: TYPE_URL.endpoint,
      resource_names_subscribe: subscribe,
      response_nonce: nonce,
      ...extra,
    })

  test('alike delta subscriptions share one frozen array; the rest of each request is its own', () => {
    const shared = new SharedRequestNames()
    const decode = shared.service(def).DeltaAggregatedResources!.requestDeserialize
    const list = names(100)
    const a = decode(delta(list, 's1-1')) as Record<string, unknown>
    const b = decode(
      delta(list, 's2-7', { node: { id: 'sidecar~10.0.0.2~b.default~default.svc.cluster.local' } }),
    ) as Record<string, unknown>
    assert.deepEqual(a.resource_names_subscribe, list)
    assert.equal(b.resource_names_subscribe, a.resource_names_subscribe)
    assert.ok(Object.isFrozen(a.resource_names_subscribe))
    assert.equal(a.response_nonce, 's1-1')
    assert.equal(b.response_nonce, 's2-7')
    assert.equal((b.node as { id: string }).id, 'sidecar~10.0.0.2~b.default~default.svc.cluster.local')
    assert.equal(b.type_url, TYPE_URL.endpoint)
    // apart from the shared array, what plain decoding gives
    const bytes = delta(list, 's2-7')
    assert.deepEqual(decode(bytes), plain('DeltaAggregatedResources', bytes))
    assert.deepEqual(shared.stats(), { runs: 1, bytes: shared.stats().bytes, decodes: 1, reuses: 2 })
  })

  test('one name different, or the last byte: a list of its own', () => {
    const shared = new SharedRequestNames()
    const decode = shared.service(def).DeltaAggregatedResources!.requestDeserialize
    const list = names(50)
    const first = decode(delta(list, 'n')) as Record<string, unknown>
    const other = [...list.slice(0, 49), `${list[49]!.slice(0, -1)}x`]
    const second = decode(delta(other, 'n')) as Record<string, unknown>
    assert.notEqual(second.resource_names_subscribe, first.resource_names_subscribe)
    assert.deepEqual(second.resource_names_subscribe, other)
    assert.equal(shared.stats().reuses, 0)
  })

  test('SotW resource_names: shared the same way', () => {
    const shared = new SharedRequestNames()
    const decode = shared.service(def).StreamAggregatedResources!.requestDeserialize
    const req = (nonce: string, version: string) =>
      serialize('StreamAggregatedResources', {
        version_info: version,
        resource_names: names(40),
        type_url: TYPE_URL.endpoint,
        response_nonce: nonce,
      })
    const a = decode(req('1', 'v1')) as Record<string, unknown>
    const b = decode(req('2', 'v2')) as Record<string, unknown>
    assert.equal(a.resource_names, b.resource_names)
    assert.equal(b.version_info, 'v2')
    assert.equal(b.response_nonce, '2')
  })

  test('short lists, names split by another field, and bytes that do not scan are decoded as usual', () => {
    const shared = new SharedRequestNames()
    const decode = shared.service(def).DeltaAggregatedResources!.requestDeserialize
    const short = decode(delta(names(31), 'n')) as Record<string, unknown>
    assert.equal(Object.isFrozen(short.resource_names_subscribe), false)
    assert.equal(namesRun(delta(names(31), 'n')), null)
    // protobuf merges concatenated messages: the names come in two runs with the nonce between them
    const split = Buffer.concat([
      delta(names(40), 'mid'),
      serialize('DeltaAggregatedResources', { resource_names_subscribe: names(40, 40) }),
    ])
    assert.equal(namesRun(split), null)
    const got = decode(split) as Record<string, unknown>
    assert.deepEqual(got.resource_names_subscribe, names(80))
    assert.equal(got.response_nonce, 'mid')
    assert.equal(Object.isFrozen(got.resource_names_subscribe), false)
    // a truncated message does not scan: it is decoded as plain decoding decodes it
    const whole = delta(names(40), 'nonce')
    const cut = whole.subarray(0, whole.length - 2)
    assert.equal(namesRun(cut), null)
    assert.deepEqual(decode(cut), plain('DeltaAggregatedResources', cut))
    assert.deepEqual(shared.stats().reuses, 0)
  })

  test('kept runs are bounded: the least recently used goes first', () => {
    const shared = new SharedRequestNames(8 * 1024 * 1024, 2)
    const decode = shared.service(def).DeltaAggregatedResources!.requestDeserialize
    const lists = [names(40, 0), names(40, 100), names(40, 200)]
    const first = decode(delta(lists[0]!, 'a')) as Record<string, unknown>
    decode(delta(lists[1]!, 'a'))
    // list 0 used again: list 1 is now the oldest, and goes when list 2 comes
    assert.equal(
      (decode(delta(lists[0]!, 'b')) as Record<string, unknown>).resource_names_subscribe,
      first.resource_names_subscribe,
    )
    decode(delta(lists[2]!, 'a'))
    assert.equal(shared.stats().runs, 2)
    assert.equal(
      (decode(delta(lists[0]!, 'c')) as Record<string, unknown>).resource_names_subscribe,
      first.resource_names_subscribe,
    )
    const before = shared.stats().decodes
    decode(delta(lists[1]!, 'c'))
    assert.equal(shared.stats().decodes, before + 1)
  })
})
