/**
 * Istio's MeshConfig (istio.io/api mesh/v1alpha1), the fields Loom reads, with Istio's names: the document of
 * `loom control --mesh-config <file>`, the same object as the `mesh` key of the istio ConfigMap (and IstioOperator's
 * `spec.meshConfig`). Fields Loom does not read are reported by `unreadFields` and ignored, as a newer Istio's
 * fields are by an older pilot; the fields Loom reads are validated strictly.
 */
import { v } from '../config/schema.js'
import { bool, duration, enumOf, nonEmpty, opt, rule, str, uint32 } from './common.js'
import { LocalityLoadBalancerSetting } from './networking.js'

const strings = v.array(str)

/** A sampling percentage, 0 to 100. */
const samplingPercent = v.pipe(
  v.number(),
  v.check((n) => n >= 0 && n <= 100, 'sampling must be between 0.0 and 100.0'),
)

/** A port as Istio's YAML often writes it: a number or a numeric string ("8000"). */
const portValue = v.pipe(
  v.unknown(),
  v.check((x) => typeof x === 'number' || (typeof x === 'string' && /^\d{1,5}$/.test(x)), 'port must be a number'),
  v.transform((x) => Number(x)),
  v.check((n: number) => Number.isInteger(n) && n >= 1 && n <= 65535, 'port number must be between 1 and 65535'),
)

/** statusOnError: an HTTP status code as a string ("403"), Istio's type. */
const statusCode = rule((s) =>
  /^\d{3}$/.test(s) && Number(s) >= 400 && Number(s) <= 599
    ? null
    : `invalid statusOnError "${s}": an HTTP error status code (400 to 599)`,
)

const BodyInCheck = v.object({
  maxRequestBytes: opt(uint32),
  allowPartialMessage: opt(bool),
  packAsBytes: opt(bool),
})

/** `[<namespace>/]<hostname>` of a service in the registry or a ServiceEntry. */
const service = rule((s) =>
  s === '' ? 'must not be empty' : s.split('/').length > 2 ? 'must be [<namespace>/]<hostname>' : null,
)

export const EnvoyExtAuthzHttpProvider = v.object({
  service,
  port: portValue,
  timeout: opt(duration),
  pathPrefix: opt(rule((s) => (s.startsWith('/') ? null : `pathPrefix must begin with "/", found "${s}"`))),
  failOpen: opt(bool),
  statusOnError: opt(statusCode),
  includeRequestHeadersInCheck: opt(strings),
  /** the older name of includeRequestHeadersInCheck */
  includeHeadersInCheck: opt(strings),
  includeAdditionalHeadersInCheck: opt(v.record(str, str)),
  headersToUpstreamOnAllow: opt(strings),
  headersToDownstreamOnDeny: opt(strings),
  headersToDownstreamOnAllow: opt(strings),
  includeRequestBodyInCheck: opt(BodyInCheck),
})
export type EnvoyExtAuthzHttpProvider = v.InferOutput<typeof EnvoyExtAuthzHttpProvider>

export const EnvoyExtAuthzGrpcProvider = v.object({
  service,
  port: portValue,
  timeout: opt(duration),
  failOpen: opt(bool),
  statusOnError: opt(statusCode),
  includeRequestBodyInCheck: opt(BodyInCheck),
})
export type EnvoyExtAuthzGrpcProvider = v.InferOutput<typeof EnvoyExtAuthzGrpcProvider>

/** The OpenTelemetry tracing provider: OTLP to `service:port`, over HTTP when `http` is set (Loom's only transport). */
export const OpenTelemetryProvider = v.object({
  service,
  port: portValue,
  maxTagLength: opt(uint32),
  http: opt(
    v.object({
      path: opt(rule((s) => (s === '' || s.startsWith('/') ? null : `path must begin with "/", found "${s}"`))),
      timeout: opt(duration),
      headers: opt(v.array(v.object({ name: nonEmpty, value: opt(str) }))),
    }),
  ),
})
export type OpenTelemetryProvider = v.InferOutput<typeof OpenTelemetryProvider>

/** Envoy's file access log as a provider (Telemetry accessLogging names it). */
export const EnvoyFileAccessLogProvider = v.object({
  path: opt(str),
  logFormat: opt(v.object({ text: opt(str), labels: opt(v.record(str, v.unknown())) })),
})
export type EnvoyFileAccessLogProvider = v.InferOutput<typeof EnvoyFileAccessLogProvider>

/** The provider kinds Loom builds; others (zipkin, prometheus...) are accepted and reported as not read. */
export const EXT_AUTHZ_KINDS = ['envoyExtAuthzHttp', 'envoyExtAuthzGrpc'] as const
export const PROVIDER_KINDS = [...EXT_AUTHZ_KINDS, 'opentelemetry', 'envoyFileAccessLog'] as const

