/**
 * Kubernetes as a source for `loom control` (`--kubernetes`): informers on the API server's Services,
 * EndpointSlices, Pods, Nodes and Namespaces, which become registry services (services.ts), and on Istio's custom
 * resources (networking.istio.io and security.istio.io), which join the store's resources as the translator's
 * input. A custom resource is checked exactly as `loom apply` checks one (`validateResource`); one that fails
 * never reaches a proxy: it is logged and reported on the resource as a Kubernetes Event (reason `Rejected`), once
 * per generation.
 */
import { hostname } from 'node:os'
import { KINDS, NETWORKING_GROUP, SECURITY_GROUP, validateResource } from '../../api/kinds.js'
import type { Resource } from '../../api/resource.js'
import type { ConfigIssue } from '../../core/errors.js'
import { log } from '../../core/log.js'
import type { Service } from '../registry/registry.js'
import type { KubeClient, KubeObject } from './client.js'
import { Informer, type InformerOptions, type InformerStats, keyOfObject } from './informer.js'
import { kubeServices } from './services.js'

/** Istio's kinds read from the API server (Telemetry and Loom's own kinds stay with the store). */
export const KUBERNETES_KINDS = KINDS.filter((k) => k.group === NETWORKING_GROUP || k.group === SECURITY_GROUP)

export interface KubernetesSourceOptions extends InformerOptions {
  /** default cluster.local */
  domainSuffix?: string
  /** the version of Istio's APIs to list and watch (default v1; the API server converts between versions) */
  istioVersion?: string
  /** send a Kubernetes Event for a rejected resource (default true) */
  reportEvents?: boolean
}

/** A custom resource that failed validation, and why. */
export interface RejectedResource {
  /** `Kind/namespace/name` */
  key: string
  resourceVersion: string
  issues: ConfigIssue[]
}

const CORE = {
  services: '/api/v1/services',
  endpointSlices: '/apis/discovery.k8s.io/v1/endpointslices',
  pods: '/api/v1/pods',
  nodes: '/api/v1/nodes',
  namespaces: '/api/v1/namespaces',
} as const

export class KubernetesSource {
  readonly client: KubeClient
  readonly #core: Record<keyof typeof CORE, Informer>
  readonly #crds: Array<{ kind: string; informer: Informer }>
  readonly #listeners = new Set<() => void>()
  readonly #domain: string | undefined
  readonly #reportEvents: boolean
  /** `Kind/ns/name@rv` already reported */
  readonly #reported = new Set<string>()
  #servicesDirty = true
  #resourcesDirty = true
  #services: Service[] = []
  #resources: Resource[] = []
  #rejected: RejectedResource[] = []
  #pending = false

