/**
 * The control plane's HTTP/JSON API (what `loom apply`, `get`, `delete`, `proxy-status` and `loom up` use).
 *
 *   POST   /api/v1/apply[?dryRun=true]              body: YAML or JSON manifests (many documents); header x-loom-source names them;
 *                                                    answers results (created/configured/unchanged) and warnings: what
 *                                                    `loom analyze` finds in the resources written (created or
 *                                                    configured; nothing is refused for it), each with resource, file,
 *                                                    document index and field path
 *   GET    /api/v1/resources[?kind=&namespace=]     list
 *   GET    /api/v1/resources/:kind/:namespace/:name
 *   DELETE /api/v1/resources/:kind/:namespace/:name
 *   GET    /api/v1/workloads                        self-registered workloads
 *   POST   /api/v1/workloads                        register (JSON: name, namespace, address, ports, labels, ttlSeconds...)
 *   POST   /api/v1/workloads/:namespace/:name/heartbeat  optional body {"healthy": bool, "registration": {...}}
 *                                                   (a heartbeat with its registration re-registers an unknown workload)
 *   DELETE /api/v1/workloads/:namespace/:name
 *   GET    /api/v1/workloads/:namespace/:name/security  the workload's mTLS mode per port (and the PeerAuthentication
 *                                                   that decided it), DestinationRule TLS modes of its destinations,
 *                                                   the AuthorizationPolicies and RequestAuthentications that apply
 *   GET    /api/v1/workloads/:namespace/:name/identity  its SPIFFE id and the certificate each of its proxies holds
 *                                                   (their admin /certs: serial, validity, next renewal)
 *   GET    /api/v1/services                         the registry: services, ports, endpoints with health
 *   GET    /api/v1/kubernetes                       with --kubernetes: the API server, each informer's counters
 *                                                    (lists, watches, events, bookmarks, 410s, failures) and the
 *                                                    Istio resources rejected by validation
 *   GET    /api/v1/describe/service/:namespace/:name  `loom describe service` (describe.ts): the service, its
 *                                                   DestinationRules (subsets with their endpoints) and
 *                                                   VirtualServices (http routes: matches, destinations, weights),
 *                                                   endpoints with the live host states of its callers' proxies
 *                                                   (outlier ejection, health checks), the policies that select its
 *                                                   workloads; `:name` short, `name.namespace` or a host name
 *   POST   /api/v1/explain                          why a request gets its answer (JSON: from, namespace, method,
 *                                                    url, headers): the source proxy's snapshot walked by the
 *                                                    proxy's own matching code, live host states from its admin
 *   GET    /api/v1/proxy-status                     every connected proxy (proxy-status.ts): workload, kind,
 *                                                    namespace, service account, user agent, xDS protocol, uptime;
 *                                                    per type SYNCED / STALE / NACKED (with the reason) / NOT_SENT and
 *                                                    the versions sent and ACKed
 *   GET    /api/v1/prometheus/targets               Prometheus HTTP service discovery (http_sd_configs): one target
 *                                                    group per connected proxy that sent its admin address
 *   GET    /api/v1/tap/:namespace/:workload         live requests through the workload's proxies, NDJSON, read from
 *                                                    their admin /tap (tap-proxy.ts); query: method, path, authority,
 *                                                    to, direction, max, max_rps
 *   GET    /api/v1/ratelimits                       global rate limits: each proxy's demand and current share
 *   POST   /api/v1/tokens                           a bootstrap token for a workload's first certificate (JSON:
 *                                                    namespace, serviceAccount, ttlSeconds; default 1 h); 409 without
 *                                                    a CA
 *   POST   /api/v1/ca/rotate                        a live root rotation (JSON, optional: propagationSeconds, default
 *                                                    30, the time the next root is trusted before it signs;
 *                                                    overlapSeconds, how long the previous root stays trusted after)
 *   GET    /api/v1/ca                               trust domain, certificate TTL, the trust bundle's roots
 *                                                    (subject, serial, validity), certificates issued / renewed /
 *                                                    refused by reason
 *   POST   /api/v1/analyze                          diagnostics for the stored config plus the manifests in the body
 *                                                    (or, with content-type application/vnd.loom.files+json, several
 *                                                    files: {"files": [{"source": "a.yaml", "text": "..."}]})
 *   GET    /api/v1/stats?resource=deployment|service|namespace[&name=][&namespace=][&window=1m]
 *                                                    traffic per resource over the window (default 1m), from the
 *                                                    proxies' Istio metrics the control plane gathers: requests,
 *                                                    rps, success rate, latency p50/p95/p99, open TCP connections,
 *                                                    mTLS share, MESHED; a service also per version
 *   GET    /api/v1/series?resource=service|deployment&name=[&namespace=default][&version=][&window=10m][&step=15s]
 *                                                    the same numbers per step over the window (telemetry/series.ts):
 *                                                    points {t (Unix s), rps, successRate, p50, p95, p99}, each what
 *                                                    /stats gives for a window of one step ending at t
 *   GET    /api/v1/edges[?namespace=][&window=]     who called whom, with the identities (SPIFFE ids) and mTLS share
 *   GET    /api/v1/graph[?namespace=][&window=]     the same as a graph (telemetry/graph.ts): every workload known as
 *                                                    a node with its service and version, edges with rps, success,
 *                                                    denied share, latency, mTLS and identities (idle ones too); the
 *                                                    services with their workloads, and the edges per service
 *   GET    /api/v1/top[?namespace=][&service=][&window=][&limit=20]
 *                                                    the busiest request paths (from each proxy's /stats/paths)
 *   GET    /api/v1/telemetry                        how gathering goes: interval, retention, each proxy's series
 *                                                    and last error
 *   GET    /debug/snapshot?node=<id>                the xDS resources a proxy gets (what the xDS server holds for it,
 *                                                    with the versions proxy-status shows)
 *   GET    /dashboard/                              the dashboard (dashboard.ts; `/` redirects to it)
 *   GET    /debug/nodes, /healthz
 *
 * A write that fails validation changes nothing and returns every error (document index, kind, name, field path).
 * A call that changes state (every POST and DELETE but explain, analyze and a dry-run apply) needs a write token
 * when the control plane has API tokens, and always when it comes from a browser (api-tokens.ts `writeAccess`).
 */