export const ExtensionProvider = v.object({
  name: nonEmpty,
  envoyExtAuthzHttp: opt(EnvoyExtAuthzHttpProvider),
  envoyExtAuthzGrpc: opt(EnvoyExtAuthzGrpcProvider),
  opentelemetry: opt(OpenTelemetryProvider),
  envoyFileAccessLog: opt(EnvoyFileAccessLogProvider),
})
export type ExtensionProvider = v.InferOutput<typeof ExtensionProvider>

export const MeshConfigSchema = v.object({
  rootNamespace: opt(nonEmpty),
  trustDomain: opt(nonEmpty),
  connectTimeout: opt(duration),
  localityLbSetting: opt(LocalityLoadBalancerSetting),
  pathNormalization: opt(
    v.object({ normalization: opt(enumOf(['DEFAULT', 'NONE', 'BASE', 'MERGE_SLASHES', 'DECODE_AND_MERGE_SLASHES'])) }),
  ),
  defaultConfig: opt(
    v.object({
      gatewayTopology: opt(v.object({ numTrustedProxies: opt(uint32) })),
      tracing: opt(v.object({ sampling: opt(samplingPercent) })),
    }),
  ),
  extensionProviders: opt(v.array(ExtensionProvider)),
  defaultProviders: opt(v.object({ tracing: opt(strings), accessLogging: opt(strings), metrics: opt(strings) })),
  enableTracing: opt(bool),
  h2UpgradePolicy: opt(enumOf(['DO_NOT_UPGRADE', 'UPGRADE'])),
  accessLogFile: opt(str),
  accessLogEncoding: opt(enumOf(['TEXT', 'JSON'])),
  accessLogFormat: opt(str),
  /** Loom's own: who may ask proxies for the live decision record (`x-loom-explain: 1`); nobody by default */
  explainFrom: opt(
    v.object({
      principals: opt(v.array(nonEmpty)),
      namespaces: opt(v.array(nonEmpty)),
      ipBlocks: opt(
        v.array(
          rule((s) =>
            /^[0-9a-fA-F.:]+(\/\d{1,3})?$/.test(s) ? null : `"${s}" is not an IP address or CIDR range (10.0.0.0/8)`,
          ),
        ),
      ),
    }),
  ),
})
export type MeshConfigDoc = v.InferOutput<typeof MeshConfigSchema>

/** What Loom reads, as a tree of field names (`true`: read whole, validated by its schema). */
type Known = { [k: string]: true | Known | [Known] }
const BODY: Known = { maxRequestBytes: true, allowPartialMessage: true, packAsBytes: true }
const KNOWN: Known = {
  rootNamespace: true,
  trustDomain: true,
  connectTimeout: true,
  localityLbSetting: true,
  pathNormalization: { normalization: true },
  h2UpgradePolicy: true,
  accessLogFile: true,
  accessLogEncoding: true,
  accessLogFormat: true,
  explainFrom: { principals: true, namespaces: true, ipBlocks: true },
  defaultConfig: { gatewayTopology: { numTrustedProxies: true }, tracing: { sampling: true } },
  defaultProviders: { tracing: true, accessLogging: true, metrics: true },
  enableTracing: true,
  extensionProviders: [
    {
      name: true,
      envoyExtAuthzHttp: {
        service: true,
        port: true,
        timeout: true,
        pathPrefix: true,
        failOpen: true,
        statusOnError: true,
        includeRequestHeadersInCheck: true,
        includeHeadersInCheck: true,
        includeAdditionalHeadersInCheck: true,
        headersToUpstreamOnAllow: true,
        headersToDownstreamOnDeny: true,
        headersToDownstreamOnAllow: true,
        includeRequestBodyInCheck: BODY,
      },
      envoyExtAuthzGrpc: {
        service: true,
        port: true,
        timeout: true,
        failOpen: true,
        statusOnError: true,
        includeRequestBodyInCheck: BODY,
      },
      opentelemetry: {
        service: true,
        port: true,
        maxTagLength: true,
        http: { path: true, timeout: true, headers: true },
      },
      envoyFileAccessLog: { path: true, logFormat: { text: true, labels: true } },
    },
  ],
}

/** The paths of the fields in `doc` that Loom does not read (`defaultConfig.tracing`, `extensionProviders[1].zipkin`). */
export function unreadFields(doc: unknown): string[] {
  const out: string[] = []
  walk(doc, KNOWN, '', out)
  return out
}

function walk(value: unknown, known: Known, path: string, out: string[]): void {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return
  for (const [k, val] of Object.entries(value)) {
    const p = path === '' ? k : `${path}.${k}`
    const kn = known[k]
    if (kn === undefined) out.push(p)
    else if (Array.isArray(kn)) {
      if (Array.isArray(val)) for (const [i, item] of val.entries()) walk(item, kn[0], `${p}[${i}]`, out)
    } else if (kn !== true) walk(val, kn, p, out)
  }
}