  constructor(client: KubeClient, options: KubernetesSourceOptions = {}) {
    this.client = client
    this.#domain = options.domainSuffix
    this.#reportEvents = options.reportEvents !== false
    const coreChanged = () => {
      this.#servicesDirty = true
      this.#schedule()
    }
    const crdChanged = () => {
      this.#resourcesDirty = true
      this.#schedule()
    }
    this.#core = Object.fromEntries(
      Object.entries(CORE).map(([k, path]) => [k, new Informer(client, path, coreChanged, options)]),
    ) as Record<keyof typeof CORE, Informer>
    const version = options.istioVersion ?? 'v1'
    this.#crds = KUBERNETES_KINDS.filter((k) => k.versions.includes(version)).map((k) => ({
      kind: k.kind,
      informer: new Informer(client, `/apis/${k.group}/${version}/${k.plural}`, crdChanged, options),
    }))
  }

  /** Starts every informer and resolves when each has listed once. */
  async start(): Promise<void> {
    const all = this.informers()
    for (const i of all) i.start()
    await Promise.all(all.map((i) => i.synced()))
  }

  informers(): Informer[] {
    return [...Object.values(this.#core), ...this.#crds.map((c) => c.informer)]
  }

  /** Every informer's counters, by its collection path. */
  stats(): Record<string, InformerStats & { resourceVersion: string }> {
    return Object.fromEntries(this.informers().map((i) => [i.path, { ...i.stats, resourceVersion: i.resourceVersion }]))
  }

  /** Called (once per burst of events) after anything `services()` or `resources()` reads changed. */
  onChange(fn: () => void): () => void {
    this.#listeners.add(fn)
    return () => this.#listeners.delete(fn)
  }

  /** The registry services of the cluster's Services. */
  services(): Service[] {
    if (this.#servicesDirty) {
      this.#servicesDirty = false
      this.#services = kubeServices(
        {
          services: this.#core.services.items(),
          endpointSlices: this.#core.endpointSlices.items(),
          pods: this.#core.pods.items(),
          nodes: this.#core.nodes.items(),
          namespaces: this.#core.namespaces.items(),
        },
        this.#domain,
      )
    }
    return this.#services
  }

  /** A namespace's labels from the Namespace cache; undefined for a namespace not (yet) seen. */
  namespaceLabels(name: string): Record<string, string> | undefined {
    const ns = this.#core.namespaces.items().find((n) => n.metadata?.name === name)
    return ns === undefined ? undefined : (ns.metadata?.labels ?? {})
  }

  /** Istio's custom resources that passed validation. */
  resources(): Resource[] {
    if (this.#resourcesDirty) this.#validate()
    return this.#resources
  }

  /** The custom resources that failed validation. */
  rejected(): RejectedResource[] {
    if (this.#resourcesDirty) this.#validate()
    return this.#rejected
  }

  close(): void {
    for (const i of this.informers()) i.stop()
  }

  #schedule(): void {
    if (this.#pending) return
    this.#pending = true
    setImmediate(() => {
      this.#pending = false
      // validate now, so a rejected resource is reported even while no proxy asks for config
      if (this.#resourcesDirty) this.#validate()
      for (const l of this.#listeners) l()
    })
  }

  #validate(): void {
    this.#resourcesDirty = false
    const ok: Resource[] = []
    const rejected: RejectedResource[] = []
    for (const { kind, informer } of this.#crds) {
      for (const obj of informer.items()) {
        // the list's items carry no apiVersion and kind of their own on some servers
        const withKind = { apiVersion: obj.apiVersion ?? apiVersionOf(informer.path), kind: obj.kind ?? kind, ...obj }
        const r = validateResource(withKind)
        if (r.ok) {
          ok.push(r.resource)
          continue
        }
        const key = `${kind}/${keyOfObject(obj)}`
        const rv = obj.metadata?.resourceVersion ?? ''
        rejected.push({ key, resourceVersion: rv, issues: r.issues })
        this.#report(withKind, key, rv, r.issues)
      }
    }
    this.#resources = ok
    this.#rejected = rejected
  }

  #report(obj: KubeObject, key: string, rv: string, issues: ConfigIssue[]): void {
    // once per generation (a spec change), not per resourceVersion: a write to the status alone (istiod's, say)
    // changes the version and not the verdict
    const generation = obj.metadata?.generation
    const id = `${key}@${obj.metadata?.uid ?? ''}/${generation !== undefined ? `g${generation}` : rv}`
    if (this.#reported.has(id)) return
    this.#reported.add(id)
    const message = issues.map((i) => (i.path !== '' ? `${i.path}: ${i.message}` : i.message)).join('; ')
    log('warn', 'kubernetes', 'resource rejected: it does not reach any proxy', {
      resource: key,
      resourceVersion: rv,
      issues: message,
    })
    if (!this.#reportEvents) return
    const ns = obj.metadata?.namespace ?? 'default'
    const now = new Date().toISOString()
    const event = {
      apiVersion: 'v1',
      kind: 'Event',
      metadata: { generateName: `${obj.metadata?.name ?? 'resource'}.`, namespace: ns },
      involvedObject: {
        apiVersion: obj.apiVersion,
        kind: obj.kind,
        name: obj.metadata?.name,
        namespace: ns,
        uid: obj.metadata?.uid,
        resourceVersion: rv,
      },
      reason: 'Rejected',
      message: message.slice(0, 1024),
      type: 'Warning',
      source: { component: 'loom-control' },
      reportingComponent: 'loom-control',
      reportingInstance: hostname(),
      firstTimestamp: now,
      lastTimestamp: now,
      count: 1,
    }
    this.client
      .request('POST', `/api/v1/namespaces/${encodeURIComponent(ns)}/events`, event)
      .catch((err: unknown) =>
        log('warn', 'kubernetes', 'cannot record the rejection as an Event', { resource: key, error: String(err) }),
      )
  }
}

function apiVersionOf(path: string): string {
  const [, , group, version] = path.split('/')
  return `${group}/${version}`
}