import * as http from 'node:http'
import * as https from 'node:https'
import { type AddressInfo, createServer as createNetServer, type Server as NetServer, type Socket } from 'node:net'
import { keyOf, lookupKind, type ManifestResult, parseManifests } from '../api/index.js'
import type { Resource } from '../api/resource.js'
import { log } from '../core/log.js'
import { type ScrapeTarget, targetGroups, workloadOfNodeId } from '../core/prometheus-sd.js'
import type { ControlPlane } from './control.js'
import type { ControlTls } from './tls.js'
import { DescribeError, describeService, workloadIdentity } from './describe.js'
import { ExplainError } from './explain/engine.js'
import { explainRequest } from './explain/service.js'
import { Registry, RegistrationError } from './registry/registry.js'
import { analyze, type Diagnostic, locate } from './translate/analyze.js'
import { workloadSecurity } from './translate/security.js'
import { StoreConflictError } from './store/store.js'
import { graphOf } from './telemetry/graph.js'
import { edgeRows, type ResourceKind, statRows, topRows } from './telemetry/views.js'
import { seriesPoints } from './telemetry/series.js'
import { parseFlagDurationMs } from '../core/duration.js'
import { proxyTap, tapTargets } from './tap-proxy.js'
import { configDump, type ProxyStatusRow, proxyStatusRows } from './proxy-status.js'
import type { ReplicaSet } from './replicas.js'
import { checkBrowserRequest, DashboardFiles, fromBrowser } from './dashboard.js'
import { type TokenLookup, writeAccess } from './api-tokens.js'

const MAX_BODY = 16 * 1024 * 1024

/** Every connected proxy that sent its admin address (node metadata ADMIN_ADDRESS), as a Prometheus target. */
function scrapeTargets(cp: ControlPlane): ScrapeTarget[] {
  const nodes = new Map(cp.knownNodes().map((n) => [n.id, n]))
  const out: ScrapeTarget[] = []
  for (const s of cp.xds.status()) {
    const node = nodes.get(s.nodeId)
    if (s.adminAddress === null || node === undefined) continue
    out.push({
      adminAddress: s.adminAddress,
      kind: node.kind,
      namespace: node.namespace,
      workload: workloadOfNodeId(s.nodeId) ?? s.nodeId,
      labels: node.labels,
    })
  }
  return out
}

/** `resource=` of /api/v1/stats, with the short names the CLI takes. */
const RESOURCE_KINDS: Record<string, ResourceKind> = {
  deployment: 'deployment',
  deploy: 'deployment',
  workload: 'deployment',
  service: 'service',
  svc: 'service',
  namespace: 'namespace',
  ns: 'namespace',
}

/**
 * How long a live rotation's next root is only trusted before it signs: the SDS push of the new bundle reaches every
 * connected proxy in well under a second; the margin covers proxies reconnecting.
 */
export const DEFAULT_ROTATION_PROPAGATION_MS = 30_000

/** Several manifest files in one analyze request: `{"files": [{"source": "a.yaml", "text": "..."}]}`. */
const FILES_TYPE = 'application/vnd.loom.files+json'

