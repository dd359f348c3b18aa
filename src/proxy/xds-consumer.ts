/**
 * Applies resources from the ADS stream to the running proxy. Each response is validated against Loom's schemas
 * (the same ones a bootstrap file goes through) and compiled as a whole before anything changes; any problem rejects
 * the whole response, with a message naming the resource and the field, which the xDS client sends back as a NACK.
 * The proxy keeps serving its last good config.
 */
import * as v from 'valibot'
import { Cluster, ClusterLoadAssignment, Listener, RouteConfiguration, Secret, VirtualHost } from '../config/envoy.js'
import { toConfigIssues } from '../config/schema.js'
import type { ConfigIssue } from '../core/errors.js'
import { log } from '../core/log.js'
import { TYPE_URL } from '../xds/snapshot.js'
import { type ProxyServer, UpdateRejectedError } from './proxy.js'

export type ApplyResult = { ok: true } | { ok: false; error: string }

const SCHEMAS = {
  [TYPE_URL.listener]: Listener,
  [TYPE_URL.cluster]: Cluster,
  [TYPE_URL.route]: RouteConfiguration,
  [TYPE_URL.endpoint]: ClusterLoadAssignment,
  [TYPE_URL.secret]: Secret,
  [TYPE_URL.virtualHost]: VirtualHost,
} as const

const KIND: Record<string, string> = {
  [TYPE_URL.listener]: 'Listener',
  [TYPE_URL.cluster]: 'Cluster',
  [TYPE_URL.route]: 'RouteConfiguration',
  [TYPE_URL.endpoint]: 'ClusterLoadAssignment',
  [TYPE_URL.secret]: 'Secret',
  [TYPE_URL.virtualHost]: 'VirtualHost',
}

function describe(kind: string, names: readonly string[], issues: readonly ConfigIssue[]): string {
  return issues
    .map((i) => {
      const m = /^\[(\d+)\]\.?(.*)$/.exec(i.path)
      const name = m === null ? '' : (names[Number(m[1])] ?? '')
      const path = m === null ? i.path : m[2]
      return `${kind} "${name}": ${path === '' ? '' : `${path}: `}${i.message}`
    })
    .join('; ')
}

export class XdsConsumer {
  private readonly proxy: ProxyServer
  /** the full current set per type (SotW), kept to apply removals and to answer config dumps */
  private readonly current = new Map<string, Map<string, unknown>>()

  constructor(proxy: ProxyServer) {
    this.proxy = proxy
  }

  /**
   * One response: `resources` is the complete set for LDS/CDS, the named ones for RDS/EDS/SDS; `removed` names resources
   * gone (delta). Resolves when the change is live.
   */
  async onResources(
    typeUrl: string,
    version: string,
    resources: Map<string, unknown>,
    removed: readonly string[] = [],
  ): Promise<ApplyResult> {
    const schema = SCHEMAS[typeUrl as keyof typeof SCHEMAS]
    const kind = KIND[typeUrl]
    if (schema === undefined || kind === undefined) return { ok: false, error: `unsupported resource type ${typeUrl}` }
    const names = [...resources.keys()]
    const parsed: unknown[] = []
    const issues: ConfigIssue[] = []
    names.forEach((name, i) => {
      const r = v.safeParse(schema, resources.get(name))
      if (!r.success) {
        for (const x of toConfigIssues(r.issues))
          issues.push({ path: `[${i}]${x.path === '' ? '' : `.${x.path}`}`, message: x.message })
      } else parsed.push(r.output)
    })
    if (issues.length > 0) return this.reject(kind, version, names, issues)
    const wholeSet = typeUrl === TYPE_URL.listener || typeUrl === TYPE_URL.cluster
    let set = this.current.get(typeUrl)
    if (set === undefined || wholeSet) set = new Map()
    for (const n of removed) set.delete(n)
    for (let i = 0; i < names.length; i++) set.set(names[i]!, parsed[i])
    try {
      switch (typeUrl) {
        case TYPE_URL.cluster:
          this.proxy.applyClusters([...set.values()] as Cluster[])
          break
        case TYPE_URL.endpoint:
          this.proxy.applyEndpoints(parsed as ClusterLoadAssignment[])
          break
        case TYPE_URL.listener:
          await this.proxy.applyListeners([...set.values()] as Listener[])
          break
        case TYPE_URL.route:
          this.proxy.applyRoutes(parsed as RouteConfiguration[])
          break
        case TYPE_URL.secret:
          this.proxy.applySecrets(parsed as Secret[], removed)
          break
        case TYPE_URL.virtualHost:
          this.proxy.applyVirtualHosts(parsed as VirtualHost[], removed)
          break
      }
    } catch (err) {
      if (err instanceof UpdateRejectedError) {
        return this.reject(kind, version, wholeSet ? [...set.keys()] : names, err.issues)
      }
      return { ok: false, error: `${kind} update failed: ${(err as Error).message}` }
    }
    this.current.set(typeUrl, set)
    log('info', 'xds', 'applied', { type: kind, version, resources: names.length })
    return { ok: true }
  }

  private reject(kind: string, version: string, names: readonly string[], issues: readonly ConfigIssue[]): ApplyResult {
    const error = describe(kind, names, issues)
    log('warn', 'xds', 'rejected', { type: kind, version, error })
    return { ok: false, error }
  }

  /** What to subscribe to over RDS and EDS, as the listeners and clusters now stand. */
  routeNames(): string[] {
    return this.proxy.routeNames()
  }

  endpointNames(): string[] {
    return this.proxy.endpointNames()
  }

  /** What to subscribe to over SDS: the secrets the TLS contexts name. */
  secretNames(): string[] {
    return this.proxy.secretNames()
  }
}
