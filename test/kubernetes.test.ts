/**
 * `loom control --kubeconfig`: Kubernetes discovery and Istio's custom resources as a config source, against a fake
 * API server (test/helpers/fake-kube-apiserver.ts: no real one can run here) that speaks the protocol (lists with
 * resourceVersion, watch streams, bookmarks, 410 Gone) and holds Istio's bookinfo manifests plus the Pods, Nodes and
 * EndpointSlices a cluster would have made for them.
 */
import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import yaml from 'js-yaml'
import { type Control, eventually, type Proc, startControl, startSidecar } from './helpers/control.js'
import { FakeKubeApiServer, type KObj } from './helpers/fake-kube-apiserver.js'
import { ROOT } from './helpers/proxy.js'
import { freePort } from './helpers/servers.js'

const FIXTURES = join(ROOT, 'test', 'fixtures', 'kubernetes')

interface Endpoint {
  address: string
  servicePort: number
  port: number
  labels: Record<string, string>
  serviceAccount: string
  locality: string
  weight: number
  healthy: boolean
  source: string
}
interface Service {
  hostname: string
  namespace: string
  ports: Array<{ number: number; name: string; protocol: string }>
  endpoints: Endpoint[]
  resolution: string
  location: string
  exportTo: string[]
  source: string
}

function vs(name: string, prefix: string, apiVersion = 'networking.istio.io/v1beta1', host = 'reviews'): KObj {
  return {
    apiVersion,
    kind: 'VirtualService',
    metadata: { name, namespace: 'default' },
    spec: {
      hosts: ['reviews'],
      http: [
        {
          name: `${name}-route`,
          match: [{ uri: { prefix } }],
          route: [{ destination: { host, port: { number: 9080 } } }],
        },
        { route: [{ destination: { host: 'reviews' } }] },
      ],
    },
  }
}

