/**
 * The kind registry: every Istio kind Loom accepts, its group and versions, and how to validate one resource
 * (envelope, metadata as Kubernetes checks it, the spec schema, then the kind's semantic rules).
 */
import { toConfigIssues, v } from '../config/schema.js'
import type { ConfigIssue } from '../core/errors.js'
import { isDns1123Label, isDns1123Subdomain, labelValueError, opt, qualifiedNameError, rule, str } from './common.js'
import {
  checkDestinationRule,
  checkGateway,
  checkServiceEntry,
  checkSidecar,
  checkVirtualService,
  checkWorkloadEntry,
  DestinationRuleSpec,
  GatewaySpec,
  ServiceEntrySpec,
  SidecarSpec,
  type SpecContext,
  VirtualServiceSpec,
  WorkloadEntrySpec,
} from './networking.js'
import { checkWithoutInvalid } from './partial.js'
import { checkTelemetry, TELEMETRY_GROUP, TelemetrySpec } from './telemetry.js'
import { checkGlobalRateLimit, GlobalRateLimitSpec, LOOM_GROUP } from './ratelimit.js'
import type { ObjectMeta, Resource } from './resource.js'
import {
  AuthorizationPolicySpec,
  checkAuthorizationPolicy,
  checkPeerAuthentication,
  checkRequestAuthentication,
  PeerAuthenticationSpec,
  RequestAuthenticationSpec,
} from './security.js'

export type { SpecContext }

export const NETWORKING_GROUP = 'networking.istio.io'
export const SECURITY_GROUP = 'security.istio.io'

/** Everything Loom knows about one kind. */
export interface KindInfo<Spec = unknown> {
  kind: string
  group: string
  /** versions served, newest first; all share one schema */
  versions: readonly string[]
  /** `group/version` for each version */
  apiVersions: readonly string[]
  plural: string
  singular: string
  namespaced: boolean
  /** short names for the CLI (`vs`, `dr`, ...) */
  shortNames: readonly string[]
  schema: v.GenericSchema<unknown, Spec>
  check: (spec: Spec, ctx: SpecContext) => ConfigIssue[]
  /** Istio's CRD requires `spec` (otherwise a missing spec is an empty one) */
  requiresSpec: boolean
}

function kind<Spec>(
  k: string,
  group: string,
  versions: readonly string[],
  plural: string,
  shortNames: readonly string[],
  schema: v.GenericSchema<unknown, Spec>,
  check: (spec: Spec, ctx: SpecContext) => ConfigIssue[],
  requiresSpec = false,
): KindInfo<Spec> {
  return {
    kind: k,
    group,
    versions,
    apiVersions: versions.map((ver) => `${group}/${ver}`),
    plural,
    singular: k.toLowerCase(),
    namespaced: true,
    shortNames,
    schema,
    check,
    requiresSpec,
  }
}

const NET_VERSIONS = ['v1', 'v1beta1', 'v1alpha3'] as const
const SEC_VERSIONS = ['v1', 'v1beta1'] as const