function filesOf(body: string): [string, string][] {
  let files: unknown
  try {
    files = (JSON.parse(body) as { files?: unknown }).files
  } catch {
    files = undefined
  }
  if (!Array.isArray(files) || !files.every((f) => typeof f?.source === 'string' && typeof f?.text === 'string')) {
    throw new HttpError(400, `a ${FILES_TYPE} body is {"files": [{"source": "...", "text": "..."}]}`)
  }
  return files.map((f: { source: string; text: string }) => [f.source, f.text])
}

class HttpError extends Error {
  readonly status: number
  readonly body: unknown
  readonly headers: Record<string, string>
  constructor(status: number, message: string, body?: unknown, headers: Record<string, string> = {}) {
    super(message)
    this.status = status
    this.body = body
    this.headers = headers
  }
}

function readBody(req: http.IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = []
    let n = 0
    req.on('data', (c: Buffer) => {
      n += c.length
      if (n > MAX_BODY) {
        reject(new HttpError(413, `request body over ${MAX_BODY} bytes`))
        req.destroy()
      } else chunks.push(c)
    })
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')))
    req.on('error', reject)
  })
}

/**
 * Whether a call writes anything: explain and analyze (and a dry-run apply) only read, though they are POSTs. Used
 * for the checks on a browser's requests (dashboard.ts) and for the write token (api-tokens.ts).
 */
function changesState(method: string, what: string | undefined, dryRun: boolean): boolean {
  if (method === 'GET' || method === 'HEAD' || method === 'OPTIONS') return false
  if (method === 'POST' && (what === 'explain' || what === 'analyze' || (what === 'apply' && dryRun))) return false
  return true
}

/** Same content, ignoring what the store sets. */
function sameContent(a: Resource, b: Resource): boolean {
  const strip = (r: Resource) =>
    JSON.stringify({
      apiVersion: r.apiVersion,
      labels: r.metadata.labels ?? {},
      annotations: r.metadata.annotations ?? {},
      spec: r.spec,
    })
  return strip(a) === strip(b)
}

/** What a plain-HTTP request to the HTTPS port is answered (then the connection is closed). */
const PLAIN_HTTP_REFUSED =
  'HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain\r\nconnection: close\r\n\r\n' +
  'this port requires TLS: use https:// (the control plane root is <data-dir>/ca/trust-bundle.pem)\n'

/** What the API's owner sets beyond TLS. */
export interface ApiOptions {
  /** host names (besides loopback and IP addresses) a browser may use for the dashboard */
  allowedHosts?: readonly string[]
  /**
   * the API tokens (`--api-token-file`): with them every change needs a write token; without, the CLI's changes go
   * on as ever and a browser's are refused (api-tokens.ts `writeAccess`)
   */
  tokens?: TokenLookup | null
}

export class ApiServer {
  private readonly cp: ControlPlane
  private readonly dashboard = new DashboardFiles()
  private readonly allowedHosts: ReadonlySet<string>
  private readonly tokens: TokenLookup | null
  private readonly server: http.Server
  /** with TLS: what accepts connections, and hands TLS ones to `server` (a plain-HTTP request is refused) */
  private readonly front: NetServer | null = null
  private readonly sockets = new Set<Socket>()
  address = ''

  /** With `tls`, the API is HTTPS only, with the control plane's certificate (a renewal applies to new connections). */
  constructor(cp: ControlPlane, tls?: ControlTls, options: ApiOptions = {}) {
    this.cp = cp
    this.allowedHosts = new Set((options.allowedHosts ?? []).map((h) => h.toLowerCase()))
    this.tokens = options.tokens ?? null
    const handler = (req: http.IncomingMessage, res: http.ServerResponse) => {
      this.handle(req, res).catch((err: unknown) => {
        const status = err instanceof HttpError ? err.status : 500
        if (status === 500) log('error', 'api', 'request failed', { url: req.url, error: String(err) })
        const body =
          err instanceof HttpError && err.body !== undefined
            ? err.body
            : { error: { message: String((err as Error).message ?? err) } }
        if (!res.headersSent)
          res.writeHead(status, {
            'content-type': 'application/json',
            'x-content-type-options': 'nosniff',
            ...(err instanceof HttpError ? err.headers : {}),
          })
        res.end(`${JSON.stringify(body, null, 2)}\n`)
      })
    }
    if (tls === undefined) {
      this.server = http.createServer(handler)
      return
    }
    const contextOf = () => ({ cert: tls.certificate.certChainPem, key: tls.certificate.privateKeyPem })
    const secure = https.createServer(contextOf(), handler)
    tls.onChange(() => secure.setSecureContext(contextOf()))
    this.server = secure
    // the first byte tells a TLS ClientHello (0x16) from a plain-text request, which is answered in plain text
    this.front = createNetServer((socket) => {
      this.sockets.add(socket)
      socket.once('close', () => this.sockets.delete(socket))
      socket.once('error', () => socket.destroy())
      socket.once('data', (first: Buffer) => {
        socket.pause()
        if (first[0] !== 0x16) return void socket.end(PLAIN_HTTP_REFUSED)
        socket.unshift(first)
        secure.emit('connection', socket)
        process.nextTick(() => socket.resume())
      })
      socket.resume()
    })
  }

