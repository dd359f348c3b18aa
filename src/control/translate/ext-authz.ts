/**
 * MeshConfig `extensionProviders` → Envoy ext_authz filter configs, as Istio's pilot builds them for the CUSTOM
 * action: `envoyExtAuthzHttp` → `http_service`, `envoyExtAuthzGrpc` → `grpc_service`, each calling the provider's
 * service through its outbound cluster `outbound|<port>||<hostname>` (the service: `[<namespace>/]<hostname>` of a
 * registry service or ServiceEntry). The filter runs only when the CUSTOM RBAC shadow filter before it matched a
 * policy (`filter_enabled_metadata` on `istio_ext_authz_shadow_effective_policy_id`).
 */
import type { ExtensionProvider } from '../../api/mesh-config.js'
import { TypeUrls } from '../../config/type-urls.js'
import type { ResolvedMeshConfig } from './scope.js'
import type { Json } from './util.js'

/** Istio's names: CUSTOM policies are `istio-ext-authz-ns[..]-policy[..]-rule[..]`, the shadow stat prefix. */
export const EXT_AUTHZ_POLICY_PREFIX = 'istio-ext-authz'
export const EXT_AUTHZ_SHADOW_PREFIX = 'istio_ext_authz_'
/** Istio's timeout of a check when the provider sets none. */
export const DEFAULT_PROVIDER_TIMEOUT = '600s'

export interface ServiceLookup {
  /** the registry's services: hostname and namespace */
  readonly allServices: readonly { hostname: string; namespace: string }[]
}

/** The provider of this name, or why there is none (an unknown name, a service not in the registry). */
export function resolveProvider(
  mesh: ResolvedMeshConfig,
  services: ServiceLookup,
  name: string,
): { provider: ExtensionProvider; hostname: string; port: number } | { error: string } {
  const provider = mesh.extensionProviders.find((p) => p.name === name)
  if (provider === undefined) {
    const known = mesh.extensionProviders.map((p) => p.name)
    return {
      error: `extension provider "${name}" is not defined in the mesh config's extensionProviders${
        known.length === 0 ? ' (there are none)' : ` (defined: ${known.join(', ')})`
      }`,
    }
  }
  const kind = provider.envoyExtAuthzHttp ?? provider.envoyExtAuthzGrpc
  if (kind === undefined)
    return {
      error: `extension provider "${name}" is not an ext_authz provider (envoyExtAuthzHttp or envoyExtAuthzGrpc)`,
    }
  const slash = kind.service.indexOf('/')
  const ns = slash < 0 ? null : kind.service.slice(0, slash)
  const hostname = slash < 0 ? kind.service : kind.service.slice(slash + 1)
  const found = services.allServices.some((s) => s.hostname === hostname && (ns === null || s.namespace === ns))
  if (!found)
    return {
      error: `extension provider "${name}": service ${kind.service} is not in the registry (nor a ServiceEntry)`,
    }
  return { provider, hostname, port: kind.port }
}

/** Istio's header list: `*suffix` / `prefix*` / exact, case-insensitive. */
function headerPatterns(list: readonly string[] | undefined): Json | undefined {
  if (list === undefined || list.length === 0) return undefined
  return {
    patterns: list.map((h) => {
      if (h.startsWith('*')) return { suffix: h.slice(1), ignore_case: true }
      if (h.endsWith('*')) return { prefix: h.slice(0, -1), ignore_case: true }
      return { exact: h, ignore_case: true }
    }),
  }
}

function bodySettings(
  b: { maxRequestBytes?: number; allowPartialMessage?: boolean; packAsBytes?: boolean } | undefined,
) {
  if (b === undefined) return undefined
  const out: Json = { max_request_bytes: b.maxRequestBytes || 1024 * 1024 }
  if (b.allowPartialMessage === true) out.allow_partial_message = true
  if (b.packAsBytes === true) out.pack_as_bytes = true
  return out
}

/** The ext_authz filter's typed_config for a resolved provider. */
export function extAuthzConfig(provider: ExtensionProvider, hostname: string, port: number): Json {
  const cluster = `outbound|${port}||${hostname}`
  const out: Json = { '@type': TypeUrls.extAuthz }
  const http = provider.envoyExtAuthzHttp
  const grpc = provider.envoyExtAuthzGrpc
  const common = http ?? grpc!
  const timeout = common.timeout ?? DEFAULT_PROVIDER_TIMEOUT
  if (http !== undefined) {
    const service: Json = { server_uri: { uri: `http://${hostname}`, cluster, timeout } }
    if (http.pathPrefix !== undefined && http.pathPrefix !== '') service.path_prefix = http.pathPrefix
    const add = Object.entries(http.includeAdditionalHeadersInCheck ?? {}).sort(([a], [b]) => (a < b ? -1 : 1))
    if (add.length > 0) service.authorization_request = { headers_to_add: add.map(([key, value]) => ({ key, value })) }
    const response: Json = {}
    const up = headerPatterns(http.headersToUpstreamOnAllow)
    const deny = headerPatterns(http.headersToDownstreamOnDeny)
    const allow = headerPatterns(http.headersToDownstreamOnAllow)
    if (up !== undefined) response.allowed_upstream_headers = up
    if (deny !== undefined) response.allowed_client_headers = deny
    if (allow !== undefined) response.allowed_client_headers_on_success = allow
    if (Object.keys(response).length > 0) service.authorization_response = response
    out.http_service = service
    const headers = headerPatterns(http.includeRequestHeadersInCheck ?? http.includeHeadersInCheck)
    if (headers !== undefined) out.allowed_headers = headers
  } else {
    out.grpc_service = {
      envoy_grpc: { cluster_name: cluster, authority: cluster.replaceAll('|', '_.') },
      timeout,
    }
  }
  out.transport_api_version = 'V3'
  if (common.failOpen === true) out.failure_mode_allow = true
  if (common.statusOnError !== undefined) out.status_on_error = { code: Number(common.statusOnError) }
  const body = bodySettings(common.includeRequestBodyInCheck)
  if (body !== undefined) out.with_request_body = body
  out.filter_enabled_metadata = {
    filter: 'envoy.filters.http.rbac',
    path: [{ key: `${EXT_AUTHZ_SHADOW_PREFIX}shadow_effective_policy_id` }],
    value: { string_match: { prefix: EXT_AUTHZ_POLICY_PREFIX } },
  }
  return out
}
