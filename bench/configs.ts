// Configuration files the benchmark generates for the backend and for each proxy under test.

/** The fixed 1 KB response body (letters, digits and dashes only, so it is safe inside an nginx string). */
export const BODY_1K = 'loom-bench-0123456789-abcdefghijklmnopqrstuvwxyz-'.repeat(25).slice(0, 1024)
export const POST_BYTES = 16 * 1024

function nginxCommon(dir: string): string {
  return `user root;
worker_processes 1;
daemon off;
master_process on;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
worker_rlimit_nofile 16384;
events {
  worker_connections 8192;
}
`
}

function nginxHttpCommon(dir: string): string {
  return `  access_log off;
  default_type text/plain;
  keepalive_timeout 300s;
  keepalive_requests 1000000;
  client_max_body_size 1m;
  client_body_buffer_size 64k;
  client_body_temp_path ${dir}/client_body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
`
}

/** Backend: 1 KB body for any GET; a POST's body is read and discarded by \`return\`, then the same 200. */
export function backendNginx(dir: string, port: number): string {
  return `${nginxCommon(dir)}http {
${nginxHttpCommon(dir)}  server {
    listen 127.0.0.1:${port} backlog=4096;
    location / {
      return 200 "${BODY_1K}";
    }
  }
}
`
}

/** nginx as reverse proxy: 1 worker, kept-alive upstream connections over HTTP/1.1. */
export function proxyNginx(dir: string, port: number, backendPort: number): string {
  return `${nginxCommon(dir)}http {
${nginxHttpCommon(dir)}  upstream backend {
    server 127.0.0.1:${backendPort};
    keepalive 128;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
  }
  server {
    listen 127.0.0.1:${port} backlog=4096;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
`
}

/** HAProxy: one thread, HTTP mode, kept-alive and always-reused server connections. */
export function haproxyConfig(port: number, backendPort: number): string {
  return `global
  nbthread 1
  maxconn 8192

defaults
  mode http
  option http-keep-alive
  http-reuse always
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  timeout http-keep-alive 60s

frontend fe
  bind 127.0.0.1:${port}
  default_backend be

backend be
  server s1 127.0.0.1:${backendPort}
`
}

/**
 * What "resilience on" adds to the plain bootstrap, all of it armed but idle on a healthy backend: the fault filter
 * before the router (abort and delay at 0%), a route timeout with retries and a per-try timeout, circuit-breaker
 * thresholds with a retry budget, and outlier detection.
 */
export interface LoomOptions {
  resilience?: boolean
  /**
   * Istio's telemetry as a sidecar's outbound has it: the node's workload metadata, the listener's direction
   * (OUTBOUND) and the istio.stats filter before the router (metadata exchange headers on every request, Istio's
   * request metrics at every stream's end).
   */
  telemetry?: boolean
}

const TELEMETRY_NODE = `node:
  id: sidecar~127.0.0.1~bench-v1-0.default~default.svc.cluster.local
  metadata: { WORKLOAD_NAME: bench-v1, NAMESPACE: default, LABELS: { app: bench, version: v1 } }
`
const TELEMETRY_FILTER = `          - name: istio.stats
            typed_config: { "@type": type.googleapis.com/stats.PluginConfig, disable_host_header_fallback: true }
`

const RESILIENCE_FILTERS = `          - name: envoy.filters.http.fault
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault
              abort: { http_status: 503, percentage: { numerator: 0, denominator: HUNDRED } }
              delay: { fixed_delay: 1s, percentage: { numerator: 0, denominator: HUNDRED } }
`
const RESILIENCE_ROUTE = `
                  timeout: 15s
                  retry_policy:
                    retry_on: 5xx,gateway-error,reset,connect-failure,refused-stream
                    num_retries: 2
                    per_try_timeout: 5s
                    retry_host_predicate: [{ name: envoy.retry_host_predicates.previous_hosts }]
                    host_selection_retry_max_attempts: 5`
const RESILIENCE_CLUSTER = `    circuit_breakers:
      thresholds:
      - max_connections: 1024
        max_pending_requests: 1024
        max_requests: 1024
        retry_budget: { budget_percent: { value: 20 }, min_retry_concurrency: 3 }
    outlier_detection:
      consecutive_5xx: 5
      consecutive_gateway_failure: 5
      interval: 5s
      base_ejection_time: 30s
      max_ejection_percent: 50
`

