/**
 * Istio's Telemetry API for one proxy: which Telemetry resources apply and what they add up to (tracing, access
 * logging, metrics), and the tracing half of the translation (the connection manager's `tracing`, the collector's
 * cluster).
 *
 * Which resources apply, least specific first (Istio's hierarchy): the root namespace's Telemetry without a
 * selector (mesh-wide), then the proxy's namespace's without a selector, then one in the proxy's namespace whose
 * `selector.matchLabels` match the proxy's labels. Where a level has several, the oldest wins (config order), as
 * Istio picks one. Telemetry with `targetRef(s)` attaches to Gateway API objects, not to sidecars or Istio
 * gateways, and is skipped here.
 *
 * How they merge (Istio's): each level's fields replace the same fields of the levels above, field by field:
 * `providers`, `randomSamplingPercentage`, `disableSpanReporting`, `useRequestIdForTraceSampling`; custom tags merge
 * by name. Entries with `match.mode` apply to the client side (sidecar outbound, gateways) or the server side
 * (sidecar inbound) only. Where no level names providers, MeshConfig `defaultProviders` does (for tracing only while
 * `enableTracing` is on, when no Telemetry applies). A sampling percentage no level sets is MeshConfig's
 * `defaultConfig.tracing.sampling`, default 1%.
 */
import { isIP } from 'node:net'
import type { ExtensionProvider, OpenTelemetryProvider } from '../../api/mesh-config.js'
import type { Resource } from '../../api/resource.js'
import type {
  TelemetryAccessLogging,
  TelemetryMetrics,
  TelemetrySpec,
  TelemetryTracing,
  WorkloadMode,
} from '../../api/telemetry.js'
import type { TelemetryCustomTag } from '../../api/telemetry.js'
import { TypeUrls } from '../../config/type-urls.js'
import type { AccessLogProvider } from './access-log.js'
import { labelsMatch } from '../registry/hostname.js'
import { loadAssignment } from './clusters.js'
import type { ResolvedMeshConfig } from './scope.js'
import { clusterName, type Json } from './util.js'

/** The side of a proxy a setting applies to: its outbound (and gateway) traffic, or its inbound traffic. */
export type TelemetrySide = 'client' | 'server'

export interface EffectiveTracing {
  /** provider names, merged (the first one is used) */
  providers: string[]
  randomSamplingPercentage: number
  disableSpanReporting: boolean
  customTags: Record<string, TelemetryCustomTag>
  useRequestIdForTraceSampling: boolean
}

export interface EffectiveAccessLogging {
  providers: string[]
  disabled: boolean
  /** the CEL filter expression, if a level set one */
  filter?: string
}

export interface EffectiveMetrics {
  providers: string[]
  overrides: NonNullable<TelemetryMetrics['overrides']>
  reportingInterval?: string
}

/** What the Telemetry resources and MeshConfig give one proxy, per side. Null: nothing is configured there. */
export interface EffectiveTelemetry {
  tracing: Record<TelemetrySide, EffectiveTracing | null>
  accessLogging: Record<TelemetrySide, EffectiveAccessLogging | null>
  metrics: EffectiveMetrics | null
  /** the Telemetry resources that applied, least specific first (`namespace/name`) */
  sources: string[]
}

export interface TelemetryProxy {
  namespace: string
  labels: Readonly<Record<string, string>>
}

function hasSelector(t: Resource<TelemetrySpec>): boolean {
  return Object.keys(t.spec?.selector?.matchLabels ?? {}).length > 0
}

function targeted(t: Resource<TelemetrySpec>): boolean {
  return t.spec?.targetRef !== undefined || (t.spec?.targetRefs?.length ?? 0) > 0
}

