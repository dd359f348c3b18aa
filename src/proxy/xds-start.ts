/**
 * Connects a running proxy to its control plane: the ADS client, the node identity the control plane builds config
 * for, and the consumer that applies (or NACKs) what arrives. RDS and EDS subscriptions follow the listeners and
 * clusters as they change.
 */
import { setTracingNode } from './tracing/tracer.js'
import { hostname } from 'node:os'
import type * as grpc from '@grpc/grpc-js'
import { log } from '../core/log.js'
import { VERSION } from '../core/version.js'
import { AdsClient, grpcTarget } from '../xds/client.js'
import { TYPE_URL } from '../xds/snapshot.js'
import { ShareReporter } from './http/filters/global-ratelimit/reporter.js'
import type { ProxyServer } from './proxy.js'
import { OnDemandHosts } from './route/on-demand.js'
import { XdsConsumer } from './xds-consumer.js'

export interface XdsStartOptions {
  /** host:port of the ADS server, or of each of its replicas (`--xds a:15010,b:15010`; the proxy moves between them) */
  servers: readonly string[]
  /** TLS to the control plane (xds-credentials.ts); plain text without */
  credentials?: grpc.ChannelCredentials | undefined
  /** incremental ADS (default) or state of the world */
  protocol?: 'sotw' | 'delta'
  /**
   * VHDS on demand (delta only): the outbound virtual hosts come one by one as requests ask for them
   * (route/on-demand.ts); `idleMs` after its last asking request a host is dropped
   */
  onDemand?: { timeoutMs?: number; idleMs?: number }
  /** every outbound virtual host as its own resource (VHDS, delta only; `loom proxy --vhds`) */
  vhds?: boolean
  node: string | undefined
  kind: 'sidecar' | 'gateway'
  namespace: string
  labels: Record<string, string>
  serviceAccount: string
  ip: string
  metadata: Record<string, string>
  /** the proxy's locality (node.locality): from --locality, else the bootstrap's node.locality */
  locality?: { region?: string; zone?: string; sub_zone?: string }
}

/** How a TLS verification failure shows in a gRPC error (node's and OpenSSL's words). */
const TLS_VERIFY_FAILURE = /certificate|self[- ]signed|unable to verify|altname|CERT_/i

/** Istio's node id shape: `<kind>~<ip>~<pod>.<namespace>~<namespace>.svc.cluster.local` (gateways are `router`). */
export function defaultNodeId(o: XdsStartOptions): string {
  const name = `${o.labels.app ?? hostname()}-${process.pid}`
  return `${o.kind === 'gateway' ? 'router' : 'sidecar'}~${o.ip}~${name}.${o.namespace}~${o.namespace}.svc.cluster.local`
}