export const VirtualServiceKind = kind(
  'VirtualService',
  NETWORKING_GROUP,
  NET_VERSIONS,
  'virtualservices',
  ['vs'],
  VirtualServiceSpec,
  checkVirtualService,
)
export const DestinationRuleKind = kind(
  'DestinationRule',
  NETWORKING_GROUP,
  NET_VERSIONS,
  'destinationrules',
  ['dr'],
  DestinationRuleSpec,
  checkDestinationRule,
)
export const GatewayKind = kind(
  'Gateway',
  NETWORKING_GROUP,
  NET_VERSIONS,
  'gateways',
  ['gw'],
  GatewaySpec,
  checkGateway,
)
export const ServiceEntryKind = kind(
  'ServiceEntry',
  NETWORKING_GROUP,
  NET_VERSIONS,
  'serviceentries',
  ['se'],
  ServiceEntrySpec,
  checkServiceEntry,
  true,
)
export const WorkloadEntryKind = kind(
  'WorkloadEntry',
  NETWORKING_GROUP,
  NET_VERSIONS,
  'workloadentries',
  ['we'],
  WorkloadEntrySpec,
  checkWorkloadEntry,
  true,
)
export const SidecarKind = kind('Sidecar', NETWORKING_GROUP, NET_VERSIONS, 'sidecars', [], SidecarSpec, checkSidecar)
export const PeerAuthenticationKind = kind(
  'PeerAuthentication',
  SECURITY_GROUP,
  SEC_VERSIONS,
  'peerauthentications',
  ['pa'],
  PeerAuthenticationSpec,
  checkPeerAuthentication,
)
export const AuthorizationPolicyKind = kind(
  'AuthorizationPolicy',
  SECURITY_GROUP,
  SEC_VERSIONS,
  'authorizationpolicies',
  ['ap'],
  AuthorizationPolicySpec,
  checkAuthorizationPolicy,
)
export const RequestAuthenticationKind = kind(
  'RequestAuthentication',
  SECURITY_GROUP,
  SEC_VERSIONS,
  'requestauthentications',
  ['ra'],
  RequestAuthenticationSpec,
  checkRequestAuthentication,
)

/** telemetry.istio.io: tracing, access logging and metrics per mesh, namespace or workload (src/api/telemetry.ts). */
export const TelemetryKind = kind(
  'Telemetry',
  TELEMETRY_GROUP,
  ['v1', 'v1alpha1'],
  'telemetries',
  ['telemetry'],
  TelemetrySpec,
  checkTelemetry,
)

/** Loom's own kind (loom.dev): a rate limit shared by every caller of a host (src/api/ratelimit.ts). */
export const GlobalRateLimitKind = kind(
  'GlobalRateLimit',
  LOOM_GROUP,
  ['v1alpha1'],
  'globalratelimits',
  ['grl'],
  GlobalRateLimitSpec,
  checkGlobalRateLimit,
  true,
)

/** Spec types per kind name. */
export interface SpecByKind {
  VirtualService: VirtualServiceSpec
  DestinationRule: DestinationRuleSpec
  Gateway: GatewaySpec
  ServiceEntry: ServiceEntrySpec
  WorkloadEntry: WorkloadEntrySpec
  Sidecar: SidecarSpec
  PeerAuthentication: PeerAuthenticationSpec
  AuthorizationPolicy: AuthorizationPolicySpec
  RequestAuthentication: RequestAuthenticationSpec
  Telemetry: TelemetrySpec
  GlobalRateLimit: GlobalRateLimitSpec
}
export type IstioKind = keyof SpecByKind

/** A validated resource of one kind: `kind` narrows `spec`. */
export type ResourceOf<K extends IstioKind> = Resource<SpecByKind[K]> & { kind: K }
export type VirtualServiceResource = ResourceOf<'VirtualService'>
export type DestinationRuleResource = ResourceOf<'DestinationRule'>
export type GatewayResource = ResourceOf<'Gateway'>
export type ServiceEntryResource = ResourceOf<'ServiceEntry'>
export type WorkloadEntryResource = ResourceOf<'WorkloadEntry'>
export type SidecarResource = ResourceOf<'Sidecar'>
export type PeerAuthenticationResource = ResourceOf<'PeerAuthentication'>
export type AuthorizationPolicyResource = ResourceOf<'AuthorizationPolicy'>
export type RequestAuthenticationResource = ResourceOf<'RequestAuthentication'>
export type TelemetryResource = ResourceOf<'Telemetry'>
export type GlobalRateLimitResource = ResourceOf<'GlobalRateLimit'>
/** Any resource Loom accepts. */
export type IstioResource = { [K in IstioKind]: ResourceOf<K> }[IstioKind]

/** The registry, in the order Loom lists kinds (each entry's `check` takes its own kind's spec). */
export const KINDS: readonly KindInfo<unknown>[] = [
  VirtualServiceKind,
  DestinationRuleKind,
  GatewayKind,
  ServiceEntryKind,
  WorkloadEntryKind,
  SidecarKind,
  PeerAuthenticationKind,
  AuthorizationPolicyKind,
  RequestAuthenticationKind,
  TelemetryKind,
  GlobalRateLimitKind,
] as unknown as readonly KindInfo<unknown>[]