/** Envoy-v3-style static bootstrap for \`loom proxy -c\`. */
export function loomBootstrap(port: number, adminPort: number, backendPort: number, opts: LoomOptions = {}): string {
  const on = opts.resilience === true
  const tel = opts.telemetry === true
  return `${tel ? TELEMETRY_NODE : ''}admin:
  address: { socket_address: { address: 127.0.0.1, port_value: ${adminPort} } }
static_resources:
  listeners:
  - name: ingress
    address: { socket_address: { address: 127.0.0.1, port_value: ${port} } }
${tel ? '    traffic_direction: OUTBOUND\n' : ''}    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
          route_config:
            name: local
            virtual_hosts:
            - name: backend
              domains: ["*"]
              routes:
              - match: { prefix: "/" }
                route:
                  cluster: backend${on ? RESILIENCE_ROUTE : ''}
          http_filters:
${on ? RESILIENCE_FILTERS : ''}${tel ? TELEMETRY_FILTER : ''}          - name: envoy.filters.http.router
            typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }
  clusters:
  - name: backend
    type: STATIC
    connect_timeout: 1s
    lb_policy: ROUND_ROBIN
${on ? RESILIENCE_CLUSTER : ''}    load_assignment:
      cluster_name: backend
      endpoints:
      - lb_endpoints:
        - endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: ${backendPort} } } }
`
}

/** wrk script for the 16 KB POST. */
export const POST_LUA = `wrk.method = "POST"
wrk.body = string.rep("p", ${POST_BYTES})
wrk.headers["Content-Type"] = "application/octet-stream"
`

// ---- the mutual-TLS pairs: client -> proxy A -> (mTLS) -> proxy B -> backend ----

/** Where the pair's certificates are (bench/mtls-certs.ts) and who the peers are. */
export interface MtlsPairConfig {
  root: string
  client: { cert: string; key: string }
  server: { cert: string; key: string }
  /** nginx's server certificate (the SPIFFE ID plus a DNS SAN nginx can check) */
  serverWithDns: { cert: string; key: string }
  serverId: string
  serverHost: string
}

/** TLS 1.3 suites of both pairs, in Loom's order (src/proxy/secrets/tls-material.ts), so both negotiate the first. */
export const TLS13_SUITES = 'TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256'

const HCM = 'type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager'
const ROUTER = `          - name: envoy.filters.http.router
            typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }`

/** Istio's SDS names, here static secrets read from the files (a sidecar gets them over SDS from its agent). */
function loomSecrets(c: { cert: string; key: string }, root: string): string {
  return `  secrets:
  - name: default
    tls_certificate:
      certificate_chain: { filename: ${c.cert} }
      private_key: { filename: ${c.key} }
  - name: ROOTCA
    validation_context:
      trusted_ca: { filename: ${root} }
`
}

/**
 * The client's sidecar: plain-text listener, one route to the outbound cluster of the server, with Istio's mTLS
 * context as the translator emits it (src/control/translate/mtls.ts): certificate `default` and trust bundle
 * `ROOTCA` by SDS name, Istio's SNI and ALPN (`istio-peer-exchange`, `istio`), the server's SPIFFE ID as the
 * accepted SAN. `http2`: the cluster speaks HTTP/2 (as for a port of protocol http2/grpc), so h2 is offered too.
 */
export function loomMtlsOutbound(
  port: number,
  adminPort: number,
  peerPort: number,
  m: MtlsPairConfig,
  http2: boolean,
): string {
  const cluster = `outbound|80||${m.serverHost}`
  const h2 = http2
    ? `    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: { http2_protocol_options: {} }
`
    : ''
  return `admin:
  address: { socket_address: { address: 127.0.0.1, port_value: ${adminPort} } }
static_resources:
${loomSecrets(m.client, m.root)}  listeners:
  - name: outbound
    address: { socket_address: { address: 127.0.0.1, port_value: ${port} } }
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": ${HCM}
          stat_prefix: outbound
          use_remote_address: false
          route_config:
            name: outbound
            virtual_hosts:
            - name: server
              domains: ["*"]
              routes:
              - match: { prefix: "/" }
                route: { cluster: "${cluster}" }
          http_filters:
${ROUTER}
  clusters:
  - name: "${cluster}"
    type: STATIC
    connect_timeout: 1s
    lb_policy: ROUND_ROBIN
${h2}    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        sni: outbound_.80_._.${m.serverHost}
        common_tls_context:
          tls_certificate_sds_secret_configs: [{ name: default }]
          combined_validation_context:
            default_validation_context:
              match_typed_subject_alt_names: [{ san_type: URI, matcher: { exact: "${m.serverId}" } }]
            validation_context_sds_secret_config: { name: ROOTCA }
          alpn_protocols: [istio-peer-exchange, istio]
    load_assignment:
      cluster_name: "${cluster}"
      endpoints:
      - lb_endpoints:
        - endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: ${peerPort} } } }
`
}