  listen(host: string, port: number): Promise<string> {
    const listening = this.front ?? this.server
    return new Promise((resolve, reject) => {
      listening.once('error', reject)
      listening.listen(port, host, () => {
        const a = listening.address() as AddressInfo
        this.address = `${a.address.includes(':') ? `[${a.address}]` : a.address}:${a.port}`
        resolve(this.address)
      })
    })
  }

  close(): Promise<void> {
    return new Promise((resolve) => {
      if (this.front !== null) {
        this.front.close(() => resolve())
        for (const s of this.sockets) s.destroy()
      } else this.server.close(() => resolve())
      this.server.closeAllConnections()
    })
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://api')
    const parts = url.pathname
      .split('/')
      .filter((p) => p !== '')
      .map(decodeURIComponent)
    const method = req.method ?? 'GET'
    const send = (status: number, body: unknown) => {
      res.writeHead(status, { 'content-type': 'application/json', 'x-content-type-options': 'nosniff' })
      res.end(`${JSON.stringify(body, null, 2)}\n`)
    }
    const cp = this.cp
    const changes = changesState(
      method,
      parts[0] === 'api' ? parts[2] : parts[0],
      url.searchParams.get('dryRun') === 'true',
    )
    const refusal =
      checkBrowserRequest(req, changes, this.allowedHosts) ??
      (changes ? writeAccess(this.tokens, fromBrowser(req), req.headers.authorization) : null)
    if (refusal !== null)
      throw new HttpError(
        refusal.status,
        refusal.message,
        undefined,
        refusal.status === 401 ? { 'www-authenticate': 'Bearer realm="loom"' } : {},
      )
    if (method === 'GET' && this.dashboard.serve(url.pathname, res)) return
    if (url.pathname === '/healthz')
      return send(200, {
        status: 'ok',
        revision: cp.store.revision,
        ...(cp.replicas !== null ? { replica: cp.replicas.self.id, leader: cp.replicas.leader } : {}),
      })
    if (parts[0] === 'debug') {
      if (parts[1] === 'nodes') return send(200, cp.knownNodes())
      if (parts[1] === 'rebuild') return send(200, cp.lastRebuild)
      if (parts[1] === 'snapshot') {
        const node = url.searchParams.get('node') ?? ''
        const dump = configDump(cp.xds.cache.getEntry(node), () => cp.snapshotOf(node))
        if (dump === null) throw new HttpError(404, 'no such connected node')
        return send(200, dump)
      }
    }
    if (parts[0] !== 'api' || parts[1] !== 'v1') throw new HttpError(404, `unknown path ${url.pathname}`)
    const what = parts[2]
    if (what === 'apply' && method === 'POST') {
      return send(
        200,
        await this.apply(
          await readBody(req),
          req.headers['x-loom-source'] as string | undefined,
          url.searchParams.get('dryRun') === 'true',
        ),
      )
    }
    if (what === 'resources') {
      if (parts.length === 3 && method === 'GET') {
        const kindArg = url.searchParams.get('kind')
        const kind = kindArg === null ? undefined : this.kind(kindArg)
        return send(200, await cp.store.list(kind, url.searchParams.get('namespace') ?? undefined))
      }
      if (parts.length === 6) {
        const kind = this.kind(parts[3]!)
        const [ns, name] = [parts[4]!, parts[5]!]
        if (method === 'GET') {
          const r = await cp.store.get(kind, ns, name)
          if (r === null) throw new HttpError(404, `${kind} ${ns}/${name} not found`)
          return send(200, r)
        }
        if (method === 'DELETE') {
          const r = await cp.store.delete(kind, ns, name)
          if (r === null) throw new HttpError(404, `${kind} ${ns}/${name} not found`)
          return send(200, { deleted: r })
        }
      }
    }
    if (what === 'workloads') {
      if (parts.length === 3 && method === 'GET') return send(200, cp.registry.workloads())
      if (parts.length === 3 && method === 'POST') {
        let body: unknown
        try {
          body = JSON.parse(await readBody(req))
        } catch {
          throw new HttpError(400, 'the body must be JSON')
        }
        try {
          return send(200, { id: cp.registry.register(body as Parameters<typeof cp.registry.register>[0]) })
        } catch (err) {
          if (err instanceof RegistrationError) throw new HttpError(400, err.message)
          throw err
        }
      }
      const id = `${parts[3]}/${parts[4]}`
      if (parts.length === 6 && parts[5] === 'heartbeat' && method === 'POST') {
        const text = await readBody(req)
        let status: { healthy?: boolean } = {}
        let registration: unknown
        if (text.trim() !== '') {
          try {
            const b = JSON.parse(text) as { healthy?: unknown; registration?: unknown }
            if (typeof b.healthy === 'boolean') status = { healthy: b.healthy }
            registration = b.registration
          } catch {
            throw new HttpError(400, 'the body must be JSON, e.g. {"healthy": true}')
          }
        }
        if (cp.registry.heartbeat(id, status)) return send(200, { id })
        // unknown (a control plane that restarted without it, or an expired registration): a heartbeat that
        // carries its registration registers the workload again
        if (registration === null || typeof registration !== 'object')
          throw new HttpError(404, `workload ${id} is not registered`)
        const r = registration as { name?: unknown; namespace?: unknown }
        if (`${r.namespace ?? 'default'}/${r.name}` !== id)
          throw new HttpError(
            400,
            `the registration in a heartbeat for ${id} names ${r.namespace ?? 'default'}/${r.name}`,
          )
        try {
          cp.registry.register(registration as Parameters<typeof cp.registry.register>[0])
        } catch (err) {
          if (err instanceof RegistrationError) throw new HttpError(400, err.message)
          throw err
        }
        cp.registry.heartbeat(id, status)
        log('info', 'api', 'workload registered again from its heartbeat', { id })
        return send(200, { id, registered: true })
      }
      if (parts.length === 5 && method === 'DELETE') {
        if (!cp.registry.deregister(id)) throw new HttpError(404, `workload ${id} is not registered`)
        return send(200, { id })
      }
      if (parts.length === 6 && parts[5] === 'identity' && method === 'GET') {
        try {
          return send(200, await workloadIdentity(cp, parts[3]!, parts[4]!))
        } catch (err) {
          if (err instanceof DescribeError) throw new HttpError(404, err.message)
          throw err
        }
      }
      if (parts.length === 6 && parts[5] === 'security' && method === 'GET') {
        const w = cp.registry.workloads().find((x) => x.id === id)
        if (w === undefined) {
          const known = cp.registry.workloads().map((x) => x.id)
          throw new HttpError(404, `workload ${id} is not registered; workloads: ${known.join(', ') || '(none)'}`)
        }
        return send(200, workloadSecurity(cp.translateInput(), w))
      }
    }
    if (what === 'describe' && parts[3] === 'service' && parts.length === 6 && method === 'GET') {
      try {
        return send(200, await describeService(cp, parts[4]!, parts[5]!))
      } catch (err) {
        if (err instanceof DescribeError) throw new HttpError(404, err.message)
        throw err
      }
    }
    if (what === 'explain' && method === 'POST') {
      let body: unknown
      try {
        body = JSON.parse(await readBody(req))
      } catch {
        throw new HttpError(400, 'the body must be JSON')
      }
      try {
        return send(200, await explainRequest(cp, body))
      } catch (err) {
        if (err instanceof ExplainError) throw new HttpError(400, err.message)
        throw err
      }
    }
    if (what === 'proxy-status' && method === 'GET') {
      const own = proxyStatusRows(cp.xds.status(), cp.knownNodes(), Date.now(), cp.replicas?.self.id ?? null)
      // replicas: every proxy, each on the replica it is connected to (`?local=true`: this replica's only)
      if (cp.replicas === null || url.searchParams.get('local') === 'true') return send(200, own)
      return send(200, await replicaProxyStatus(cp.replicas, own))
    }
    if (what === 'prometheus' && parts[3] === 'targets' && parts.length === 4 && method === 'GET')
      return send(200, targetGroups(scrapeTargets(cp)))
    if (
      (what === 'stats' ||
        what === 'series' ||
        what === 'edges' ||
        what === 'graph' ||
        what === 'top' ||
        what === 'telemetry') &&
      parts.length === 3 &&
      method === 'GET'
    )
      return send(200, this.telemetryView(what, url.searchParams))
    if (what === 'tap' && parts.length === 5 && method === 'GET') {
      const targets = tapTargets(cp.xds.status(), parts[3]!, parts[4]!)
      if (typeof targets === 'string') throw new HttpError(404, targets)
      return proxyTap(req, res, targets, url.searchParams)
    }
    if (what === 'ratelimits' && method === 'GET') return send(200, { limits: cp.shares.status() })
    if (what === 'services' && method === 'GET') return send(200, cp.registry.services())
    if (what === 'kubernetes' && parts.length === 3 && method === 'GET') {
      const kube = cp.kubernetes
      if (kube === undefined) return send(404, { error: 'the control plane runs without --kubernetes' })
      return send(200, { server: kube.client.server, informers: kube.stats(), rejected: kube.rejected() })
    }
    if (what === 'tokens' && parts.length === 3 && method === 'POST')
      return send(200, this.issueToken(await readBody(req)))
    if (what === 'ca' && parts.length === 3 && method === 'GET') {
      if (cp.ca === null) throw new HttpError(404, 'the control plane runs without a CA')
      return send(200, {
        trustDomain: cp.ca.trustDomain,
        certTtlSeconds: cp.ca.certTtlMs / 1000,
        rootFingerprint: cp.ca.rootFingerprint,
        trustBundle: cp.ca.trustBundleRoots(),
        ...(cp.signing?.stats ?? {}),
      })
    }
    if (what === 'ca' && parts.length === 4 && parts[3] === 'rotate' && method === 'POST') {
      // the rotation state lives in one replica's data directory: rotating there alone would split the mesh's trust
      if (cp.replicas !== null)
        throw new HttpError(
          409,
          'a live root rotation is not shared between replicas yet (the root is published once, in etcd): stop the replicas, run loom control rotate-root on one data directory, delete <prefix>/shared/ca with etcdctl, and start that replica first (docs/control-plane.md)',
        )
      return send(200, await this.rotate(await readBody(req)))
    }
    if (what === 'analyze' && method === 'POST') {
      const body = await readBody(req)
      const source = req.headers['x-loom-source'] as string | undefined
      const files = (req.headers['content-type'] ?? '').startsWith(FILES_TYPE)
      return send(200, await this.analyze(files ? filesOf(body) : [[source ?? '<request>', body]]))
    }
    throw new HttpError(404, `no ${method} ${url.pathname}`)
  }

