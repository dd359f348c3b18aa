/**
 * The admin endpoint (Envoy's admin API subset). It should listen on localhost only: it can drain the proxy.
 *
 *   GET  /ready               the server state as Envoy names it: 200 LIVE when serving; 503 PRE_INITIALIZING,
 *                             INITIALIZING while starting, 503 DRAINING after /drain_listeners or SIGTERM
 *   GET  /stats               counters and gauges, `name: value` per line (`?format=json` for JSON)
 *   GET  /stats/prometheus    Prometheus text format
 *   GET  /stats/paths         the busiest request paths (JSON; `loom proxy --path-stats N`, else an empty table)
 *   GET  /config_dump         the running configuration, as Envoy's config dump
 *   GET  /clusters            every host of every cluster with health and active requests (`?format=json`)
 *   GET  /listeners           listeners and their bound addresses (`?format=json`)
 *   GET  /server_info         version, state, uptime
 *   GET  /certs               the certificates in the secret store, as Envoy's (no keys), and the proxy's identity
 *   GET  /tap                 a live stream of the requests through the proxy, one JSON line each (tap.ts;
 *                             filters as query parameters: method, path, authority, to, direction, max, max_rps)
 *   POST /drain_listeners     stop accepting new connections (in-flight requests finish)
 *   POST /quitquitquit        graceful shutdown
 */
import * as http from 'node:http'
import type { AddressInfo } from 'node:net'
import type { X509Certificate } from 'node:crypto'
import { VERSION } from '../../core/version.js'
import { parsePemCertificates } from '../identity/peer-verifier.js'
import type { ProxyServer } from '../proxy.js'
import type { Host } from '../cluster/index.js'
import type { Secret } from '../../config/envoy.js'

const HELP = `Loom admin endpoint
  GET  /ready /stats /stats/prometheus /stats/paths /config_dump /clusters /listeners /server_info /certs /tap
  POST /drain_listeners /quitquitquit
`

export class AdminServer {
  private readonly proxy: ProxyServer
  private readonly server: http.Server
  address = ''

  constructor(proxy: ProxyServer) {
    this.proxy = proxy
    this.server = http.createServer((req, res) => this.handle(req, res))
  }