describe('loom control --kubernetes (a fake API server with bookinfo)', () => {
  const api = new FakeKubeApiServer()
  let cp: Control
  let sidecar: Proc & { admin: string }

  const services = async () => (await (await fetch(`http://${cp.api}/api/v1/services`)).json()) as Service[]
  const service = async (host: string) => (await services()).find((s) => s.hostname === host)
  const kube = async () =>
    (await (await fetch(`http://${cp.api}/api/v1/kubernetes`)).json()) as {
      informers: Record<
        string,
        { lists: number; watches: number; events: number; bookmarks: number; gone: number; failures: number }
      >
      rejected: Array<{ key: string; issues: Array<{ path: string; message: string }> }>
    }
  const dump = async () => await (await fetch(`http://${sidecar.admin}/config_dump`)).text()

  before(async () => {
    await api.start()
    api.loadFile(join(FIXTURES, 'bookinfo.yaml'))
    api.loadFile(join(FIXTURES, 'bookinfo-cluster.yaml'))
    cp = await startControl(undefined, 0, ['--kubeconfig', api.kubeconfig])
    sidecar = await startSidecar(cp.xds, { app: 'productpage', version: 'v1' }, await freePort(), [
      '--metadata',
      'NAMESPACE=default',
    ])
  })
  after(async () => {
    await sidecar?.stop()
    await cp?.stop()
    await api.close()
  })

  test('the registry holds the services and endpoints Istio makes of the Services and EndpointSlices', async () => {
    assert.equal(cp.ready.kubernetes, api.url)
    assert.equal(api.counts.unauthorized, 0, 'every request carried the kubeconfig token')
    const all = await services()
    assert.deepEqual(
      all.map((s) => s.hostname),
      [
        'details.default.svc.cluster.local',
        'echo.default.svc.cluster.local',
        'mongodb.default.svc.cluster.local',
        'productpage.default.svc.cluster.local',
        'ratings.default.svc.cluster.local',
        'reviews.default.svc.cluster.local',
      ],
    )
    const details = all.find((s) => s.hostname === 'details.default.svc.cluster.local')!
    assert.deepEqual(details, {
      hostname: 'details.default.svc.cluster.local',
      namespace: 'default',
      ports: [{ number: 9080, name: 'http', protocol: 'HTTP' }],
      exportTo: ['*'],
      source: 'Service/default/details',
      resolution: 'STATIC',
      location: 'MESH_INTERNAL',
      endpoints: [
        {
          address: '10.244.1.11',
          servicePort: 9080,
          port: 9080,
          labels: { app: 'details', version: 'v1', 'pod-template-hash': '7f8b9c6d5' },
          serviceAccount: 'bookinfo-details',
          locality: 'us-east-1/us-east-1a',
          weight: 1,
          healthy: true,
          source: 'Pod/default/details-v1-7f8b9c6d5-x2k4p',
        },
      ],
    })
    const reviews = all.find((s) => s.hostname === 'reviews.default.svc.cluster.local')!
    assert.deepEqual(
      reviews.endpoints.map((e) => [e.address, e.port, e.labels.version, e.serviceAccount, e.locality, e.healthy]),
      [
        ['10.244.1.13', 9080, 'v1', 'bookinfo-reviews', 'us-east-1/us-east-1a', true],
        ['10.244.2.21', 9080, 'v2', 'bookinfo-reviews', 'us-east-1/us-east-1b', true],
        ['10.244.2.22', 9080, 'v3', 'bookinfo-reviews', 'us-east-1/us-east-1b', true],
      ],
    )
    // headless, named targetPort resolved by the slice's port, the pod that is neither ready nor serving left out
    const mongo = all.find((s) => s.hostname === 'mongodb.default.svc.cluster.local')!
    assert.equal(mongo.resolution, 'NONE')
    assert.deepEqual(mongo.ports, [{ number: 27017, name: 'tcp-mongo', protocol: 'TCP' }])
    assert.deepEqual(
      mongo.endpoints.map((e) => [e.address, e.servicePort, e.port, e.serviceAccount, e.source]),
      [['10.244.1.31', 27017, 27018, 'bookinfo-mongodb', 'Pod/default/mongodb-0']],
    )
    // appProtocol over the name; a name prefix; exportTo from the annotation; an address without pod or node
    const echo = all.find((s) => s.hostname === 'echo.default.svc.cluster.local')!
    assert.deepEqual(echo.ports, [
      { number: 7070, name: 'api', protocol: 'HTTP2' },
      { number: 7071, name: 'grpc-admin', protocol: 'GRPC' },
    ])
    assert.deepEqual(echo.exportTo, ['.'])
    assert.deepEqual(
      echo.endpoints.map((e) => [e.address, e.servicePort, e.port, e.locality, e.serviceAccount, e.source]),
      [
        ['10.244.1.41', 7070, 17070, '', 'default', 'EndpointSlice/default/echo-q1w2e'],
        ['10.244.1.41', 7071, 7071, '', 'default', 'EndpointSlice/default/echo-q1w2e'],
      ],
    )
    // every informer listed once and watched with bookmarks from the list's version
    const watches = api.requests.filter((r) => r.includes('watch=1'))
    assert.ok(watches.length >= 14, watches.join('\n'))
    for (const w of watches) assert.match(w, /allowWatchBookmarks=true/)
    assert.ok(watches.every((w) => /resourceVersion=\d+/.test(w)))
  })

  test('a VirtualService created in the cluster reaches a proxy connected over xDS', async () => {
    await eventually(
      async () => (await dump()).includes('reviews.default.svc.cluster.local'),
      15000,
      'the sidecar has reviews',
    )
    assert.doesNotMatch(await dump(), /\/from-kubernetes/)
    api.create(vs('reviews-k8s', '/from-kubernetes'))
    await eventually(async () => (await dump()).includes('/from-kubernetes'), 15000, 'the route of the VirtualService')
    assert.match(await dump(), /reviews-k8s-route/, 'the route keeps its name')
  })

  test('a watch that breaks, a 410 and a re-list lose no update', async () => {
    const before = await kube()
    const slice = api.list('EndpointSlice').find((s) => s.metadata.name === 'reviews-abc12')!
    // 1. bookmarks move each informer's version on
    await api.waitForWatches('endpointslices')
    assert.ok(api.bookmark() >= 14)
    await eventually(
      async () =>
        (await kube()).informers['/apis/discovery.k8s.io/v1/endpointslices']!.bookmarks >
        before.informers['/apis/discovery.k8s.io/v1/endpointslices']!.bookmarks,
      5000,
      'the bookmark read',
    )
    // 2. the connections are cut, and a change is made before they are back: the new watch replays it
    assert.ok(api.breakWatches() >= 14)
    slice.endpoints.push({
      addresses: ['10.244.2.24'],
      conditions: { ready: true },
      nodeName: 'node-b',
      targetRef: { kind: 'Pod', namespace: 'default', name: 'reviews-v3-6c7d8e9f2-g5h6j' },
    })
    api.update(slice)
    await eventually(
      async () =>
        (await service('reviews.default.svc.cluster.local'))!.endpoints.some((e) => e.address === '10.244.2.24'),
      10000,
      'the endpoint added while the watch was down',
    )
    // 3. cut again; three changes, then history compacted past the informers' versions: each watch gets 410 and lists
    await api.waitForWatches('endpointslices')
    await api.waitForWatches('services')
    await api.waitForWatches('virtualservices')
    const gone0 = api.counts.gone
    api.breakWatches()
    const details = api.list('EndpointSlice').find((s) => s.metadata.name === 'details-abc12')!
    details.endpoints[0].addresses = ['10.244.1.99']
    api.update(details)
    api.delete('Service', 'v1', 'default', 'ratings')
    api.delete('VirtualService', 'networking.istio.io/v1beta1', 'default', 'reviews-k8s')
    api.compact()
    await eventually(
      async () => {
        const s = await services()
        return (
          s.find((x) => x.hostname === 'details.default.svc.cluster.local')?.endpoints[0]?.address === '10.244.1.99' &&
          !s.some((x) => x.hostname === 'ratings.default.svc.cluster.local')
        )
      },
      15000,
      'the changes made before the 410',
    )
    await eventually(async () => !(await dump()).includes('/from-kubernetes'), 15000, 'the deleted VirtualService gone')
    const after = await kube()
    const stat = (path: string) => [after.informers[path]!, before.informers[path]!] as const
    for (const path of [
      '/api/v1/services',
      '/apis/discovery.k8s.io/v1/endpointslices',
      '/apis/networking.istio.io/v1/virtualservices',
    ]) {
      const [a, b] = stat(path)
      assert.equal(a.gone - b.gone, 1, `${path}: one 410`)
      assert.equal(a.lists - b.lists, 1, `${path}: one re-list`)
      assert.ok(a.failures - b.failures >= 2, `${path}: two cut watches`)
    }
    assert.ok(api.counts.gone - gone0 >= 3)
    // the reviews endpoint added in step 2 is still there after the re-list
    assert.equal((await service('reviews.default.svc.cluster.local'))!.endpoints.length, 4)
  })

  test('an invalid VirtualService is reported with a Kubernetes Event and does not reach the proxy', async () => {
    const bad = vs('reviews-bad', '/rejected-route', 'networking.istio.io/v1', '')
    api.create(bad)
    await eventually(
      async () => api.list('Event').some((e) => e.involvedObject?.name === 'reviews-bad'),
      10000,
      'the Event on the rejected resource',
    )
    const ev = api.list('Event').find((e) => e.involvedObject?.name === 'reviews-bad')!
    assert.equal(ev.reason, 'Rejected')
    assert.equal(ev.type, 'Warning')
    assert.equal(ev.involvedObject.kind, 'VirtualService')
    assert.equal(ev.metadata.namespace, 'default')
    assert.match(ev.message, /spec\.http\[0\]\.route\[0\]\.destination\.host/)
    const rejected = (await kube()).rejected
    assert.deepEqual(
      rejected.map((r) => r.key),
      ['VirtualService/default/reviews-bad'],
    )
    // a write to its status alone (a new resourceVersion, the same generation) reports nothing new
    const stored = api.list('VirtualService').find((v) => v.metadata.name === 'reviews-bad')!
    const restated = api.update({ ...stored, status: { observedGeneration: 1 } })
    assert.notEqual(restated.metadata.resourceVersion, stored.metadata.resourceVersion)
    assert.equal(restated.metadata.generation, stored.metadata.generation)
    // a valid one created after it arrives; the invalid one never did
    api.create(vs('reviews-good', '/after-rejected'))
    await eventually(async () => (await dump()).includes('/after-rejected'), 15000, 'the valid VirtualService')
    assert.doesNotMatch(await dump(), /rejected-route/)
    assert.equal(api.list('Event').filter((e) => e.involvedObject?.name === 'reviews-bad').length, 1)
    assert.match(cp.stderr(), /resource rejected: it does not reach any proxy/)
  })

  test("deploy/kubernetes's ClusterRole grants every request the control plane made, and the CRDs serve its kinds", () => {
    const docs = yaml.loadAll(readFileSync(join(ROOT, 'deploy/kubernetes/loom-control.yaml'), 'utf8')) as KObj[]
    const role = docs.find((d) => d.kind === 'ClusterRole')!
    const rules = role.rules as Array<{ apiGroups: string[]; resources: string[]; verbs: string[] }>
    const crds = (yaml.loadAll(readFileSync(join(ROOT, 'deploy/kubernetes/crds.yaml'), 'utf8')) as KObj[]).map(
      (c) => `${c.spec.group}/${c.spec.names.plural}`,
    )
    const seen = new Set<string>()
    for (const r of api.requests) {
      const [method, target] = r.split(' ') as [string, string]
      const url = new URL(target, 'https://x')
      const parts = url.pathname.split('/').filter((p) => p !== '')
      const group = parts[0] === 'api' ? '' : parts[1]!
      const rest = parts.slice(parts[0] === 'api' ? 2 : 3)
      const resource = rest[0] === 'namespaces' && rest.length >= 3 ? rest[2]! : rest[0]!
      const verb = method === 'POST' ? 'create' : url.searchParams.has('watch') ? 'watch' : 'list'
      const key = `${verb} ${group}/${resource}`
      if (seen.has(key)) continue
      seen.add(key)
      assert.ok(
        rules.some((x) => x.apiGroups.includes(group) && x.resources.includes(resource) && x.verbs.includes(verb)),
        `the ClusterRole does not allow ${key}`,
      )
      if (group.endsWith('istio.io'))
        assert.ok(crds.includes(`${group}/${resource}`), `no CRD for ${group}/${resource}`)
    }
    assert.ok(seen.has('create /events') && seen.has('watch discovery.k8s.io/endpointslices'), [...seen].join(', '))
    // and nothing more than that: each rule's resources were all read
    const granted = rules.flatMap((x) =>
      x.resources.flatMap((res) => x.verbs.filter((v) => v !== 'get').map((v) => `${v} ${x.apiGroups[0]}/${res}`)),
    )
    for (const g of granted)
      assert.ok(seen.has(g), `the ClusterRole grants ${g}, which the control plane never asks for`)
  })
})