  /** `/api/v1/stats`, `edges`, `graph`, `top`, `telemetry`: the views of the gathered metrics. */
  private telemetryView(what: string, q: URLSearchParams): unknown {
    const g = this.cp.telemetry
    const gathering = g.status()
    if (what === 'telemetry') return gathering
    if (!g.enabled)
      throw new HttpError(409, 'the control plane gathers no metrics (it was started with --telemetry-interval off)')
    const windowText = q.get('window') ?? (what === 'series' ? '10m' : '1m')
    const windowMs = parseFlagDurationMs(windowText)
    if (windowMs === null || windowMs < 1000)
      throw new HttpError(
        400,
        `window: a duration of 1s or more such as 30s, 1m or 5m is expected, not "${windowText}"`,
      )
    if (windowMs > g.options.retentionMs)
      throw new HttpError(
        400,
        `window: ${windowText} is longer than the ${g.options.retentionMs / 1000} s of history kept (--telemetry-retention)`,
      )
    const namespace = q.get('namespace') || undefined
    const nowMs = Date.now()
    const about = {
      window: windowText,
      windowSeconds: windowMs / 1000,
      gathering: {
        intervalSeconds: gathering.intervalSeconds,
        retentionSeconds: gathering.retentionSeconds,
        rounds: gathering.rounds,
        lastRound: gathering.lastRound,
        proxies: gathering.proxies.length,
        failing: gathering.proxies.filter((p) => p.lastError !== null).map((p) => p.nodeId),
      },
    }
    if (what === 'stats') {
      const r = q.get('resource') ?? 'deployment'
      const resource = RESOURCE_KINDS[r]
      if (resource === undefined)
        throw new HttpError(400, `resource: deployment, service or namespace is expected, not "${r}"`)
      const name = q.get('name') || undefined
      const rows = statRows(
        g,
        {
          resource,
          windowMs,
          nowMs,
          ...(name !== undefined ? { name } : {}),
          ...(namespace !== undefined ? { namespace } : {}),
        },
        this.cp.inventory(),
      )
      return { ...about, resource, rows }
    }
    if (what === 'series') return { ...about, ...this.series(q, windowMs, nowMs) }
    const ns = namespace !== undefined ? { namespace } : {}
    if (what === 'edges') return { ...about, edges: edgeRows(g, { windowMs, nowMs, ...ns }) }
    if (what === 'graph') return { ...about, ...graphOf(g, { windowMs, nowMs, ...ns }, this.cp.inventory()) }
    const limitText = q.get('limit') ?? '20'
    const limit = Number(limitText)
    if (!Number.isInteger(limit) || limit < 1 || limit > 1000)
      throw new HttpError(400, `limit: a number from 1 to 1000 is expected, not "${limitText}"`)
    const service = q.get('service') || undefined
    return {
      ...about,
      paths: topRows(g, {
        windowMs,
        nowMs,
        limit,
        ...(namespace !== undefined ? { namespace } : {}),
        ...(service !== undefined ? { service } : {}),
      }),
    }
  }

