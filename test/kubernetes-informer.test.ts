/**
 * The informer on its own against the fake API server (test/helpers/fake-kube-apiserver.ts): a 410 given as the
 * watch request's answer rather than as an event, and a stream the server ends at `timeoutSeconds`, which is
 * watched again from the last version without a re-list.
 */
import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import { KubeClient } from '../src/control/kubernetes/client.js'
import { Informer } from '../src/control/kubernetes/informer.js'
import { eventually } from './helpers/control.js'
import { FakeKubeApiServer } from './helpers/fake-kube-apiserver.js'

const svc = (name: string, port: number) => ({
  apiVersion: 'v1',
  kind: 'Service',
  metadata: { name, namespace: 'default' },
  spec: { ports: [{ name: 'http', port }] },
})

describe('Informer', () => {
  const api = new FakeKubeApiServer({ goneAs: 'status' })
  let client: KubeClient
  const informers: Informer[] = []

  before(async () => {
    await api.start()
    client = await KubeClient.open(api.kubeconfig)
  })
  after(async () => {
    for (const i of informers) i.stop()
    await api.close()
  })

  const names = (i: Informer) =>
    i
      .items()
      .map((o) => `${o.metadata?.name}:${(o.spec as { ports: Array<{ port: number }> }).ports[0]!.port}`)
      .sort()

  test('a 410 answer to the watch request: one re-list, and the cache is what the server has', async () => {
    api.create(svc('a', 80))
    api.create(svc('b', 80))
    let changes = 0
    const inf = new Informer(client, '/api/v1/services', () => changes++, { backoffMs: 20 })
    informers.push(inf)
    inf.start()
    await inf.synced()
    assert.deepEqual(names(inf), ['a:80', 'b:80'])
    await api.waitForWatches('services')
    api.update(svc('a', 81))
    await eventually(async () => names(inf).includes('a:81'), 5000, 'the live update')
    api.breakWatches()
    api.update(svc('b', 82))
    api.delete('Service', 'v1', 'default', 'a')
    api.create(svc('c', 83))
    api.compact()
    await eventually(async () => names(inf).join() === 'b:82,c:83', 5000, 'the state after the re-list')
    assert.equal(inf.stats.gone, 1)
    assert.equal(inf.stats.lists, 2)
    assert.equal(inf.stats.failures, 1)
    assert.equal(inf.resourceVersion, String(api.revision))
    assert.ok(changes >= 3)
  })

  test('a stream the server ends is watched again from its last version, without a list', async () => {
    const inf = new Informer(client, '/api/v1/services', () => {}, { watchTimeoutSeconds: 1 })
    informers.push(inf)
    inf.start()
    await inf.synced()
    const watches = api.counts.watches
    // the server ends the first watch after a second; the next one starts from the version it had reached
    await eventually(async () => inf.stats.watches >= 2 && api.openWatches('services') >= 2, 5000, 'a second watch')
    api.update(svc('c', 84))
    await eventually(async () => names(inf).includes('c:84'), 5000, 'the update on the new watch')
    assert.equal(inf.stats.lists, 1)
    assert.equal(inf.stats.failures, 0)
    assert.equal(inf.stats.gone, 0)
    const resumed = api.requests.filter((r) => r.includes('watch=1')).slice(-1)[0]!
    assert.match(resumed, new RegExp(`resourceVersion=${Number(inf.resourceVersion) - 1}&`))
    assert.ok(api.counts.watches > watches)
  })

  test('a collection the server does not serve (a CRD not installed) is taken as empty: the start does not wait for it', async () => {
    const inf = new Informer(client, '/apis/example.dev/v1/widgets', () => {}, { backoffMs: 20 })
    informers.push(inf)
    inf.start()
    await inf.synced()
    assert.deepEqual(inf.items(), [])
    assert.match(inf.lastError, /404/)
    assert.equal(inf.stats.failures, 1)
  })
})