  listen(host: string, port: number): Promise<void> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject)
      this.server.listen(port, host, () => {
        const a = this.server.address() as AddressInfo
        this.address = `${a.address.includes(':') ? `[${a.address}]` : a.address}:${a.port}`
        resolve()
      })
    })
  }

  close(): Promise<void> {
    return new Promise((resolve) => {
      this.server.close(() => resolve())
      this.server.closeAllConnections()
    })
  }

  private handle(req: http.IncomingMessage, res: http.ServerResponse): void {
    const url = new URL(req.url ?? '/', 'http://admin')
    const json = url.searchParams.get('format') === 'json'
    const p = this.proxy
    const send = (status: number, body: string, type = 'text/plain; charset=utf-8') => {
      res.writeHead(status, { 'content-type': type, 'cache-control': 'no-cache' })
      res.end(body)
    }
    const sendJson = (v: unknown) => send(200, `${JSON.stringify(v, null, 2)}\n`, 'application/json')
    const post = req.method === 'POST'
    switch (url.pathname) {
      case '/':
        return send(200, HELP)
      case '/ready':
        return send(p.state === 'LIVE' ? 200 : 503, `${p.state}\n`)
      case '/stats':
        if (json) return sendJson({ stats: Array.from(p.stats.entries(), ([name, value]) => ({ name, value })) })
        return send(200, p.stats.renderText())
      case '/stats/prometheus':
        return send(200, p.stats.renderPrometheus(), 'text/plain; version=0.0.4')
      case '/stats/paths':
        return sendJson(
          p.stats.paths?.toJson() ?? {
            started_at_ms: p.startedAt.getTime(),
            capacity: 0,
            evictions: 0,
            paths: [],
          },
        )
      case '/config_dump':
        return sendJson(this.configDump())
      case '/clusters':
        return json ? sendJson(this.clustersJson()) : send(200, this.clustersText())
      case '/listeners': {
        const list = p.listeners.map((l) => ({
          name: l.name,
          local_address: {
            socket_address: { address: l.config.address.socket_address.address, port_value: l.boundPort },
          },
        }))
        return json
          ? sendJson({ listener_statuses: list })
          : send(
              200,
              list
                .map(
                  (l) =>
                    `${l.name}::${l.local_address.socket_address.address}:${l.local_address.socket_address.port_value}\n`,
                )
                .join(''),
            )
      }
      case '/server_info':
        return sendJson({
          version: VERSION,
          state: p.state,
          uptime_current_epoch: `${Math.round((Date.now() - p.startedAt.getTime()) / 1000)}s`,
          node: p.bootstrap.node ?? {},
        })
      case '/certs':
        return sendJson(this.certs())
      case '/tap':
        return p.tap.serve(req, res, url.searchParams)
      case '/drain_listeners':
        if (!post) return send(405, 'use POST\n')
        p.drainListeners()
        return send(200, 'OK\n')
      case '/quitquitquit':
        if (!post) return send(405, 'use POST\n')
        send(200, 'OK\n')
        void p.shutdown().then(() => process.exit(0))
        return
      default:
        return send(404, `unknown admin path ${url.pathname}\n${HELP}`)
    }
  }

  private configDump(): unknown {
    const p = this.proxy
    const b = p.bootstrap
    const T = 'type.googleapis.com/envoy.admin.v3.'
    const d = p.dynamic
    // private keys never leave the process: redacted as Envoy's dump does
    const redact = (s: Secret): Secret =>
      s.tls_certificate === undefined
        ? s
        : { ...s, tls_certificate: { ...s.tls_certificate, private_key: { inline_string: '[redacted]' } } }
    const staticSecrets = (b.static_resources?.secrets ?? []).map(redact)
    const bootstrap =
      b.static_resources?.secrets === undefined
        ? b
        : { ...b, static_resources: { ...b.static_resources, secrets: staticSecrets } }
    return {
      configs: [
        { '@type': `${T}BootstrapConfigDump`, bootstrap },
        {
          '@type': `${T}ClustersConfigDump`,
          static_clusters: (b.static_resources?.clusters ?? []).map((cluster) => ({ cluster })),
          dynamic_active_clusters: [...d.clusters.values()].map((cluster) => ({ cluster })),
        },
        {
          '@type': `${T}ListenersConfigDump`,
          static_listeners: (b.static_resources?.listeners ?? []).map((listener) => ({ listener })),
          dynamic_listeners: [...d.listeners.values()].map((listener) => ({
            name: listener.name,
            active_state: { listener },
          })),
        },
        {
          '@type': `${T}RoutesConfigDump`,
          dynamic_route_configs: [...d.routes.values()].map((route_config) => ({ route_config })),
        },
        {
          '@type': `${T}EndpointsConfigDump`,
          dynamic_endpoint_configs: [...d.endpoints.values()].map((endpoint_config) => ({ endpoint_config })),
        },
        {
          '@type': `${T}SecretsConfigDump`,
          static_secrets: staticSecrets.map((secret) => ({ name: secret.name, secret })),
          dynamic_active_secrets: [...d.secrets].map(([name, secret]) => ({
            name,
            secret:
              secret.kind === 'tls_certificate'
                ? {
                    name,
                    tls_certificate: {
                      certificate_chain: { inline_string: secret.certificateChainPem },
                      private_key: { inline_string: '[redacted]' },
                    },
                  }
                : { name, validation_context: { trusted_ca: { inline_string: secret.trustedCaPem } } },
          })),
        },
      ],
    }
  }

  /**
   * Envoy's `/certs` (admin.v3.Certificates): per certificate secret, its chain (`cert_chain`) and the trusted roots
   * (`ca_cert`, from `ROOTCA`); a trust bundle without a certificate is an entry of its own. Never a private key.
   * `identity` (Loom's) is the certificate the proxy got from the control plane and when it renews.
   */
  private certs(): unknown {
    const store = this.proxy.secrets
    const roots = store.get('ROOTCA')
    const caCert = roots?.kind === 'validation_context' ? certDetails('ROOTCA', roots.trustedCaPem) : []
    const certificates: { ca_cert: unknown[]; cert_chain: unknown[] }[] = []
    for (const name of store.names().sort()) {
      const s = store.get(name)
      if (s?.kind === 'tls_certificate')
        certificates.push({ ca_cert: caCert, cert_chain: certDetails(name, s.certificateChainPem) })
      else if (s?.kind === 'validation_context' && name !== 'ROOTCA')
        certificates.push({ ca_cert: certDetails(name, s.trustedCaPem), cert_chain: [] })
    }
    if (certificates.length === 0 && caCert.length > 0) certificates.push({ ca_cert: caCert, cert_chain: [] })
    const id = this.proxy.identity?.status() ?? null
    return {
      certificates,
      ...(this.proxy.identity === null
        ? {}
        : {
            identity:
              id === null
                ? null
                : {
                    spiffe_id: id.spiffeId,
                    serial_number: id.serialNumber,
                    issuer: id.issuer,
                    valid_from: id.notBefore,
                    expiration_time: id.notAfter,
                    certificates_received: id.certificates,
                    next_renewal: id.nextRenewal,
                    ...(id.lastError !== null ? { last_error: id.lastError } : {}),
                  },
          }),
    }
  }

  private clustersJson(): unknown {
    const out = []
    for (const c of this.proxy.clusters.all()) {
      out.push({
        name: c.name,
        host_statuses: c.hosts().map((h) => ({
          address: { socket_address: { address: h.address, port_value: h.port } },
          hostname: h.hostname,
          weight: h.weight,
          priority: h.priority,
          locality: h.locality,
          health_status: hostHealthJson(h),
          stats: { rq_active: h.activeRequests, cx_active: h.activeConnections },
        })),
      })
    }
    return { cluster_statuses: out }
  }

  private clustersText(): string {
    let s = ''
    for (const c of this.proxy.clusters.all()) {
      for (const h of c.hosts()) {
        const k = `${c.name}::${h.key}::`
        s += `${k}hostname::${h.hostname}\n${k}health_flags::${healthFlags(h)}\n`
        s += `${k}weight::${h.weight}\n${k}priority::${h.priority}\n${k}rq_active::${h.activeRequests}\n`
        s += `${k}cx_active::${h.activeConnections}\n`
      }
    }
    return s
  }
}

