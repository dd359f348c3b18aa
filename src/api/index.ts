/**
 * Loom's user-facing API: Istio's own resources (networking.istio.io, security.istio.io), their schemas and
 * semantic checks, the kind registry and the manifest loader.
 */
export type { ConfigIssue } from '../core/errors.js'
export { parseDurationMs, parseDurationNs } from './common.js'
export {
  AuthorizationPolicyKind,
  type AuthorizationPolicyResource,
  DestinationRuleKind,
  type DestinationRuleResource,
  GatewayKind,
  type GatewayResource,
  GlobalRateLimitKind,
  type GlobalRateLimitResource,
  getKind,
  type IstioKind,
  type IstioResource,
  isIstioKind,
  KINDS,
  type KindInfo,
  lookupKind,
  NETWORKING_GROUP,
  PeerAuthenticationKind,
  type PeerAuthenticationResource,
  RequestAuthenticationKind,
  type RequestAuthenticationResource,
  type ResourceOf,
  SECURITY_GROUP,
  ServiceEntryKind,
  type ServiceEntryResource,
  SidecarKind,
  type SidecarResource,
  type SpecByKind,
  type SpecContext,
  SUPPORTED_KINDS,
  TelemetryKind,
  type TelemetryResource,
  type ValidateResult,
  VirtualServiceKind,
  type VirtualServiceResource,
  validateResource,
  WorkloadEntryKind,
  type WorkloadEntryResource,
} from './kinds.js'
export {
  formatManifestError,
  isKubernetesBuiltin,
  loadManifestPath,
  type ManifestError,
  type ManifestResult,
  type ResourceOrigin,
  parseManifests,
  type SkippedDocument,
} from './load.js'
export type {
  ClientTLSSettings,
  Destination,
  DestinationRuleSpec,
  GatewaySpec,
  Headers,
  HTTPMatchRequest,
  HTTPRoute,
  ServerTLSSettings,
  ServiceEntrySpec,
  SidecarSpec,
  TCPRoute,
  TLSRoute,
  TrafficPolicy,
  VirtualServiceSpec,
  WorkloadEntrySpec,
} from './networking.js'
export { LOOM_LOAD_BALANCER_ANNOTATION } from './networking.js'
export { keyOf, type ObjectMeta, type Resource, resourceKey } from './resource.js'
export type {
  AuthorizationPolicySpec,
  Condition,
  JWTRule,
  Operation,
  PeerAuthenticationSpec,
  RequestAuthenticationSpec,
  Source,
} from './security.js'
export {
  TELEMETRY_GROUP,
  type TelemetryAccessLogging,
  type TelemetryMetrics,
  type TelemetrySpec,
  type TelemetryTracing,
  type WorkloadMode,
} from './telemetry.js'
export {
  burstOf,
  type GlobalRateLimitMatch,
  type GlobalRateLimitSpec,
  LOOM_GROUP,
  ratePerSecond,
  UNAVAILABLE_MODES,
  type UnavailableMode,
} from './ratelimit.js'