/** The Telemetry resources that apply to `proxy`, least specific first (`telemetries` in config order). */
export function applicableTelemetry(
  telemetries: readonly Resource<TelemetrySpec>[],
  proxy: TelemetryProxy,
  rootNamespace: string,
): Resource<TelemetrySpec>[] {
  const usable = telemetries.filter((t) => !targeted(t))
  const out: Resource<TelemetrySpec>[] = []
  const root = usable.find((t) => t.metadata.namespace === rootNamespace && !hasSelector(t))
  if (root !== undefined) out.push(root)
  if (proxy.namespace !== rootNamespace) {
    const ns = usable.find((t) => t.metadata.namespace === proxy.namespace && !hasSelector(t))
    if (ns !== undefined) out.push(ns)
  }
  const wl = usable.find(
    (t) =>
      t.metadata.namespace === proxy.namespace &&
      hasSelector(t) &&
      labelsMatch(t.spec!.selector!.matchLabels!, proxy.labels),
  )
  if (wl !== undefined) out.push(wl)
  return out
}

function appliesTo(mode: WorkloadMode | undefined, side: TelemetrySide): boolean {
  return (
    mode === undefined || mode === 'CLIENT_AND_SERVER' || (side === 'client' ? mode === 'CLIENT' : mode === 'SERVER')
  )
}

function mergeTracing(
  levels: readonly Resource<TelemetrySpec>[],
  side: TelemetrySide,
  mesh: ResolvedMeshConfig,
): EffectiveTracing | null {
  let any = false
  const out: EffectiveTracing = {
    providers: [...mesh.defaultProviders.tracing],
    randomSamplingPercentage: mesh.tracingSampling,
    disableSpanReporting: false,
    customTags: {},
    useRequestIdForTraceSampling: true,
  }
  for (const t of levels) {
    for (const e of (t.spec?.tracing ?? []) as TelemetryTracing[]) {
      if (!appliesTo(e.match?.mode, side)) continue
      any = true
      if (e.providers !== undefined && e.providers.length > 0) out.providers = e.providers.map((p) => p.name)
      if (e.randomSamplingPercentage !== undefined) out.randomSamplingPercentage = e.randomSamplingPercentage
      if (e.disableSpanReporting !== undefined) out.disableSpanReporting = e.disableSpanReporting
      if (e.useRequestIdForTraceSampling !== undefined)
        out.useRequestIdForTraceSampling = e.useRequestIdForTraceSampling
      Object.assign(out.customTags, e.customTags ?? {})
    }
  }
  if (!any && !mesh.enableTracing) return null
  return out.providers.length === 0 ? null : out
}

function mergeAccessLogging(
  levels: readonly Resource<TelemetrySpec>[],
  side: TelemetrySide,
  mesh: ResolvedMeshConfig,
): EffectiveAccessLogging | null {
  const out: EffectiveAccessLogging = { providers: [...mesh.defaultProviders.accessLogging], disabled: false }
  for (const t of levels) {
    for (const e of (t.spec?.accessLogging ?? []) as TelemetryAccessLogging[]) {
      if (!appliesTo(e.match?.mode, side)) continue
      if (e.providers !== undefined && e.providers.length > 0) out.providers = e.providers.map((p) => p.name)
      if (e.disabled !== undefined) out.disabled = e.disabled
      if (e.filter?.expression !== undefined) out.filter = e.filter.expression
    }
  }
  return out.providers.length === 0 ? null : out
}

function mergeMetrics(levels: readonly Resource<TelemetrySpec>[], mesh: ResolvedMeshConfig): EffectiveMetrics | null {
  const out: EffectiveMetrics = { providers: [...mesh.defaultProviders.metrics], overrides: [] }
  let any = false
  for (const t of levels) {
    for (const e of (t.spec?.metrics ?? []) as TelemetryMetrics[]) {
      any = true
      if (e.providers !== undefined && e.providers.length > 0) out.providers = e.providers.map((p) => p.name)
      if (e.overrides !== undefined) out.overrides = [...out.overrides, ...e.overrides]
      if (e.reportingInterval !== undefined) out.reportingInterval = e.reportingInterval
    }
  }
  return out.providers.length === 0 && !any ? null : out
}