const byKind = new Map<string, KindInfo<unknown>>(KINDS.map((k) => [k.kind, k]))
const byAlias = new Map<string, KindInfo<unknown>>()
for (const k of KINDS) {
  for (const alias of [k.kind.toLowerCase(), k.plural, k.singular, ...k.shortNames]) byAlias.set(alias, k)
  for (const alias of [k.kind.toLowerCase(), k.plural, k.singular]) byAlias.set(`${alias}.${k.group}`, k)
}

/** The kind with exactly this name (`VirtualService`), or undefined. */
export function getKind(kindName: string): KindInfo<unknown> | undefined {
  return byKind.get(kindName)
}

/**
 * A kind as a user types it on the command line: the kind, its plural or singular (any case), a short name
 * (`vs`), or `plural.group` (`virtualservices.networking.istio.io`).
 */
export function lookupKind(name: string): KindInfo<unknown> | undefined {
  return byKind.get(name) ?? byAlias.get(name.toLowerCase())
}

export function isIstioKind(kindName: string): kindName is IstioKind {
  return byKind.has(kindName)
}

export const SUPPORTED_KINDS: readonly string[] = KINDS.map((k) => k.kind)

// === the envelope ===

const labels = v.record(rule(qualifiedNameError), rule(labelValueError))
const annotations = v.pipe(
  v.record(rule(qualifiedNameError), v.string()),
  v.check(
    (a) => Object.entries(a).reduce((n, [k, val]) => n + k.length + val.length, 0) <= 256 * 1024,
    'annotations may total at most 256 KiB',
  ),
)

/** Kubernetes fields a `kubectl get -o yaml` output carries: accepted, and left out of the result. */
const serverFields = {
  generateName: opt(v.unknown()),
  selfLink: opt(v.unknown()),
  finalizers: opt(v.unknown()),
  ownerReferences: opt(v.unknown()),
  managedFields: opt(v.unknown()),
  deletionTimestamp: opt(v.unknown()),
  deletionGracePeriodSeconds: opt(v.unknown()),
}

const SUBDOMAIN_RULE =
  "a DNS-1123 subdomain (lowercase letters, digits, '-' and '.', at most 253 characters, " +
  'starting and ending with a letter or digit)'
const LABEL_RULE = "a DNS-1123 label (lowercase letters, digits and '-', at most 63 characters)"

const Metadata = v.strictObject({
  name: rule((s) =>
    isDns1123Subdomain(s)
      ? null
      : s === ''
        ? 'name must not be empty'
        : `invalid name ${JSON.stringify(s)}: ${SUBDOMAIN_RULE}`,
  ),
  namespace: opt(rule((s) => (isDns1123Label(s) ? null : `invalid namespace ${JSON.stringify(s)}: ${LABEL_RULE}`))),
  labels: opt(labels),
  annotations: opt(annotations),
  resourceVersion: opt(str),
  creationTimestamp: opt(str),
  uid: opt(str),
  generation: opt(v.pipe(v.number(), v.integer('generation must be an integer'))),
  ...serverFields,
})

const Envelope = v.strictObject({
  apiVersion: v.string(),
  kind: v.string(),
  metadata: Metadata,
  spec: opt(v.unknown()),
  status: opt(v.unknown()),
})

/** Kubernetes prunes null-valued fields before validating a custom resource; so does Loom. */
export function pruneNulls(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(pruneNulls)
  if (value !== null && typeof value === 'object' && Object.getPrototypeOf(value) === Object.prototype) {
    const out: Record<string, unknown> = {}
    for (const [k, val] of Object.entries(value)) if (val !== null) out[k] = pruneNulls(val)
    return out
  }
  return value
}

export type ValidateResult = { ok: true; resource: IstioResource } | { ok: false; issues: ConfigIssue[] }

function isObject(x: unknown): x is Record<string, unknown> {
  return x !== null && typeof x === 'object' && !Array.isArray(x)
}