  /** `/api/v1/series`: a service's or workload's golden signals per step over the window (series.ts). */
  private series(q: URLSearchParams, windowMs: number, nowMs: number): Record<string, unknown> {
    const r = q.get('resource') ?? 'service'
    const resource = RESOURCE_KINDS[r]
    if (resource !== 'service' && resource !== 'deployment')
      throw new HttpError(400, `resource: service or deployment is expected, not "${r}"`)
    const name = q.get('name') ?? ''
    if (name === '') throw new HttpError(400, 'name: the service or workload is required')
    const namespace = q.get('namespace') || 'default'
    const interval = this.cp.telemetry.options.intervalMs
    const stepText = q.get('step') ?? `${Math.max(15, interval / 1000)}s`
    const stepMs = parseFlagDurationMs(stepText)
    if (stepMs === null || stepMs < interval)
      throw new HttpError(
        400,
        `step: a duration of at least the ${interval / 1000} s between readings is expected, not "${stepText}"`,
      )
    if (windowMs / stepMs > 1000)
      throw new HttpError(400, `step: ${stepText} makes more than 1000 points of the window`)
    const version = q.get('version') || undefined
    const points = seriesPoints(this.cp.telemetry, {
      resource,
      name,
      namespace,
      windowMs,
      stepMs,
      nowMs,
      ...(version !== undefined ? { version } : {}),
    })
    return {
      resource,
      name,
      namespace,
      ...(version !== undefined ? { version } : {}),
      stepSeconds: stepMs / 1000,
      points,
    }
  }

