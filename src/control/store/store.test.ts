/**
 * The Store contract, run against MemoryStore, FileStore and EtcdStore (a real 3-member etcd cluster shared by the
 * file, a fresh key prefix per test): metadata stamping, CRUD, list order and filters, compare-and-set, atomic
 * putAll, watch replay and live events, the compacted error, close. Revisions are counted from the revision the
 * store opened at: 0 for the embedded stores, etcd's current revision for EtcdStore.
 */
import assert from 'node:assert/strict'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, afterEach, describe, test } from 'node:test'
import { ETCD_MISSING, type EtcdCluster, etcdBinary, startEtcdCluster } from '../../../test/helpers/etcd.js'
import type { Resource } from '../../api/resource.js'
import type { StoreOptions } from './base-store.js'
import { EtcdStore } from './etcd-store.js'
import { FileStore, MemoryStore } from './file-store.js'
import { type Store, StoreCompactedError, StoreConflictError, type WatchEvent } from './store.js'

function res(kind: string, namespace: string, name: string, spec: unknown = {}, extra = {}): Resource {
  return { apiVersion: 'loom.dev/v1', kind, metadata: { name, namespace, ...extra }, spec }
}

/** one cluster for the whole file, started by the first EtcdStore test */
let cluster: Promise<EtcdCluster> | null = null
let prefixes = 0
after(async () => {
  if (cluster !== null) await (await cluster).stop()
})

const implementations: [string, (options?: StoreOptions) => Promise<Store>, string | false][] = [
  ['MemoryStore', async (options) => new MemoryStore(options), false],
  ['FileStore', async (options) => FileStore.open(await mkdtemp(join(tmpdir(), 'loom-store-')), options), false],
  [
    'EtcdStore',
    async (options) => {
      cluster ??= startEtcdCluster()
      const { endpoints } = await cluster
      return EtcdStore.open({ endpoints, prefix: `/loom-contract/${process.pid}-${++prefixes}`, ...options })
    },
    etcdBinary() === null ? ETCD_MISSING : false,
  ],
]