/**
 * Validates one resource: `apiVersion` and `kind` name a supported kind, metadata follows Kubernetes' rules
 * (`namespace` defaults to `default`), and the spec follows the kind's schema and Istio's semantic rules.
 * Issue paths are relative to the resource: `metadata.name`, `spec.http[0].route[1].destination.host`.
 */
export function validateResource(obj: unknown): ValidateResult {
  if (!isObject(obj)) {
    return {
      ok: false,
      issues: [{ path: '', message: 'a resource must be an object with apiVersion, kind, metadata and spec' }],
    }
  }
  const raw = pruneNulls(obj) as Record<string, unknown>
  const issues: ConfigIssue[] = []
  const kindName = raw.kind
  if (typeof kindName !== 'string' || kindName === '') {
    issues.push({
      path: 'kind',
      message: kindName === undefined ? 'required field is missing' : 'kind must be a non-empty string',
    })
  }
  if (typeof raw.apiVersion !== 'string' || raw.apiVersion === '') {
    issues.push({
      path: 'apiVersion',
      message: raw.apiVersion === undefined ? 'required field is missing' : 'apiVersion must be a non-empty string',
    })
  }
  if (issues.length > 0) return { ok: false, issues }
  const info = byKind.get(kindName as string)
  if (info === undefined) {
    return {
      ok: false,
      issues: [
        {
          path: 'kind',
          message: `unsupported kind ${JSON.stringify(kindName)}; Loom supports ${SUPPORTED_KINDS.join(', ')}`,
        },
      ],
    }
  }
  if (!info.apiVersions.includes(raw.apiVersion as string)) {
    issues.push({
      path: 'apiVersion',
      message: `${raw.apiVersion as string} does not serve ${info.kind}; use one of ${info.apiVersions.join(', ')}`,
    })
  }
  const env = v.safeParse(Envelope, raw)
  if (!env.success) issues.push(...toConfigIssues(env.issues))
  if (raw.spec === undefined && info.requiresSpec) {
    issues.push({ path: 'spec', message: 'required field is missing' })
    return { ok: false, issues }
  }
  const specRaw = raw.spec === undefined ? {} : raw.spec
  const spec = v.safeParse(info.schema, specRaw)
  if (!spec.success) issues.push(...toConfigIssues(spec.issues, ['spec']))
  // the kind's own rules run even when the schema found problems (on the rest of the spec), so every error of a
  // document comes out in one pass
  const rawMeta = isObject(raw.metadata) ? raw.metadata : {}
  const ctx: SpecContext = env.success
    ? { name: env.output.metadata.name, namespace: env.output.metadata.namespace ?? 'default' }
    : {
        name: typeof rawMeta.name === 'string' ? rawMeta.name : '',
        namespace: typeof rawMeta.namespace === 'string' ? rawMeta.namespace : 'default',
      }
  if (isObject(rawMeta.annotations)) ctx.annotations = rawMeta.annotations
  const checks = spec.success
    ? info.check(spec.output, ctx)
    : checkWithoutInvalid(info.schema, specRaw, 'spec', (s) => info.check(s, ctx))
  const seen = new Set(issues.map((i) => i.path))
  for (const c of checks) if (!seen.has(c.path)) issues.push(c)
  if (!env.success || !spec.success || issues.length > 0) return { ok: false, issues }
  const m = env.output.metadata
  const metadata: ObjectMeta = { name: m.name, namespace: m.namespace ?? 'default' }
  if (m.labels !== undefined) metadata.labels = m.labels
  if (m.annotations !== undefined) metadata.annotations = m.annotations
  if (m.resourceVersion !== undefined) metadata.resourceVersion = m.resourceVersion
  if (m.creationTimestamp !== undefined) metadata.creationTimestamp = m.creationTimestamp
  if (m.uid !== undefined) metadata.uid = m.uid
  if (m.generation !== undefined) metadata.generation = m.generation
  const resource = { apiVersion: env.output.apiVersion, kind: info.kind, metadata, spec: spec.output } as IstioResource
  return { ok: true, resource }
}