  /** A live root rotation (body: {"propagationSeconds": n, "overlapSeconds": n}, both optional). */
  private async rotate(text: string): Promise<unknown> {
    const ca = this.cp.ca
    if (ca === null) throw new HttpError(409, 'the control plane runs without a CA')
    let b: { propagationSeconds?: unknown; overlapSeconds?: unknown } = {}
    if (text.trim() !== '') {
      try {
        b = JSON.parse(text) as typeof b
      } catch {
        throw new HttpError(400, 'the body must be JSON: {"propagationSeconds": 30, "overlapSeconds": 172800}')
      }
    }
    const seconds = (v: unknown, field: string): number | undefined => {
      if (v === undefined) return undefined
      if (typeof v !== 'number' || !Number.isFinite(v) || v < 0)
        throw new HttpError(400, `${field}: a number of seconds (0 or more) is expected`)
      return v * 1000
    }
    const propagation = seconds(b.propagationSeconds, 'propagationSeconds') ?? DEFAULT_ROTATION_PROPAGATION_MS
    const overlap = seconds(b.overlapSeconds, 'overlapSeconds')
    const previous = ca.rootFingerprint
    try {
      await this.cp.rotateRoot(propagation, overlap)
    } catch (err) {
      throw new HttpError(409, (err as Error).message)
    }
    return {
      previousRoot: previous,
      nextRoot: ca.rotationState().pending?.fingerprint256,
      signingFrom: ca.rotationState().pending?.activateAt,
      overlapSeconds: (overlap ?? ca.rotationOverlapMs) / 1000,
      trustBundle: ca.trustBundleRoots(),
    }
  }

  /** A bootstrap token; its contents are never logged. */
  private issueToken(text: string): unknown {
    const tokens = this.cp.tokens
    if (tokens === null || this.cp.ca === null)
      throw new HttpError(409, 'the control plane runs without a CA: it issues no certificates, so no tokens')
    let b: { namespace?: unknown; serviceAccount?: unknown; ttlSeconds?: unknown }
    try {
      b = JSON.parse(text) as typeof b
    } catch {
      throw new HttpError(
        400,
        'the body must be JSON: {"namespace": "...", "serviceAccount": "...", "ttlSeconds": 3600}',
      )
    }
    if (b === null || typeof b !== 'object') throw new HttpError(400, 'the body must be a JSON object')
    const ns = b.namespace ?? 'default'
    const sa = b.serviceAccount
    if (typeof ns !== 'string') throw new HttpError(400, 'namespace: a string is expected')
    if (typeof sa !== 'string' || sa === '') throw new HttpError(400, 'serviceAccount: required (a string)')
    if (b.ttlSeconds !== undefined && (typeof b.ttlSeconds !== 'number' || !Number.isFinite(b.ttlSeconds)))
      throw new HttpError(400, 'ttlSeconds: a number is expected')
    let issued: ReturnType<typeof tokens.issue>
    try {
      issued = tokens.issue(ns, sa, b.ttlSeconds === undefined ? undefined : (b.ttlSeconds as number) * 1000)
    } catch (err) {
      throw new HttpError(400, (err as Error).message)
    }
    const spiffeId = `spiffe://${this.cp.ca.trustDomain}/ns/${ns}/sa/${sa}`
    log('info', 'api', 'bootstrap token issued', {
      spiffe_id: spiffeId,
      token_id: issued.claims.id,
      expires_at: new Date(issued.claims.expiresAt).toISOString(),
    })
    return {
      token: issued.token,
      namespace: ns,
      serviceAccount: sa,
      spiffeId,
      expiresAt: new Date(issued.claims.expiresAt).toISOString(),
    }
  }