export async function startXds(proxy: ProxyServer, o: XdsStartOptions): Promise<AdsClient> {
  const consumer = new XdsConsumer(proxy)
  const id = o.node ?? defaultNodeId(o)
  setTracingNode(id, o.locality?.zone)
  // asked for (--vhds), a sidecar on delta xDS takes its outbound virtual hosts as their own resources (VHDS)
  const vhds =
    o.vhds === true && o.kind !== 'gateway' && o.onDemand === undefined && (o.protocol ?? 'delta') === 'delta'
  const metadata = {
    ...o.metadata,
    NAMESPACE: o.namespace,
    LABELS: o.labels,
    SERVICE_ACCOUNT: o.serviceAccount,
    INSTANCE_IPS: o.ip,
    NODE_KIND: o.kind,
    GENERATOR: 'envoy',
    // on delta xDS: virtual hosts as their own resources (VHDS), all of them, or those asked for on demand
    ...(o.onDemand !== undefined ? { LOOM_ON_DEMAND: 'true' } : vhds ? { LOOM_VHDS: 'true' } : {}),
    // where the control plane reads this proxy's metrics and live requests (`loom stat`, `loom tap`)
    ...(proxy.adminAddress !== null ? { ADMIN_ADDRESS: proxy.adminAddress } : {}),
  }
  // the listeners that arrive report and exchange this workload (Istio's stats filters)
  proxy.setNode({ id, metadata })
  if (o.onDemand !== undefined && (o.protocol ?? 'delta') !== 'delta')
    throw new Error('on-demand virtual hosts need delta xDS (--xds-protocol delta)')
  const onDemand =
    o.onDemand === undefined
      ? null
      : new OnDemandHosts({
          subscribe: (aliases) => client.subscribe(TYPE_URL.virtualHost, aliases),
          ...o.onDemand,
        })
  proxy.onDemand = onDemand
  const client: AdsClient = new AdsClient({
    server: o.servers,
    ...(o.credentials !== undefined ? { credentials: o.credentials } : {}),
    protocol: o.protocol ?? 'delta',
    // every virtual host (VHDS) when not asking for them on demand
    ...(vhds ? { wildcardTypes: [TYPE_URL.listener, TYPE_URL.cluster, TYPE_URL.virtualHost] } : {}),
    node: {
      id,
      cluster: o.labels.app ?? 'loom',
      metadata,
      locality: o.locality ?? {},
    },
    userAgentVersion: VERSION,
    onResources: async (typeUrl, version, resources, removed, aliases) => {
      const verdict = await consumer.onResources(typeUrl, version, resources, removed)
      // answered (found, not found, or rejected): the requests waiting for these hosts route again
      if (aliases !== undefined) onDemand?.answered(aliases)
      if (verdict.ok && (typeUrl === TYPE_URL.listener || typeUrl === TYPE_URL.cluster)) {
        client.subscribe(TYPE_URL.route, consumer.routeNames())
        client.subscribe(TYPE_URL.endpoint, consumer.endpointNames())
        client.subscribe(TYPE_URL.secret, consumer.secretNames())
      }
      return verdict
    },
  })
  // Envoy's control_plane.* stats, and what a move between replicas costs: responses it had to take again
  const counters = proxy.stats.forCounters('control_plane.').values
  counters.connections = 0
  counters.responses = 0
  counters.rejected = 0
  client.on('connecting', () => counters.connections!++)
  client.on('response', (_type: string, _version: string, ok: boolean) => {
    counters.responses!++
    if (!ok) counters.rejected!++
  })
  client.on('disconnected', (why: unknown, from: unknown) => {
    const text = String(why)
    if (o.credentials !== undefined && TLS_VERIFY_FAILURE.test(text))
      log('error', 'xds', "the control plane's TLS certificate does not verify against --xds-ca; not connecting", {
        server: from,
        why: text,
      })
    else
      log('warn', 'xds', 'control plane disconnected; serving the last config', {
        server: from,
        why: text,
        ...(o.servers.length > 1 ? { next: client.server } : {}),
      })
  })
  client.start()
  // the bootstrap's TLS contexts may name secrets served over ADS: ask for them before any LDS/CDS response
  const secrets = consumer.secretNames()
  if (secrets.length > 0) client.subscribe(TYPE_URL.secret, secrets)
  // global rate limits: shares from the same control plane, on the same address (the stream opens on first use)
  const target = grpcTarget(o.servers, o.credentials !== undefined)
  new ShareReporter({ server: target, nodeId: id, credentials: o.credentials }).attach()
  log('info', 'xds', 'connecting', {
    server: client.server,
    ...(o.servers.length > 1 ? { servers: o.servers } : {}),
    tls: o.credentials !== undefined,
    node: id,
    protocol: client.protocol,
    ...(o.locality === undefined ? {} : { locality: o.locality }),
  })
  return client
}

/** How long a proxy waits for its first config and secrets before it says it is ready anyway (Envoy's default). */
export const INITIAL_FETCH_TIMEOUT_MS = 15_000

/**
 * Releases `release` (a `ProxyServer.holdLive` hold) once the proxy holds its first config from the control plane:
 * a listener and a cluster response accepted, then, for what they name, a route and a load assignment response
 * accepted and every secret present (its certificate from the identity client or SDS, the trust bundle). So
 * `/ready` says LIVE when requests can be served, as Envoy's init manager does; after `timeoutMs` the proxy is
 * released anyway, with a warning naming what it still lacks.
 */
export function holdUntilInitialized(
  proxy: ProxyServer,
  client: AdsClient,
  release: () => void,
  timeoutMs = INITIAL_FETCH_TIMEOUT_MS,
): void {
  const t0 = performance.now()
  const accepted = new Set<string>()
  const unsubscribe = new Map<string, () => void>()
  const lacking = (): string[] => {
    const out: string[] = []
    for (const t of [TYPE_URL.listener, TYPE_URL.cluster]) if (!accepted.has(t)) out.push(t)
    if (out.length > 0) return out
    if (proxy.routeNames().length > 0 && !accepted.has(TYPE_URL.route)) out.push(TYPE_URL.route)
    if (proxy.endpointNames().length > 0 && !accepted.has(TYPE_URL.endpoint)) out.push(TYPE_URL.endpoint)
    for (const n of proxy.secretNames()) if (proxy.secrets.get(n) === undefined) out.push(`secret ${n}`)
    return out
  }
  const finish = () => {
    clearTimeout(timer)
    client.off('response', onResponse)
    for (const u of unsubscribe.values()) u()
    release()
  }
  const check = () => {
    const missing = lacking()
    if (missing.length === 0) {
      log('info', 'xds', 'initial config in place', { ms: Math.round(performance.now() - t0) })
      return finish()
    }
    // a secret that arrives later (the identity client's certificate) checks again
    for (const m of missing) {
      if (!m.startsWith('secret ')) continue
      const name = m.slice('secret '.length)
      if (!unsubscribe.has(name)) unsubscribe.set(name, proxy.secrets.subscribe(name, check))
    }
  }
  const onResponse = (typeUrl: string, _version: string, ok: boolean) => {
    if (!ok) return
    accepted.add(typeUrl)
    check()
  }
  const timer = setTimeout(() => {
    log('warn', 'xds', 'no complete initial config in time; ready anyway', { ms: timeoutMs, lacking: lacking() })
    finish()
  }, timeoutMs)
  timer.unref()
  client.on('response', onResponse)
}
