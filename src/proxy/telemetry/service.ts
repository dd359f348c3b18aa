/**
 * The destination service of a request or connection, from the cluster it went to, as Istio finds it: the cluster's
 * metadata `filter_metadata.istio.services[0]` (`{ host, name, namespace }`, which Istio's control plane, and
 * Loom's, put on inbound clusters), else the host in an Istio cluster name (`outbound|9080|v1|reviews.default.svc.cluster.local`).
 * Worked out once per cluster object.
 */
import type { UpstreamCluster } from '../cluster/index.js'
import { type ServiceLabels, serviceOfHost, UNKNOWN_SERVICE } from './metrics.js'

const byCluster = new WeakMap<UpstreamCluster, ServiceLabels | null>()

function fromMetadata(c: UpstreamCluster): ServiceLabels | null {
  const services = (c.config.metadata?.filter_metadata?.istio as { services?: unknown } | undefined)?.services
  if (!Array.isArray(services) || services.length === 0) return null
  const s = services[0] as { host?: unknown; name?: unknown; namespace?: unknown }
  if (typeof s.host !== 'string' || s.host === '') return null
  const parsed = serviceOfHost(s.host)
  return {
    host: s.host,
    name: typeof s.name === 'string' && s.name !== '' ? s.name : parsed.name,
    namespace: typeof s.namespace === 'string' && s.namespace !== '' ? s.namespace : parsed.namespace,
  }
}

/** The host of an Istio cluster name (`<direction>|<port>|<subset>|<host>`), or null. */
export function hostOfClusterName(name: string): string | null {
  const parts = name.split('|')
  return parts.length === 4 && parts[3] !== '' ? parts[3]! : null
}

/** The cluster's service, or null when neither its metadata nor its name says (the caller may fall back). */
export function serviceOfCluster(c: UpstreamCluster): ServiceLabels | null {
  let s = byCluster.get(c)
  if (s === undefined) {
    s = fromMetadata(c)
    if (s === null) {
      const host = hostOfClusterName(c.name)
      s = host === null ? null : serviceOfHost(host)
    }
    byCluster.set(c, s)
  }
  return s
}

/**
 * A service from a request's authority (Istio's host header fallback): the port is dropped and a short name is
 * completed in `namespace` (`reviews:9080` → `reviews.default.svc.cluster.local`, `reviews.default` likewise).
 */
export function serviceOfAuthority(authority: string, namespace: string, domain = 'cluster.local'): ServiceLabels {
  let host = authority
  const colon = host.lastIndexOf(':')
  if (colon > 0 && host.indexOf(']') < colon) host = host.slice(0, colon)
  host = host.toLowerCase()
  if (host === '') return UNKNOWN_SERVICE
  const dots = host.split('.').length - 1
  if (/^[\d.]+$/.test(host) || host.startsWith('[')) return serviceOfHost(host)
  if (dots === 0) host = `${host}.${namespace}.svc.${domain}`
  else if (dots === 1) host = `${host}.svc.${domain}`
  else if (dots === 2 && host.endsWith('.svc')) host = `${host}.${domain}`
  return serviceOfHost(host)
}

const principals = new WeakMap<UpstreamCluster, string | null>()

/** The URI SANs a TLS transport socket's config requires of the upstream certificate. */
function uriSansOf(socket: unknown, out: Set<string>): void {
  const common = (socket as { typed_config?: { common_tls_context?: Record<string, unknown> } } | undefined)
    ?.typed_config?.common_tls_context
  if (common === undefined) return
  const combined = common.combined_validation_context as { default_validation_context?: unknown } | undefined
  const ctx = (combined?.default_validation_context ?? common.validation_context) as
    | { match_typed_subject_alt_names?: { san_type?: string; matcher?: { exact?: string } }[] }
    | undefined
  for (const m of ctx?.match_typed_subject_alt_names ?? [])
    if (m.san_type === 'URI' && typeof m.matcher?.exact === 'string') out.add(m.matcher.exact)
}

/**
 * The principal of the cluster's TLS upstreams when its config leaves only one: the cluster requires the upstream
 * certificate to carry exactly one URI SAN (Istio's mTLS to a service whose workloads share a service account),
 * so a connection that was made proves it. Null otherwise (no TLS, several accepted identities).
 */
export function principalOfCluster(c: UpstreamCluster): string | null {
  let p = principals.get(c)
  if (p === undefined) {
    const sans = new Set<string>()
    uriSansOf(c.config.transport_socket, sans)
    for (const m of c.config.transport_socket_matches ?? []) uriSansOf(m.transport_socket, sans)
    p = sans.size === 1 ? [...sans][0]! : null
    principals.set(c, p)
  }
  return p
}