  private kind(name: string): string {
    const k = lookupKind(name)
    if (k === undefined) throw new HttpError(400, `unknown kind "${name}"`)
    return k.kind
  }

  /** Diagnostics for the stored config with the files' resources applied over it (nothing is written). */
  private async analyze(files: [string, string][]): Promise<unknown> {
    const parsed: ManifestResult = { resources: [], origins: [], errors: [], skipped: [] }
    for (const [source, text] of files) {
      const r = parseManifests(text, source)
      parsed.resources.push(...r.resources)
      parsed.origins.push(...r.origins)
      parsed.errors.push(...r.errors)
    }
    if (parsed.errors.length > 0) throw new HttpError(422, 'invalid manifests', { errors: parsed.errors })
    return { diagnostics: await this.diagnose(parsed, { overlay: true }) }
  }

  /**
   * What `analyze` finds in the stored config and the registered workloads with `parsed` laid over it (`overlay`; or,
   * once written, as stored, with their creation times), located in the manifests; with `only` (resource keys), only
   * the diagnostics of those resources.
   */
  private async diagnose(
    parsed: ManifestResult,
    { only, overlay }: { only?: ReadonlySet<string>; overlay: boolean },
  ): Promise<Diagnostic[]> {
    const merged = new Map<string, Resource>()
    for (const r of (await this.cp.store.list()).items) merged.set(keyOf(r), r)
    const origins = new Map<string, { source: string; index: number }>()
    parsed.resources.forEach((r, i) => {
      if (overlay || !merged.has(keyOf(r))) merged.set(keyOf(r), r)
      origins.set(keyOf(r), parsed.origins[i]!)
    })
    const resources = [...merged.values()]
    const registry = new Registry()
    registry.setResources(resources)
    for (const w of this.cp.registry.workloads()) registry.register({ ...w, ttlSeconds: 3600 })
    return locate(analyze(resources, registry.services(), this.cp.meshConfig, only), origins)
  }

  /** Validates every document, then writes the changed ones in one transaction (or none). */
  private async apply(text: string, source = '<request>', dryRun = false): Promise<unknown> {
    const parsed = parseManifests(text, source)
    if (parsed.errors.length > 0) {
      throw new HttpError(422, 'invalid manifests', { errors: parsed.errors })
    }
    const results: { kind: string; namespace: string; name: string; action: string; resourceVersion?: string }[] = []
    const changed: Resource[] = []
    for (const r of parsed.resources) {
      const prev = await this.cp.store.get(r.kind, r.metadata.namespace, r.metadata.name)
      const action = prev === null ? 'created' : sameContent(prev, r) ? 'unchanged' : 'configured'
      results.push({ kind: r.kind, namespace: r.metadata.namespace, name: r.metadata.name, action })
      if (action !== 'unchanged') changed.push(r)
    }
    if (!dryRun && changed.length > 0) {
      try {
        const written = await this.cp.store.putAll(changed)
        for (const w of written) {
          const res = results.find(
            (x) => x.kind === w.kind && x.namespace === w.metadata.namespace && x.name === w.metadata.name,
          )
          if (res !== undefined && w.metadata.resourceVersion !== undefined)
            res.resourceVersion = w.metadata.resourceVersion
        }
      } catch (err) {
        if (err instanceof StoreConflictError) throw new HttpError(409, err.message)
        throw err
      }
    }
    // what analyze finds in what was written (or would be, for a dry run), with the rest of the store as it is
    const warnings =
      changed.length === 0 ? [] : await this.diagnose(parsed, { only: new Set(changed.map(keyOf)), overlay: dryRun })
    return { dryRun, results, warnings, skipped: parsed.skipped }
  }
}

/**
 * The proxies of every replica: this one's rows, then each other replica's own (`?local=true`, over its plain-HTTP
 * API, 2 s at most); a replica that does not answer is logged and left out, the others still shown.
 */
async function replicaProxyStatus(replicas: ReplicaSet, own: ProxyStatusRow[]): Promise<ProxyStatusRow[]> {
  const others = (await replicas.list()).filter((r) => r.id !== replicas.self.id)
  const rows = await Promise.all(
    others.map(async (r) => {
      try {
        const res = await fetch(`http://${r.api}/api/v1/proxy-status?local=true`, { signal: AbortSignal.timeout(2000) })
        if (!res.ok) throw new Error(`HTTP ${res.status}`)
        return (await res.json()) as ProxyStatusRow[]
      } catch (err) {
        log('warn', 'control', 'a replica did not say which proxies it has', {
          replica: r.id,
          api: r.api,
          error: String(err),
        })
        return []
      }
    }),
  )
  return [...own, ...rows.flat()].sort(
    (a, b) => a.nodeId.localeCompare(b.nodeId) || String(a.replica).localeCompare(String(b.replica)),
  )
}