/**
 * The server's sidecar, as the translator emits an inbound listener under STRICT (src/control/translate/
 * listeners.ts): tls_inspector, one chain for `transport_protocol: tls` with certificate `default`, client
 * certificates required and validated against `ROOTCA`, x-forwarded-client-cert APPEND_FORWARD with the peer's
 * URI; the route goes to the inbound cluster, the application (the backend) over plain HTTP/1.1.
 */
export function loomMtlsInbound(port: number, adminPort: number, backendPort: number, m: MtlsPairConfig): string {
  return `admin:
  address: { socket_address: { address: 127.0.0.1, port_value: ${adminPort} } }
static_resources:
${loomSecrets(m.server, m.root)}  listeners:
  - name: "inbound|80"
    address: { socket_address: { address: 127.0.0.1, port_value: ${port} } }
    listener_filters:
    - name: envoy.filters.listener.tls_inspector
      typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector }
    filter_chains:
    - filter_chain_match: { transport_protocol: tls }
      transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          require_client_certificate: true
          common_tls_context:
            tls_certificate_sds_secret_configs: [{ name: default }]
            validation_context_sds_secret_config: { name: ROOTCA }
      filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": ${HCM}
          stat_prefix: "inbound_127.0.0.1_${port}"
          use_remote_address: false
          forward_client_cert_details: APPEND_FORWARD
          set_current_client_cert_details: { uri: true }
          route_config:
            name: "inbound|80"
            virtual_hosts:
            - name: "inbound|http|80"
              domains: ["*"]
              routes:
              - match: { prefix: "/" }
                route: { cluster: "inbound|80||", timeout: 0s }
          http_filters:
${ROUTER}
  clusters:
  - name: "inbound|80||"
    type: STATIC
    connect_timeout: 1s
    lb_policy: ROUND_ROBIN
    load_assignment:
      cluster_name: "inbound|80||"
      endpoints:
      - lb_endpoints:
        - endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: ${backendPort} } } }
`
}

/**
 * nginx A of the nginx pair: plain-text listener, upstream to nginx B over TLS 1.3 with a client certificate,
 * the peer verified against the root and its DNS SAN (proxy_ssl_verify), kept-alive connections and TLS sessions
 * reused.
 */
export function nginxMtlsOutbound(dir: string, port: number, peerPort: number, m: MtlsPairConfig): string {
  return `${nginxCommon(dir)}http {
${nginxHttpCommon(dir)}  upstream peer {
    server 127.0.0.1:${peerPort};
    keepalive 128;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
  }
  server {
    listen 127.0.0.1:${port} backlog=4096;
    location / {
      proxy_pass https://peer;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_ssl_protocols TLSv1.3;
      proxy_ssl_conf_command Ciphersuites ${TLS13_SUITES};
      proxy_ssl_certificate ${m.client.cert};
      proxy_ssl_certificate_key ${m.client.key};
      proxy_ssl_trusted_certificate ${m.root};
      proxy_ssl_verify on;
      proxy_ssl_verify_depth 2;
      proxy_ssl_server_name on;
      proxy_ssl_name ${m.serverHost};
      proxy_ssl_session_reuse on;
    }
  }
}
`
}

/** nginx B of the nginx pair: TLS 1.3 listener that requires and verifies a client certificate. */
export function nginxMtlsInbound(dir: string, port: number, backendPort: number, m: MtlsPairConfig): string {
  return `${nginxCommon(dir)}http {
${nginxHttpCommon(dir)}  upstream backend {
    server 127.0.0.1:${backendPort};
    keepalive 128;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
  }
  server {
    listen 127.0.0.1:${port} ssl backlog=4096;
    ssl_protocols TLSv1.3;
    ssl_conf_command Ciphersuites ${TLS13_SUITES};
    ssl_certificate ${m.serverWithDns.cert};
    ssl_certificate_key ${m.serverWithDns.key};
    ssl_client_certificate ${m.root};
    ssl_verify_client on;
    ssl_verify_depth 2;
    ssl_session_cache shared:SSL:1m;
    ssl_session_timeout 1h;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
`
}