/**
 * Envoy's health_flags: `healthy`, or the flags in Envoy's order (`/failed_active_hc`, `/failed_outlier_check`,
 * `/failed_eds_health`, `/pending_active_hc`, `/active_hc_timeout`).
 */
function healthFlags(h: Host): string {
  let flags = ''
  if (h.failedActiveHc) flags += '/failed_active_hc'
  if (h.ejected) flags += '/failed_outlier_check'
  if (h.healthStatus === 'UNHEALTHY') flags += '/failed_eds_health'
  if (h.activeHc?.pending) flags += '/pending_active_hc'
  if (h.activeHc?.timedOut) flags += '/active_hc_timeout'
  return flags === '' ? 'healthy' : flags
}

/** admin.v3.HostHealthStatus: the EDS status and the flags that are set. */
function hostHealthJson(h: Host): Record<string, unknown> {
  const out: Record<string, unknown> = { eds_health_status: h.healthStatus }
  if (h.failedActiveHc) out.failed_active_health_check = true
  if (h.ejected) out.failed_outlier_check = true
  if (h.activeHc?.pending) out.pending_active_hc = true
  if (h.activeHc?.timedOut) out.active_hc_timeout = true
  return out
}

/** admin.v3.CertificateDetails of each certificate of a PEM text. */
function certDetails(path: string, pem: string): unknown[] {
  let certs: X509Certificate[]
  try {
    certs = parsePemCertificates(pem)
  } catch {
    return []
  }
  return certs.map((c) => {
    const notAfter = Date.parse(c.validTo)
    const sans = (c.subjectAltName ?? '')
      .split(', ')
      .filter((x) => x !== '')
      .map((x) => {
        const i = x.indexOf(':')
        const [type, value] = [x.slice(0, i), x.slice(i + 1)]
        return type === 'URI' ? { uri: value } : type === 'DNS' ? { dns: value } : { ip_address: value }
      })
    return {
      path: `<secret ${path}>`,
      serial_number: c.serialNumber.toLowerCase(),
      subject_alt_names: sans,
      days_until_expiration: String(Math.max(0, Math.floor((notAfter - Date.now()) / 86_400_000))),
      valid_from: new Date(c.validFrom).toISOString(),
      expiration_time: new Date(notAfter).toISOString(),
    }
  })
}