/** The effective tracing, access logging and metrics for one proxy (the module doc says how). */
export function effectiveTelemetry(
  telemetries: readonly Resource<TelemetrySpec>[],
  proxy: TelemetryProxy,
  mesh: ResolvedMeshConfig,
): EffectiveTelemetry {
  const levels = applicableTelemetry(telemetries, proxy, mesh.rootNamespace)
  return {
    tracing: { client: mergeTracing(levels, 'client', mesh), server: mergeTracing(levels, 'server', mesh) },
    accessLogging: {
      client: mergeAccessLogging(levels, 'client', mesh),
      server: mergeAccessLogging(levels, 'server', mesh),
    },
    metrics: mergeMetrics(levels, mesh),
    sources: levels.map((t) => `${t.metadata.namespace}/${t.metadata.name}`),
  }
}

// === tracing → Envoy ===

/**
 * Istio's canonical service and revision of a workload, from its labels; the name falls back to the workload's
 * name (Istio's: the deployment), else `unknown`.
 */
export function canonicalService(
  labels: Readonly<Record<string, string>>,
  workload = '',
): { name: string; revision: string } {
  return {
    name:
      labels['service.istio.io/canonical-name'] ??
      labels['app.kubernetes.io/name'] ??
      labels.app ??
      (workload === '' ? 'unknown' : workload),
    revision:
      labels['service.istio.io/canonical-revision'] ??
      labels['app.kubernetes.io/version'] ??
      labels.version ??
      'latest',
  }
}

/** The label keys canonicalService reads (a proxy's tracing config depends on them). */
export const CANONICAL_LABELS = [
  'service.istio.io/canonical-name',
  'app.kubernetes.io/name',
  'app',
  'service.istio.io/canonical-revision',
  'app.kubernetes.io/version',
  'version',
]

/** An OpenTelemetry provider's collector: its host, port and outbound cluster name. */
export interface Collector {
  name: string
  provider: OpenTelemetryProvider
  hostname: string
  port: number
  cluster: string
}

/** The OpenTelemetry provider of this name, or null (unknown, or not an opentelemetry provider). */
export function collectorOf(providers: readonly ExtensionProvider[], name: string): Collector | null {
  const p = providers.find((x) => x.name === name)
  const otel = p?.opentelemetry
  if (otel === undefined) return null
  const slash = otel.service.indexOf('/')
  const hostname = slash < 0 ? otel.service : otel.service.slice(slash + 1)
  return { name, provider: otel, hostname, port: otel.port, cluster: clusterName('outbound', otel.port, '', hostname) }
}

export interface TracingProxy extends TelemetryProxy {
  /** the workload's name, where no label names the canonical service */
  workload: string
  /** MESH_ID from the node metadata, else the trust domain (Istio's default mesh id) */
  meshId: string
  clusterId: string
}

const DEFAULT_COLLECTOR_TIMEOUT = '1s'

/** Envoy's custom tag from a Telemetry custom tag. */
function customTag(tag: string, t: TelemetryCustomTag): Json {
  if (t.literal !== undefined) return { tag, literal: { value: t.literal.value } }
  if (t.environment !== undefined)
    return {
      tag,
      environment: {
        name: t.environment.name,
        ...(t.environment.defaultValue === undefined ? {} : { default_value: t.environment.defaultValue }),
      },
    }
  const h = t.header!
  return {
    tag,
    request_header: { name: h.name, ...(h.defaultValue === undefined ? {} : { default_value: h.defaultValue }) },
  }
}

/**
 * The connection manager's `tracing` for one side of a proxy, or null (no tracing configured, span reporting
 * disabled, or the provider is not an OpenTelemetry one). Istio's shape: the sampling percentages, Istio's own tags
 * as literals (canonical service and revision, mesh id, namespace, cluster id) then the Telemetry's custom tags,
 * and the `envoy.tracers.opentelemetry` provider exporting over OTLP/HTTP to the collector's outbound cluster.
 */
