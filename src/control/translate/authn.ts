/**
 * RequestAuthentication → Envoy's JWT authentication filter (envoy.filters.http.jwt_authn), first in the HTTP
 * filters of every inbound connection manager of the sidecars the policies select, and of the gateways they select.
 *
 * Selection is Istio's: a policy in the root namespace without a selector applies to every workload, one in the
 * root namespace with a selector to the workloads of any namespace whose labels match; a policy in a workload's
 * namespace applies without a selector to all its workloads, with one to those it matches. Every policy that
 * applies is used (policies merge; none overrides another). Policies with `targetRef(s)` are not applied.
 *
 * The filter is Istio's shape: one provider per jwtRule (`origins-<i>`, in config order), its payload in the
 * metadata under its issuer, and one rule for every path that requires any of the providers or no token at all
 * (`allow_missing`): a request without a token passes, a request with a token of an unknown issuer or a token that
 * does not verify gets 401 (403 for a wrong audience), and requiring a token is AuthorizationPolicy's job
 * (`requestPrincipals`). CORS preflights are not checked, as Istio sets `bypass_cors_preflight`.
 *
 * Keys: `jwks` is inlined (`local_jwks`). `jwksUri` is given to the proxy (`remote_jwks`) which fetches it, caches it
 * for 5 minutes, refetches on an unknown `kid` (key rotation) and fails closed when it cannot: the control plane does
 * not fetch it (Istio's pilot does by default and inlines the result; its `PILOT_JWT_ENABLE_REMOTE_JWKS=envoy` mode
 * is what Loom does). A rule with neither (Istio discovers the issuer's keys with OpenID discovery) gets an empty key
 * set: its tokens are refused.
 */
import type { RequestAuthenticationSpec, Resource } from '../../api/index.js'
import type { JWTRule } from '../../api/security.js'
import { TypeUrls } from '../../config/type-urls.js'
import { labelsMatch } from '../registry/hostname.js'
import type { Scope } from './scope.js'
import type { Json } from './util.js'

export const JWT_AUTHN_FILTER = 'envoy.filters.http.jwt_authn'
/** how long the proxy keeps a fetched JWKS (Istio's `remote_jwks` cache duration) */
export const JWKS_CACHE_DURATION = '300s'
/** a jwksUri fetch's timeout when the rule sets none (Istio's default) */
export const JWKS_FETCH_TIMEOUT = '5s'

/** The RequestAuthentications that apply to the proxy's workload, in config order. */
export function requestAuthentications(scope: Scope): Resource<RequestAuthenticationSpec>[] {
  const node = scope.node
  const root = scope.mesh.rootNamespace
  return scope.of<RequestAuthenticationSpec>('RequestAuthentication').filter((r) => {
    const spec = r.spec ?? {}
    if (spec.targetRef !== undefined || (spec.targetRefs?.length ?? 0) > 0) return false
    const ns = r.metadata.namespace
    if (ns !== root && ns !== node.namespace) return false
    const sel = spec.selector?.matchLabels
    return sel === undefined || labelsMatch(sel, node.labels)
  })
}

/** The jwt_authn filter for the proxy, as a list for `hcm()`'s leading filters: empty when no policy applies. */
export function jwtAuthnFilters(scope: Scope): Json[] {
  const rules = requestAuthentications(scope).flatMap((r) => r.spec?.jwtRules ?? [])
  if (rules.length === 0) return []
  const providers: Record<string, Json> = {}
  rules.forEach((rule, i) => {
    providers[`origins-${i}`] = provider(rule)
  })
  const requirements: Json[] = Object.keys(providers).map((name) => ({ provider_name: name }))
  requirements.push({ allow_missing: {} })
  return [
    {
      name: JWT_AUTHN_FILTER,
      typed_config: {
        '@type': TypeUrls.jwtAuthn,
        providers,
        rules: [{ match: { prefix: '/' }, requires: { requires_any: { requirements } } }],
        bypass_cors_preflight: true,
      },
    },
  ]
}

function provider(rule: JWTRule): Json {
  const p: Json = { issuer: rule.issuer }
  if ((rule.audiences?.length ?? 0) > 0) p.audiences = rule.audiences
  const uri = rule.jwksUri ?? rule.jwks_uri
  if (rule.jwks !== undefined) p.local_jwks = { inline_string: rule.jwks }
  else if (uri !== undefined)
    p.remote_jwks = {
      http_uri: { uri, timeout: rule.timeout ?? JWKS_FETCH_TIMEOUT },
      cache_duration: JWKS_CACHE_DURATION,
    }
  else p.local_jwks = { inline_string: '{"keys":[]}' }
  if (rule.forwardOriginalToken === true) p.forward = true
  if ((rule.fromHeaders?.length ?? 0) > 0)
    p.from_headers = rule.fromHeaders!.map((h) =>
      h.prefix ? { name: h.name, value_prefix: h.prefix } : { name: h.name },
    )
  if ((rule.fromParams?.length ?? 0) > 0) p.from_params = rule.fromParams
  if ((rule.fromCookies?.length ?? 0) > 0) p.from_cookies = rule.fromCookies
  if (rule.outputPayloadToHeader) p.forward_payload_header = rule.outputPayloadToHeader
  if ((rule.outputClaimToHeaders?.length ?? 0) > 0)
    p.claim_to_headers = rule.outputClaimToHeaders!.map((c) => ({ header_name: c.header, claim_name: c.claim }))
  p.payload_in_metadata = rule.issuer
  return p
}