for (const [name, create, skip] of implementations) {
  describe(`${name} contract`, { skip }, () => {
    const opened: Store[] = []
    /** the store's revision when the test opened it: every revision below is counted from it */
    let base = 0
    const at = (n: number) => base + n
    const rv = (n: number) => String(base + n)
    async function open(options?: StoreOptions): Promise<Store> {
      const s = await create(options)
      opened.push(s)
      base = s.revision
      return s
    }
    afterEach(async () => {
      for (const s of opened.splice(0)) {
        await s.close()
        if (s instanceof FileStore) await rm(s.dir, { recursive: true, force: true })
      }
    })

    test('put stamps resourceVersion, uid, creationTimestamp and generation; get returns a copy', async () => {
      const s = await open()
      assert.equal(s.revision, at(0))
      const created = await s.put(res('Service', 'shop', 'cart', { port: 80 }, { labels: { app: 'cart' } }))
      assert.equal(created.metadata.resourceVersion, rv(1))
      assert.equal(created.metadata.generation, 1)
      assert.match(created.metadata.uid ?? '', /^[0-9a-f-]{36}$/)
      assert.match(created.metadata.creationTimestamp ?? '', /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/)
      assert.equal(s.revision, at(1))
      const got = await s.get('Service', 'shop', 'cart')
      assert.deepEqual(got, created)
      got!.spec = { port: 1 }
      got!.metadata.labels!.app = 'changed'
      assert.deepEqual(await s.get('Service', 'shop', 'cart'), created)
      assert.equal(await s.get('Service', 'shop', 'nope'), null)
      assert.equal(await s.get('Route', 'shop', 'cart'), null)
    })

    test('the stored resource does not change when the caller changes its input or the result', async () => {
      const s = await open()
      const input = res('Service', 'a', 'x', { port: 80 })
      const out = await s.put(input)
      ;(input.spec as { port: number }).port = 1
      ;(out.spec as { port: number }).port = 2
      assert.deepEqual((await s.get('Service', 'a', 'x'))?.spec, { port: 80 })
      assert.equal(input.metadata.resourceVersion, undefined, 'the input is not modified')
    })

    test('namespace defaults to default; key fields are checked', async () => {
      const s = await open()
      const r = await s.put({
        apiVersion: 'v1',
        kind: 'Service',
        metadata: { name: 'x' } as Resource['metadata'],
        spec: {},
      })
      assert.equal(r.metadata.namespace, 'default')
      await assert.rejects(s.put(res('Service', 'a', '')), /no metadata.name/)
      await assert.rejects(s.put(res('', 'a', 'x')), /no kind/)
      await assert.rejects(s.put(res('Service', 'a', 'x/y')), /cannot contain '\/'/)
      await assert.rejects(s.put(res('Service', 'a', 'x', {}, { resourceVersion: 3 })), /must be a string/)
      assert.equal(s.revision, at(1))
    })

    test('updates keep uid and creationTimestamp; generation changes only with the spec', async () => {
      const s = await open()
      const v1 = await s.put(res('Service', 'a', 'x', { port: 80, tls: { mode: 'strict', sni: 'x' } }))
      const v2 = await s.put(
        res('Service', 'a', 'x', { tls: { sni: 'x', mode: 'strict' }, port: 80 }, { labels: { l: '1' } }),
      )
      assert.equal(v2.metadata.resourceVersion, rv(2))
      assert.equal(v2.metadata.uid, v1.metadata.uid)
      assert.equal(v2.metadata.creationTimestamp, v1.metadata.creationTimestamp)
      assert.equal(v2.metadata.generation, 1, 'same spec (other key order), new labels: same generation')
      const v3 = await s.put(res('Service', 'a', 'x', { port: 81 }))
      assert.equal(v3.metadata.generation, 2)
      assert.equal(v3.metadata.labels, undefined)
      const given = await s.put(
        res(
          'Service',
          'a',
          'x',
          { port: 81 },
          { uid: 'mine', creationTimestamp: '2000-01-01T00:00:00Z', generation: 9 },
        ),
      )
      assert.equal(given.metadata.uid, v1.metadata.uid, 'store-owned metadata from the caller is ignored')
      assert.equal(given.metadata.creationTimestamp, v1.metadata.creationTimestamp)
      assert.equal(given.metadata.generation, 2)
    })

    test('delete returns the last stored state; deleting nothing writes nothing; recreate is a new object', async () => {
      const s = await open()
      const v1 = await s.put(res('Service', 'a', 'x', { port: 80 }))
      const deleted = await s.delete('Service', 'a', 'x')
      assert.deepEqual(deleted, v1)
      assert.equal(s.revision, at(2))
      assert.equal(await s.get('Service', 'a', 'x'), null)
      assert.equal(await s.delete('Service', 'a', 'x'), null)
      assert.equal(s.revision, at(2))
      const again = await s.put(res('Service', 'a', 'x', { port: 80 }))
      assert.notEqual(again.metadata.uid, v1.metadata.uid)
      assert.equal(again.metadata.generation, 1)
      assert.equal(again.metadata.resourceVersion, rv(3))
    })

    test('list sorts by key, filters by kind and namespace, and reports the revision', async () => {
      const s = await open()
      await s.put(res('Service', 'b', 'z'))
      await s.put(res('Route', 'a', 'r1'))
      await s.put(res('Service', 'a', 'y'))
      await s.put(res('Service', 'a', 'b'))
      await s.put(res('Service', 'ab', 'a'))
      await s.put(res('Gateway', 'b', 'g'))
      const keys = (items: Resource[]) => items.map((r) => `${r.kind}/${r.metadata.namespace}/${r.metadata.name}`)
      const all = await s.list()
      assert.equal(all.revision, at(6))
      assert.deepEqual(keys(all.items), [
        'Gateway/b/g',
        'Route/a/r1',
        'Service/a/b',
        'Service/a/y',
        'Service/ab/a',
        'Service/b/z',
      ])
      assert.deepEqual(keys((await s.list('Service')).items), [
        'Service/a/b',
        'Service/a/y',
        'Service/ab/a',
        'Service/b/z',
      ])
      assert.deepEqual(keys((await s.list('Service', 'a')).items), ['Service/a/b', 'Service/a/y'])
      assert.deepEqual(keys((await s.list(undefined, 'b')).items), ['Gateway/b/g', 'Service/b/z'])
      assert.deepEqual((await s.list('Nothing')).items, [])
      await s.delete('Route', 'a', 'r1')
      assert.deepEqual((await s.list('Route')).items, [])
      const listed = await s.list('Service', 'a')
      listed.items[0]!.spec = 'changed'
      assert.deepEqual((await s.get('Service', 'a', 'b'))?.spec, {})
    })

    test('compare-and-set: expectedResourceVersion, "" for create, conflicts write nothing', async () => {
      const s = await open()
      const v1 = await s.put(res('Service', 'a', 'x', { n: 1 }), { expectedResourceVersion: '' })
      await assert.rejects(
        s.put(res('Service', 'a', 'x', { n: 2 }), { expectedResourceVersion: '' }),
        (e: Error) =>
          e instanceof StoreConflictError &&
          e.message === `put Service/a/x: expected it not to exist, but it exists at resourceVersion ${rv(1)}`,
      )
      await assert.rejects(
        s.put(res('Service', 'a', 'x', { n: 2 }), { expectedResourceVersion: rv(7) }),
        (e: Error) =>
          e instanceof StoreConflictError &&
          e.message === `put Service/a/x: expected resourceVersion ${rv(7)}, but it is at resourceVersion ${rv(1)}`,
      )
      await assert.rejects(
        s.put(res('Service', 'a', 'y'), { expectedResourceVersion: rv(1) }),
        (e: Error) =>
          e instanceof StoreConflictError &&
          e.message === `put Service/a/y: expected resourceVersion ${rv(1)}, but it does not exist`,
      )
      assert.equal(s.revision, at(1))
      const v2 = await s.put(res('Service', 'a', 'x', { n: 2 }), {
        expectedResourceVersion: v1.metadata.resourceVersion,
      })
      assert.equal(v2.metadata.resourceVersion, rv(2))
      await assert.rejects(s.delete('Service', 'a', 'x', { expectedResourceVersion: rv(1) }), StoreConflictError)
      await assert.rejects(s.delete('Service', 'a', 'x', { expectedResourceVersion: '' }), StoreConflictError)
      assert.equal(await s.delete('Service', 'a', 'nope', { expectedResourceVersion: '' }), null)
      await assert.rejects(s.delete('Service', 'a', 'nope', { expectedResourceVersion: rv(3) }), /does not exist/)
      assert.deepEqual(await s.delete('Service', 'a', 'x', { expectedResourceVersion: rv(2) }), v2)
      assert.equal(s.revision, at(3))
    })

    test('compare-and-set: writing back what was read is conditional on its resourceVersion', async () => {
      const s = await open()
      await s.put(res('Service', 'a', 'x', { n: 1 }))
      const a = (await s.get('Service', 'a', 'x'))!
      const b = (await s.get('Service', 'a', 'x'))!
      a.spec = { n: 2 }
      b.spec = { n: 3 }
      await s.put(a)
      await assert.rejects(
        s.put(b),
        new RegExp(`expected resourceVersion ${rv(1)}, but it is at resourceVersion ${rv(2)}`),
      )
      await assert.rejects(s.put(b, { expectedResourceVersion: undefined }), StoreConflictError)
      const overridden = await s.put(b, { expectedResourceVersion: rv(2) })
      assert.equal(overridden.metadata.resourceVersion, rv(3), 'the option overrides the resource')
      const { apiVersion, kind, metadata, spec } = b
      const unconditional = await s.put({
        apiVersion,
        kind,
        spec,
        metadata: { ...metadata, resourceVersion: undefined },
      })
      assert.equal(unconditional.metadata.resourceVersion, rv(4))
      assert.deepEqual(unconditional.spec, { n: 3 })
    })

    test('concurrent compare-and-set writers: exactly one wins; revisions are consecutive', async () => {
      const s = await open()
      const base = await s.put(res('Service', 'a', 'x', { n: 0 }))
      const results = await Promise.allSettled(
        Array.from({ length: 10 }, (_, i) =>
          s.put(res('Service', 'a', 'x', { n: i + 1 }), { expectedResourceVersion: base.metadata.resourceVersion }),
        ),
      )
      assert.equal(results.filter((r) => r.status === 'fulfilled').length, 1)
      assert.ok(results.every((r) => r.status === 'fulfilled' || r.reason instanceof StoreConflictError))
      const many = await Promise.all(Array.from({ length: 50 }, (_, i) => s.put(res('Service', 'b', `s${i}`))))
      assert.deepEqual(
        many.map((r) => Number(r.metadata.resourceVersion)),
        Array.from({ length: 50 }, (_, i) => at(i + 3)),
      )
      assert.equal(s.revision, at(52))
    })

    test('putAll: one revision for the batch; a failing compare-and-set writes nothing', async () => {
      const s = await open()
      const existing = await s.put(res('Service', 'a', 'x', { n: 1 }))
      const out = await s.putAll([res('Service', 'a', 'y'), res('Route', 'a', 'r'), res('Service', 'a', 'x', { n: 2 })])
      assert.deepEqual(
        out.map((r) => r.metadata.resourceVersion),
        [rv(2), rv(2), rv(2)],
      )
      assert.equal(out[2]!.metadata.uid, existing.metadata.uid)
      assert.equal(out[2]!.metadata.generation, 2)
      assert.equal(s.revision, at(2))
      await assert.rejects(
        s.putAll([
          res('Service', 'a', 'new1'),
          res('Service', 'a', 'x', { n: 3 }, { resourceVersion: rv(2) }),
          res('Service', 'a', 'y', { n: 3 }, { resourceVersion: rv(1) }),
          res('Service', 'a', 'new2'),
        ]),
        (e: Error) =>
          e instanceof StoreConflictError &&
          e.message === `putAll Service/a/y: expected resourceVersion ${rv(1)}, but it is at resourceVersion ${rv(2)}`,
      )
      await assert.rejects(
        s.putAll([res('Service', 'a', 'r'), res('Service', 'a', 'r', {}, { resourceVersion: '' })]),
        {
          name: 'TypeError',
          message: 'putAll: Service/a/r appears more than once',
        },
      )
      await assert.rejects(s.putAll([res('Service', 'a', 'ok'), res('Service', 'a', '')]), TypeError)
      assert.equal(s.revision, at(2))
      assert.equal(await s.get('Service', 'a', 'new1'), null)
      assert.equal(await s.get('Service', 'a', 'new2'), null)
      assert.deepEqual((await s.get('Service', 'a', 'x'))?.spec, { n: 2 })
      assert.deepEqual(await s.putAll([]), [])
      assert.equal(s.revision, at(2))
      const created = await s.putAll([res('Service', 'a', 'z', {}, { resourceVersion: '' })])
      assert.equal(created[0]!.metadata.resourceVersion, rv(3))
    })

    test('watch replays events after a revision in order, then live ones, before the write resolves', async () => {
      const s = await open()
      const v1 = await s.put(res('Service', 'a', 'x', { n: 1 }))
      const v2 = await s.put(res('Service', 'a', 'x', { n: 2 }))
      await s.putAll([res('Service', 'a', 'y'), res('Service', 'a', 'z')])
      await s.delete('Service', 'a', 'y')
      const all: WatchEvent[] = []
      const w0 = s.watch(at(0), (e) => all.push(e))
      const summary = (es: WatchEvent[]) => es.map((e) => `${e.revision - base} ${e.type} ${e.resource.metadata.name}`)
      assert.deepEqual(summary(all), ['1 PUT x', '2 PUT x', '3 PUT y', '3 PUT z', '4 DELETE y'])
      const first = all[0]!
      const second = all[1]!
      assert.ok(first.type === 'PUT' && first.previous === null)
      assert.deepEqual(first.resource, v1)
      assert.ok(second.type === 'PUT')
      assert.deepEqual(second.previous, v1)
      assert.deepEqual(second.resource, v2)
      assert.ok(Object.isFrozen(second.resource.metadata), 'event resources are frozen')
      const fromTwo: WatchEvent[] = []
      const w2 = s.watch(at(2), (e) => fromTwo.push(e))
      assert.deepEqual(summary(fromTwo), ['3 PUT y', '3 PUT z', '4 DELETE y'])
      const fromNow: WatchEvent[] = []
      const wNow = s.watch(s.revision, (e) => fromNow.push(e))
      assert.equal(fromNow.length, 0)
      const seenAtResolve: number[] = []
      await s.put(res('Service', 'a', 'w')).then(() => seenAtResolve.push(fromNow.length))
      assert.deepEqual(seenAtResolve, [1], 'the event is delivered before the write resolves')
      wNow.close()
      await s.delete('Service', 'a', 'w')
      assert.deepEqual(summary(fromNow), ['5 PUT w'])
      assert.deepEqual(summary(all).slice(5), ['5 PUT w', '6 DELETE w'])
      assert.deepEqual(summary(fromTwo).slice(3), ['5 PUT w', '6 DELETE w'])
      const future: WatchEvent[] = []
      s.watch(at(7), (e) => future.push(e))
      await s.put(res('Service', 'a', 'v1'))
      await s.put(res('Service', 'a', 'v2'))
      assert.deepEqual(summary(future), ['8 PUT v2'])
      w0.close()
      w2.close()
      assert.throws(() => s.watch(-1, () => {}), RangeError)
    })

    test('concurrent writes reach watchers in revision order; a watch started inside onEvent misses nothing', async () => {
      const s = await open()
      const seen: number[] = []
      const nested: number[] = []
      let started = false
      s.watch(at(0), (e) => {
        seen.push(e.revision - base)
        if (!started && e.revision - base === 10) {
          started = true
          s.watch(e.revision - 1, (n) => nested.push(n.revision - base))
        }
      })
      await Promise.all(Array.from({ length: 40 }, (_, i) => s.put(res('Service', 'a', `s${i % 7}`, { i }))))
      assert.deepEqual(
        seen,
        Array.from({ length: 40 }, (_, i) => i + 1),
      )
      assert.deepEqual(
        nested,
        Array.from({ length: 31 }, (_, i) => i + 10),
      )
    })

    test('watch from a revision older than the kept history throws StoreCompactedError', async () => {
      const s = await open({ historyLimit: 3 })
      for (let i = 0; i < 5; i++) await s.put(res('Service', 'a', `s${i}`))
      assert.throws(
        () => s.watch(at(0), () => {}),
        (e: Error) =>
          e instanceof StoreCompactedError &&
          e.compactedRevision === at(2) &&
          e.message.startsWith(
            `cannot watch from revision ${at(0)}: events up to revision ${at(2)} are compacted; list again`,
          ),
      )
      assert.throws(() => s.watch(at(1), () => {}), StoreCompactedError)
      const got: number[] = []
      s.watch(at(2), (e) => got.push(e.revision - base))
      assert.deepEqual(got, [3, 4, 5])
      await s.putAll([res('Service', 'b', '1'), res('Service', 'b', '2')])
      assert.throws(() => s.watch(at(3), () => {}), StoreCompactedError, 'the limit counts events, not revisions')
      const fromFour: number[] = []
      s.watch(at(4), (e) => fromFour.push(e.revision - base))
      assert.deepEqual(fromFour, [5, 6, 6])
      await s.putAll([res('Service', 'c', '1'), res('Service', 'c', '2')])
      assert.throws(() => s.watch(at(5), () => {}), StoreCompactedError, 'an event of revision 6 is gone')
      const fromSix: number[] = []
      s.watch(at(6), (e) => fromSix.push(e.revision - base))
      assert.deepEqual(fromSix, [7, 7])
      const { revision, items } = await s.list()
      assert.equal(items.length, 9)
      s.watch(revision, () => {})
    })

    test('close closes watches and refuses writes; queued writes finish first', async () => {
      const s = await open()
      const events: WatchEvent[] = []
      s.watch(at(0), (e) => events.push(e))
      const pending = s.put(res('Service', 'a', 'x'))
      const closing = s.close()
      await pending
      await closing
      await s.close()
      assert.equal(events.length, 0, 'watches are closed at close()')
      await assert.rejects(s.put(res('Service', 'a', 'y')), /store is closed/)
      await assert.rejects(s.putAll([res('Service', 'a', 'y')]), /store is closed/)
      await assert.rejects(s.delete('Service', 'a', 'x'), /store is closed/)
      assert.throws(() => s.watch(at(0), () => {}), /store is closed/)
      assert.equal(s.revision, at(1))
    })
  })
}