export function tracingConfig(
  eff: EffectiveTracing | null,
  providers: readonly ExtensionProvider[],
  proxy: TracingProxy,
): Json | null {
  if (eff === null || eff.disableSpanReporting) return null
  const c = collectorOf(providers, eff.providers[0]!)
  if (c === null) return null
  const svc = canonicalService(proxy.labels, proxy.workload)
  const tags: Json[] = [
    { tag: 'istio.canonical_revision', literal: { value: svc.revision } },
    { tag: 'istio.canonical_service', literal: { value: svc.name } },
    { tag: 'istio.cluster_id', literal: { value: proxy.clusterId } },
    { tag: 'istio.mesh_id', literal: { value: proxy.meshId } },
    { tag: 'istio.namespace', literal: { value: proxy.namespace } },
  ]
  for (const name of Object.keys(eff.customTags).sort()) tags.push(customTag(name, eff.customTags[name]!))
  const http = c.provider.http
  const path = http?.path === undefined || http.path === '' ? '/v1/traces' : http.path
  const headers = (http?.headers ?? []).map((h) => ({ header: { key: h.name, value: h.value ?? '' } }))
  return {
    client_sampling: { value: 100 },
    random_sampling: { value: eff.randomSamplingPercentage },
    overall_sampling: { value: 100 },
    custom_tags: tags,
    ...(c.provider.maxTagLength === undefined ? {} : { max_path_tag_length: c.provider.maxTagLength }),
    provider: {
      name: 'envoy.tracers.opentelemetry',
      typed_config: {
        '@type': TypeUrls.openTelemetryTracer,
        http_service: {
          http_uri: {
            uri: `http://${c.hostname}:${c.port}${path}`,
            cluster: c.cluster,
            timeout: http?.timeout ?? DEFAULT_COLLECTOR_TIMEOUT,
          },
          ...(headers.length === 0 ? {} : { request_headers_to_add: headers }),
        },
        service_name: `${svc.name}.${proxy.namespace}`,
      },
    },
  }
}

/**
 * The collector's cluster when its host is not a service the proxy has a cluster for (Loom's addition: Istio
 * requires the collector in the registry): STATIC for an IP address, STRICT_DNS for a name.
 */
export function collectorCluster(c: Collector, connectTimeout: string): Json {
  return {
    name: c.cluster,
    type: isIP(c.hostname) === 0 ? 'STRICT_DNS' : 'STATIC',
    connect_timeout: connectTimeout,
    lb_policy: 'ROUND_ROBIN',
    load_assignment: loadAssignment(c.cluster, [{ address: c.hostname, port: c.port, locality: '', weight: 1 }]),
  }
}

/** The request id extension Istio sets beside `tracing`: whether random sampling is keyed on x-request-id. */
export function requestIdExtension(eff: EffectiveTracing): Json {
  return {
    typed_config: {
      '@type': TypeUrls.uuidRequestId,
      use_request_id_for_trace_sampling: eff.useRequestIdForTraceSampling,
    },
  }
}

// === access logging → Envoy (joined onto the mesh-wide access log in access-log.ts) ===

/**
 * What Telemetry access logging asks of one side of a proxy, as access log providers (access-log.ts turns each into
 * an Envoy FileAccessLog): null when no Telemetry (nor `defaultProviders.accessLogging`) says anything (MeshConfig's
 * mesh-wide access log, if any, applies), `[]` when disabled, else one per `envoyFileAccessLog` provider (path
 * default `/dev/stdout`; `logFormat.text` or `logFormat.labels`). Providers of other kinds give nothing. The CEL
 * `filter` is not applied.
 */
export function telemetryAccessLogs(
  eff: EffectiveAccessLogging | null,
  providers: readonly ExtensionProvider[],
): AccessLogProvider[] | null {
  if (eff === null) return null
  if (eff.disabled) return []
  const out: AccessLogProvider[] = []
  for (const name of eff.providers) {
    const file = providers.find((p) => p.name === name)?.envoyFileAccessLog
    if (file === undefined) continue
    const p: AccessLogProvider = { path: file.path === undefined || file.path === '' ? '/dev/stdout' : file.path }
    if (file.logFormat?.text !== undefined) p.text = file.logFormat.text
    else if (file.logFormat?.labels !== undefined) p.labels = file.logFormat.labels
    out.push(p)
  }
  return out
}
