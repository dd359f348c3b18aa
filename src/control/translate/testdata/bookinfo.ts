import { readFileSync } from 'node:fs'
/**
 * Bookinfo as Loom's tests run it: the four services on port 9080 as ServiceEntries selecting WorkloadEntries (one
 * per version), the proxies that talk to them, and a loader for manifests (validated by src/api, as `loom apply`
 * would).
 */
import { keyOf, parseManifests, type Resource } from '../../../api/index.js'
import { Registry, type WorkloadRegistration } from '../../registry/registry.js'
import type { TranslateNode } from '../translate.js'

/** Parses and validates manifests; throws on any error, so a test never runs on half a config. */
export function manifests(text: string, source = 'test.yaml'): Resource[] {
  const r = parseManifests(text, source)
  if (r.errors.length > 0) throw new Error(`${source}: ${JSON.stringify(r.errors, null, 2)}`)
  return r.resources as Resource[]
}

/** Resources applied in order as `kubectl apply -f` would: a resource with the key of an earlier one replaces it. */
export function applied(...lists: Resource[][]): Resource[] {
  const byKey = new Map<string, Resource>()
  for (const r of lists.flat()) byKey.set(keyOf(r), r)
  return [...byKey.values()]
}

/**
 * The project's Istio-format fixtures (`test/fixtures/istio/`): Bookinfo's routing rules and a few others written as
 * Istio users write them (flow and block YAML, JSON, multi-document files, Kubernetes kinds mixed in, anchors, the
 * v1, v1beta1 and v1alpha3 APIs).
 */
export const ISTIO_FIXTURES = new URL('../../../../../test/fixtures/istio/', import.meta.url)

/** Fixture files by name, parsed and applied in order. */
export function samples(...names: string[]): Resource[] {
  return applied(...names.map((n) => manifests(readFileSync(new URL(n, ISTIO_FIXTURES), 'utf8'), n)))
}

const SERVICES = ['productpage', 'details', 'reviews', 'ratings']

/** `<name>-<version>`, address, locality */
export const WORKLOADS: [string, string, string][] = [
  ['productpage-v1', '10.0.0.10', 'us-east/zone-a'],
  ['details-v1', '10.0.0.20', 'us-east/zone-a'],
  ['reviews-v1', '10.0.0.31', 'us-east/zone-a'],
  ['reviews-v2', '10.0.0.32', 'us-east/zone-b'],
  ['reviews-v3', '10.0.0.33', 'us-west/zone-c'],
  ['ratings-v1', '10.0.0.40', ''],
]

/** The services as ServiceEntries (MESH_INTERNAL, STATIC, workloadSelector app=<name>) plus WorkloadEntries. */
export const BOOKINFO_REGISTRY_YAML = [
  ...SERVICES.map(
    (s) => `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: ${s}
spec:
  hosts: [${s}.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {number: 9080, name: http, protocol: HTTP}
  workloadSelector:
    labels: {app: ${s}}
`,
  ),
  ...WORKLOADS.map(([w, address, locality]) => {
    const [app, version] = w.split('-') as [string, string]
    return `apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: ${w}
spec:
  address: ${address}
  labels: {app: ${app}, version: ${version}}
  serviceAccount: bookinfo-${app}
${locality === '' ? '' : `  locality: ${locality}\n`}`
  }),
].join('---\n')

export function bookinfoRegistry(): Registry {
  return Registry.fromResources(manifests(BOOKINFO_REGISTRY_YAML, 'bookinfo-registry.yaml'))
}

/** The same workloads, self-registered the way `loom up` registers local processes (no ServiceEntries). */
export function bookinfoSelfRegistered(clock?: () => number): Registry {
  const r = new Registry(clock === undefined ? {} : { clock })
  for (const [w, address, locality] of WORKLOADS) {
    const [app, version] = w.split('-') as [string, string]
    const reg: WorkloadRegistration = {
      name: w,
      address,
      ports: [{ name: 'http', number: 9080 }],
      labels: { app, version },
      serviceAccount: `bookinfo-${app}`,
      ttlSeconds: 30,
    }
    if (locality !== '') reg.locality = locality
    r.register(reg)
  }
  return r
}

export function sidecar(app: string, version: string, ip: string, extra: Partial<TranslateNode> = {}): TranslateNode {
  return {
    id: `sidecar~${ip}~${app}-${version}-7d4b.default~default.svc.cluster.local`,
    kind: 'sidecar',
    namespace: 'default',
    labels: { app, version },
    serviceAccount: `bookinfo-${app}`,
    ip,
    generator: 'envoy',
    ...extra,
  }
}

export const PRODUCTPAGE = sidecar('productpage', 'v1', '10.0.0.10')
export const REVIEWS_V2 = sidecar('reviews', 'v2', '10.0.0.32')

export const INGRESS: TranslateNode = {
  id: 'router~10.0.0.2~istio-ingressgateway-5c8.istio-system~istio-system.svc.cluster.local',
  kind: 'gateway',
  namespace: 'istio-system',
  labels: { istio: 'ingressgateway', app: 'istio-ingressgateway' },
  serviceAccount: 'istio-ingressgateway',
  ip: '10.0.0.2',
  generator: 'envoy',
}
