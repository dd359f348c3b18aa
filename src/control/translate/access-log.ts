/**
 * Access logs on the generated connection managers and TCP proxies. One provider (Istio's `envoyFileAccessLog`
 * shape: a path and an optional text or JSON format) becomes one Envoy FileAccessLog; MeshConfig's mesh-wide
 * `accessLogFile` / `accessLogEncoding` / `accessLogFormat` is such a provider, applied to every sidecar (inbound
 * and outbound) and gateway.
 *
 * - `path`: a file; `/dev/stdout` (what Istio's docs use) is the proxy's standard output, which `loom up` writes to
 *   `<data-dir>/logs/<workload>.sidecar.log` (gateways: `<gateway>.log`).
 * - `text`: Envoy's text format (`%START_TIME% %REQ(:METHOD)% ...`), a newline added when it has none, as Istio's.
 * - `labels`: a JSON format, key → operator (`{"status": "%RESPONSE_CODE%"}`).
 * - neither: Loom's own JSON entry, every field the proxy records (docs/proxy.md#access-logs). Istio's default
 *   encoding is TEXT with its default format; Loom's is this JSON, and `accessLogEncoding: TEXT` gives Istio's line.
 */
import { TypeUrls } from '../../config/type-urls.js'
import type { Scope } from './scope.js'
import type { Json } from './util.js'

export interface AccessLogProvider {
  path: string
  /** an Envoy text format */
  text?: string
  /** a JSON format: field → command operators */
  labels?: Readonly<Record<string, unknown>>
}

/** Istio's default text format (`accessLogEncoding: TEXT` without `accessLogFormat`). */
export const ISTIO_TEXT_FORMAT =
  '[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" %RESPONSE_CODE% %RESPONSE_FLAGS% ' +
  '%RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS% "%UPSTREAM_TRANSPORT_FAILURE_REASON%" %BYTES_RECEIVED% ' +
  '%BYTES_SENT% %DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%" ' +
  '"%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%" %UPSTREAM_CLUSTER_RAW% %UPSTREAM_LOCAL_ADDRESS% ' +
  '%DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS% %REQUESTED_SERVER_NAME% %ROUTE_NAME%\n'

/** One provider as an Envoy `access_log` entry (a FileAccessLog). */
export function accessLogConfig(p: AccessLogProvider): Json {
  const typed: Json = { '@type': TypeUrls.fileLog, path: p.path }
  if (p.text !== undefined)
    typed.log_format = { text_format_source: { inline_string: p.text.endsWith('\n') ? p.text : `${p.text}\n` } }
  else if (p.labels !== undefined) typed.log_format = { json_format: p.labels }
  return { name: 'envoy.access_loggers.file', typed_config: typed }
}

/** The `access_log` field of one proxy's connection managers and TCP proxies: `{}` when it logs nothing. */
export function accessLogField(scope: Scope): Json {
  const p = scope.mesh.accessLog
  return p === null ? {} : { access_log: [accessLogConfig(p)] }
}
