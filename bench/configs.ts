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
}

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
  return `admin:
  address: { socket_address: { address: 127.0.0.1, port_value: ${adminPort} } }
static_resources:
  listeners:
  - name: ingress
    address: { socket_address: { address: 127.0.0.1, port_value: ${port} } }
    filter_chains:
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
${on ? RESILIENCE_FILTERS : ''}          - name: envoy.filters.http.router
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
