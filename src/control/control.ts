/**
 * `loom control`: the store, the registry, the translator and the xDS server, wired together.
 *
 *   store (Istio resources) ──watch──┐
 *                                    ├─► registry ─► translate(node) per connected proxy ─► xDS snapshot cache ─► ADS
 *   self-registered workloads ───────┘
 *
 * Every change (a write, a workload registering or expiring) schedules one rebuild, debounced, of the snapshots of
 * the connected proxies the change may affect. Proxies alike in what their outbound config depends on share that
 * translation, and each rebuild translates only the parts the change touched (translate/incremental.ts).
 */
import { createHash } from 'node:crypto'
import type { FSWatcher } from 'node:fs'
import { closeSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, writeSync } from 'node:fs'
import { basename, dirname, join } from 'node:path'
import type { Resource } from '../api/resource.js'
import { log } from '../core/log.js'
import { certificateService } from '../xds/ca-service.js'
import { rateLimitSharesService } from '../xds/ratelimit-service.js'
import type { NodeInfo } from '../xds/server.js'
import { XdsServer } from '../xds/server.js'
import { type ProxyNode, type Snapshot, TYPE_URL } from '../xds/snapshot.js'
import { type CaOptions, CertificateAuthority, caFiles } from './ca/ca.js'
import { type Credential, credentialsDir, readCredentials, watchCredentials } from './credentials.js'
import { SigningService } from './ca/signing-service.js'
import { TokenIssuer, tokenKeyFile } from './ca/tokens.js'
import type { KubernetesSource } from './kubernetes/source.js'
import { type RegisteredWorkload, Registry } from './registry/registry.js'
import { ShareServer } from './ratelimit/share-server.js'
import { FileStore } from './store/file-store.js'
import { Gatherer, type ScrapeTarget } from './telemetry/gatherer.js'
import type { InventoryWorkload } from './telemetry/views.js'
import type { ReplicaSet } from './replicas.js'
import type { Store, Watch } from './store/store.js'
import { BatchTranslator, type MeshConfig, type TranslateInput, type TranslateNode } from './translate/translate.js'
import { onDemand } from './translate/vhds.js'
import { OUTBOUND_ROUTE } from './translate/listeners.js'
import { resolveHost } from './registry/hostname.js'

export interface ControlOptions {
  dataDir: string
  /** store implementation; default a FileStore in dataDir */
  store?: Store
  /** debounce for rebuilding snapshots after changes, ms (default 50) */
  rebuildDebounceMs?: number
  /** how often expired workload registrations are pruned, ms (default 1000) */
  expiryIntervalMs?: number
  /**
   * keep self-registered workloads in `<dataDir>/workloads.json`, so a restarted control plane has them at once
   * (default: with the embedded store, that is when `store` is not given)
   */
  persistRegistrations?: boolean
  /**
   * where self-registered workloads are kept for every control plane sharing them (the etcd store's registrations,
   * under leases of their TTL); their expiry is then the keeper's, not the registry's clock
   */
  registrations?: RegistrationKeeper
  /** mesh-wide settings (Istio's MeshConfig, the parts Loom reads), e.g. `pathNormalization` */
  meshConfig?: MeshConfig
  /**
   * the certificate authority that issues workload certificates (its root in `<dataDir>/ca` unless `dir` says
   * otherwise); false: none
   */
  ca?: (Omit<CaOptions, 'dir'> & { dir?: string }) | false
  /**
   * reading the connected proxies' metrics for `loom stat/top/edges/graph`: every `intervalMs` (default 5000; 0:
   * never), keeping `retentionMs` of history (default 10 min)
   */
  telemetry?: { intervalMs?: number; retentionMs?: number }
  /**
   * makes files that must be one for every replica (the generated CA root and its state, the token signing key) the
   * cluster's before they are opened: `create` makes them as a lone control plane would (replicas.ts sharedFiles)
   */
  shareFiles?: (name: string, dir: string, files: string[], create: () => Promise<void>) => Promise<void>
  /**
   * Kubernetes as a source (`--kubernetes`): its Services and EndpointSlices join the registry, its Istio custom
   * resources the store's resources; started (and listed once) before the control plane serves
   */
  kubernetes?: KubernetesSource
}

/** Keeps the registry's self-registered workloads somewhere shared (EtcdRegistrations). */
export interface RegistrationKeeper {
  /** loads what is kept into `registry`, then keeps the two in step until `close` */
  attach(registry: Registry): Promise<void>
  close(): Promise<void>
}

/** How often the control plane reads its proxies' metrics by default, ms. */
export const DEFAULT_TELEMETRY_INTERVAL_MS = 5000
/** How much history of them it keeps by default, ms. */
export const DEFAULT_TELEMETRY_RETENTION_MS = 10 * 60_000

/** The directory of the control plane's CA: the generated root and the rotation state. */
export function caDir(dataDir: string): string {
  return join(dataDir, 'ca')
}

/**
 * The control plane's trust bundle, PEM (the active root, a rotation's next root, previous roots in their overlap):
 * what a proxy (`--xds-ca`) or the CLI (`--ca-bundle`) verifies the control plane's TLS certificate with. Rewritten
 * whenever the bundle changes.
 */
export function trustBundleFile(dataDir: string): string {
  return join(caDir(dataDir), 'trust-bundle.pem')
}

/** The SDS name of the trust bundle the control plane serves every proxy over ADS (Istio's name). */
export const ROOTCA_SECRET = 'ROOTCA'

/** how many namespaces without a connected sidecar the snapshot cache is warmed for (`ControlPlane.warm`) */
const WARM_NAMESPACES = 4
/** how long after a rebuild the cache is warmed: its pushes go first */
const WARM_DELAY_MS = 200

/** The file self-registered workloads are kept in. */
export function registrationsFile(dataDir: string): string {
  return join(dataDir, 'workloads.json')
}

/** Writes `text` to `file` so that a crash leaves either the old or the new content: tmp, fsync, rename. */
function writeAtomic(file: string, text: string): void {
  const tmp = `${file}.tmp`
  const fd = openSync(tmp, 'w')
  try {
    writeSync(fd, text)
    fsyncSync(fd)
  } finally {
    closeSync(fd)
  }
  renameSync(tmp, file)
}

/**
 * The registry hostnames a proxy's VirtualHost subscriptions name: each `outbound/<host>[:port]` whose host is a
 * service's hostname or one of its short names from the proxy's namespace. Other names match nothing.
 */
export function scopeOf(
  names: Iterable<string>,
  namespace: string,
  known: ReadonlySet<string>,
  domainSuffix?: string,
): Set<string> {
  const out = new Set<string>()
  const prefix = `${OUTBOUND_ROUTE}/`
  for (const n of names) {
    if (!n.startsWith(prefix)) continue
    let host = n.slice(prefix.length)
    const colon = host.lastIndexOf(':')
    if (colon > 0 && /^\d+$/.test(host.slice(colon + 1))) host = host.slice(0, colon)
    if (host === '') continue
    const fqdn = resolveHost(host, namespace, (h) => known.has(h), domainSuffix)
    if (known.has(fqdn)) out.add(fqdn)
  }
  return out
}

/** What the control plane knows about a proxy, from its xDS node. */
export function proxyNodeOf(n: NodeInfo): TranslateNode {
  const md = n.metadata
  const str = (k: string, d: string) => (typeof md[k] === 'string' && md[k] !== '' ? (md[k] as string) : d)
  const parts = n.id.split('~')
  const labels: Record<string, string> = {}
  if (md.LABELS !== null && typeof md.LABELS === 'object') {
    for (const [k, v] of Object.entries(md.LABELS as Record<string, unknown>)) labels[k] = String(v)
  }
  const kind = str('NODE_KIND', parts[0] === 'router' ? 'gateway' : 'sidecar') === 'gateway' ? 'gateway' : 'sidecar'
  const namespace = str('NAMESPACE', parts[2]?.split('.')[1] ?? 'default')
  // Without GENERATOR, gRPC's user agents ('gRPC Node Pure JS', 'gRPC Go', 'gRPC C-core'...) mark a proxyless client.
  const grpcAgent = n.userAgentName?.toLowerCase().includes('grpc') === true
  const generator = str('GENERATOR', grpcAgent ? 'grpc' : 'envoy') === 'grpc' ? 'grpc' : 'envoy'
  return {
    id: n.id,
    kind,
    namespace,
    labels,
    serviceAccount: str('SERVICE_ACCOUNT', 'default'),
    ip: str('INSTANCE_IPS', parts[1] ?? '127.0.0.1').split(',')[0]!,
    generator,
    metadata: md,
    ...(n.locality !== undefined ? { locality: n.locality } : {}),
  }
}

/**
 * A proxy's workload as Istio names it (the deployment: `reviews-v1`): node metadata WORKLOAD_NAME, else the pod
 * part of its node id (`sidecar~ip~<pod>.<ns>~...`).
 */
export function workloadOfNode(node: TranslateNode): string {
  const named = node.metadata?.WORKLOAD_NAME
  if (typeof named === 'string' && named !== '') return named
  return node.id.split('~')[2]?.split('.')[0] || node.id
}

export class ControlPlane {
  readonly store: Store
  readonly registry: Registry
  readonly xds: XdsServer
  /** issues the workloads' X.509-SVIDs; null when the control plane runs without a CA */
  readonly ca: CertificateAuthority | null
  /** issues and checks the bootstrap tokens workloads get their first certificate with; null without a CA */
  readonly tokens: TokenIssuer | null
  /** the certificate signing service on the xDS port; null without a CA */
  readonly signing: SigningService | null
  /** global rate limits: proxies' demand in, their shares out, on the xDS port */
  readonly shares = new ShareServer()
  /** the connected proxies' metrics, read from their admin endpoints, and a short history of them */
  readonly telemetry: Gatherer
  private readonly options: ControlOptions
  /** the Kubernetes source, with --kubernetes */
  get kubernetes(): KubernetesSource | undefined {
    return this.options.kubernetes
  }
  private resources: Resource[] = []
  /** the store's own resources (without the Kubernetes source's) */
  private storeResources: Resource[] = []
  private watch: Watch | null = null
  private credentialsWatch: FSWatcher | null = null
  /** gateway credentials (`<dataDir>/credentials`), read again after the directory changes */
  private credentials: Map<string, Credential> | null = null
  private readonly nodes = new Map<string, TranslateNode>()
  private rebuildTimer: NodeJS.Timeout | null = null
  private expiryTimer: NodeJS.Timeout | null = null
  private bundleTimer: NodeJS.Timeout | null = null
  private rootcaEntry: { version: string; items: Map<string, Record<string, unknown>> } | null = null
  private readonly bundleListeners = new Set<(signerChanged: boolean) => void>()
  /** the other replicas on the same etcd, and whether this one leads (set by `loom control` once it listens) */
  replicas: ReplicaSet | null = null
  /** ms the last rebuild took, and how many proxies it covered (for /debug and the benchmark) */
  lastRebuild: { ms: number; proxies: number; changed: number; revision: number; at: string; scopesOnly?: boolean } = {
    ms: 0,
    proxies: 0,
    changed: 0,
    revision: 0,
    at: '',
  }

  private constructor(
    store: Store,
    options: ControlOptions,
    ca: CertificateAuthority | null,
    tokens: TokenIssuer | null,
  ) {
    this.store = store
    this.registry = new Registry({ expiresElsewhere: options.registrations !== undefined })
    this.ca = ca
    this.tokens = tokens
    this.signing = ca !== null && tokens !== null ? new SigningService(ca, tokens) : null
    this.options = options
    this.xds = new XdsServer({
      snapshotFor: (node) => this.onNode(node),
      pushDebounceMs: 0,
      onSubscription: (node, typeUrl, names) => this.onSubscription(node, typeUrl, names),
    })
    this.xds.addService(rateLimitSharesService, this.shares.handlers())
    this.telemetry = new Gatherer({
      intervalMs: options.telemetry?.intervalMs ?? DEFAULT_TELEMETRY_INTERVAL_MS,
      retentionMs: options.telemetry?.retentionMs ?? DEFAULT_TELEMETRY_RETENTION_MS,
      targets: () => this.scrapeTargets(),
    })
    if (this.signing !== null) this.xds.addService(certificateService, this.signing.handlers())
  }

  static async open(options: ControlOptions): Promise<ControlPlane> {
    mkdirSync(options.dataDir, { recursive: true })
    // the CA first: a CA that cannot be used stops the start before anything else is opened
    const share = options.shareFiles
    let ca: CertificateAuthority | null = null
    if (options.ca !== false) {
      const caOptions = { ...options.ca, dir: options.ca?.dir ?? caDir(options.dataDir) }
      // a supplied CA is the operator's to give every replica; a generated one is made once for all
      if (share !== undefined && caOptions.supplied === undefined)
        await share(
          'ca',
          caOptions.dir,
          Object.values(caFiles(caOptions.dir)).map((f) => basename(f)),
          async () => {
            await CertificateAuthority.open(caOptions)
          },
        )
      ca = await CertificateAuthority.open(caOptions)
    }
    const tokenFile = tokenKeyFile(options.dataDir)
    if (ca !== null && share !== undefined)
      await share('token-key', dirname(tokenFile), [basename(tokenFile)], async () => {
        TokenIssuer.open(tokenFile)
      })
    const tokens = ca === null ? null : TokenIssuer.open(tokenFile)
    const store = options.store ?? (await FileStore.open(options.dataDir))
    const cp = new ControlPlane(store, options, ca, tokens)
    const { revision, items } = await store.list()
    const kube = options.kubernetes
    if (kube !== undefined) {
      await kube.start()
      cp.registry.setPlatformServices(kube.services())
      kube.onChange(() => {
        cp.registry.setPlatformServices(kube.services())
        cp.setResources(cp.storeResources)
      })
    }
    cp.setResources(items)
    // one transaction can carry thousands of events: reload once after the burst, not once per event
    cp.watch = store.watch(revision, () => cp.scheduleReload())
    if (options.registrations !== undefined) await options.registrations.attach(cp.registry)
    else if (options.persistRegistrations ?? options.store === undefined) cp.persistRegistrations()
    cp.registry.onChange(() => cp.scheduleRebuild())
    cp.credentialsWatch = watchCredentials(credentialsDir(options.dataDir), () => {
      cp.credentials = null
      cp.scheduleRebuild()
    })
    cp.expiryTimer = setInterval(() => cp.registry.expire(), options.expiryIntervalMs ?? 1000)
    cp.telemetry.start()
    cp.expiryTimer.unref()
    if (ca !== null) {
      // a live rotation interrupted by a restart continues: its next root signs when it was to
      cp.onBundleChanged()
    }
    return cp
  }

  /**
   * Starts a live root rotation (`POST /api/v1/ca/rotate`): the next root joins the trust bundle every proxy is
   * pushed now (SDS `ROOTCA`); after `propagationMs` it signs the leaves proxies renew to, and the previous root
   * leaves the bundle `overlapMs` later.
   */
  async rotateRoot(propagationMs: number, overlapMs?: number): Promise<void> {
    if (this.ca === null) throw new Error('the control plane has no CA')
    await this.ca.beginRotation(propagationMs, overlapMs)
    this.onBundleChanged()
  }

  /** Called with `true` when a new root starts signing, `false` when only the bundle changed. */
  onTrustBundleChange(fn: (signerChanged: boolean) => void): void {
    this.bundleListeners.add(fn)
  }

  /** The trust bundle changed (or is about to change by itself): file, SDS push, listeners, next timer. */
  private onBundleChanged(signerChanged = false): void {
    const ca = this.ca
    if (ca === null) return
    this.rootcaEntry = null
    try {
      mkdirSync(caDir(this.options.dataDir), { recursive: true })
      writeAtomic(trustBundleFile(this.options.dataDir), ca.trustBundle().join(''))
    } catch (err) {
      log('warn', 'control', 'cannot write the trust bundle file', { error: String(err) })
    }
    this.scheduleRebuild()
    for (const l of this.bundleListeners) l(signerChanged)
    if (this.bundleTimer !== null) clearTimeout(this.bundleTimer)
    this.bundleTimer = null
    const next = ca.nextBundleChange()
    if (next === null) return
    this.bundleTimer = setTimeout(
      () => {
        this.bundleTimer = null
        const due = ca.pendingActivation()
        if (due !== null && due <= Date.now()) {
          ca.activatePending().then(
            (activated) => {
              if (activated)
                log('info', 'control', 'the new root signs now; the previous one stays trusted for the overlap', {
                  root: ca.rootFingerprint,
                })
              this.onBundleChanged(activated)
            },
            (err: unknown) => log('error', 'control', 'cannot activate the next root', { error: String(err) }),
          )
        } else this.onBundleChanged()
      },
      Math.max(0, Math.min(next - Date.now() + 5, 2 ** 31 - 1)),
    )
    this.bundleTimer.unref()
  }

  /** The SDS secret `ROOTCA` every proxy is served: the CA's trust bundle, versioned by its content. */
  private rootca(): { version: string; items: Map<string, Record<string, unknown>> } | null {
    if (this.ca === null) return null
    if (this.rootcaEntry === null) {
      const pem = this.ca.trustBundle().join('')
      this.rootcaEntry = {
        version: createHash('sha256').update(pem).digest('hex').slice(0, 16),
        items: new Map([
          [ROOTCA_SECRET, { name: ROOTCA_SECRET, validation_context: { trusted_ca: { inline_string: pem } } }],
        ]),
      }
    }
    return this.rootcaEntry
  }

  private reloadPending = false
  private savePending = false
  private savedRegistrations = ''

  /**
   * Restores the registrations saved by the previous run (each gets a full TTL to heartbeat again), then saves
   * them after every change: register, deregister, a change of health, expiry. Plain heartbeats write nothing.
   */
  private persistRegistrations(): void {
    const file = registrationsFile(this.options.dataDir)
    let saved: RegisteredWorkload[] = []
    try {
      saved = (JSON.parse(readFileSync(file, 'utf8')) as { workloads?: RegisteredWorkload[] }).workloads ?? []
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT')
        log('warn', 'control', 'cannot read the saved registrations; starting without them', {
          file,
          error: String(err),
        })
    }
    const n = this.registry.restore(saved)
    if (n > 0) log('info', 'control', 'registrations restored', { file, workloads: n })
    this.savedRegistrations = this.registrationsText()
    this.registry.onChange(() => {
      if (this.savePending) return
      this.savePending = true
      setImmediate(() => {
        this.savePending = false
        const text = this.registrationsText()
        if (text === this.savedRegistrations) return
        try {
          writeAtomic(file, text)
          this.savedRegistrations = text
        } catch (err) {
          log('warn', 'control', 'cannot save the registrations', { file, error: String(err) })
        }
      })
    })
  }

  private registrationsText(): string {
    const workloads = this.registry.workloads().map(({ lastSeenMs: _, ...w }) => w)
    return `${JSON.stringify({ workloads }, null, 1)}\n`
  }

  private scheduleReload(): void {
    if (this.reloadPending) return
    this.reloadPending = true
    setImmediate(() => {
      this.reloadPending = false
      void this.reloadResources()
    })
  }

  private async reloadResources(): Promise<void> {
    this.setResources((await this.store.list()).items)
    this.scheduleRebuild()
  }

  /** The store's resources, with the Kubernetes source's custom resources after them, become the input. */
  private setResources(stored: Resource[]): void {
    this.storeResources = stored
    const kube = this.options.kubernetes
    this.resources = kube === undefined ? stored : [...stored, ...kube.resources()]
    this.registry.setResources(this.resources)
    this.shares.setResources(this.resources)
  }

  /** A proxy connected: remember its identity and build its snapshot now. */
  private onNode(info: NodeInfo): Snapshot {
    const node = proxyNodeOf(info)
    // an on-demand proxy starts with no outbound HTTP service, and gets those it asks for (onSubscription)
    if (onDemand(node)) node.scopeHosts = new Set()
    this.nodes.set(node.id, node)
    return this.build(this.scoped(node))
  }

  /** rebuilds waited for by VirtualHost subscriptions (their answers resolve against the new snapshot) */
  private rebuildWaiters: (() => void)[] = []
  /** on-demand proxies' subscribed VirtualHost names: their scopes follow the registry (a host may come later) */
  private readonly subscriptions = new Map<string, ReadonlySet<string>>()

  /** The registry's hostnames, once per registry change. */
  private knownHosts(): ReadonlySet<string> {
    const services = this.registry.services()
    if (this.#known?.services !== services) this.#known = { services, hosts: new Set(services.map((s) => s.hostname)) }
    return this.#known.hosts
  }
  #known: { services: readonly unknown[]; hosts: ReadonlySet<string> } | null = null

  /** The node with its scope from its subscriptions and the registry now (the node itself when unchanged). */
  private scoped(node: TranslateNode): TranslateNode {
    if (node.scopeHosts === undefined) return node
    const names = this.subscriptions.get(node.id) ?? new Set<string>()
    const scope = scopeOf(names, node.namespace, this.knownHosts(), this.options.meshConfig?.domainSuffix)
    const same = scope.size === node.scopeHosts.size && [...scope].every((h) => node.scopeHosts!.has(h))
    if (same) return node
    const next = { ...node, scopeHosts: scope }
    this.nodes.set(node.id, next)
    return next
  }

  /**
   * An on-demand proxy's VirtualHost subscription changed: its scope is the registry services its subscribed names
   * (aliases `outbound/<host>[:port]`, virtual host names) match, by hostname or short name. A changed scope
   * rebuilds that proxy's snapshot (with the next debounced rebuild) before the subscription is answered.
   */
  private onSubscription(info: NodeInfo, typeUrl: string, names: ReadonlySet<string>): Promise<void> | undefined {
    const nodeId = info.id
    // a proxy that reconnected while its snapshot was still cached is known again from its stream's node
    let node = this.nodes.get(nodeId)
    if (node === undefined) {
      node = proxyNodeOf(info)
      if (onDemand(node)) node.scopeHosts = new Set()
      this.nodes.set(nodeId, node)
    }
    if (typeUrl !== TYPE_URL.virtualHost || node.scopeHosts === undefined) return undefined
    this.subscriptions.set(nodeId, new Set(names))
    if (this.scoped(node) === node) return undefined
    const done = new Promise<void>((resolve) => this.rebuildWaiters.push(resolve))
    // the input is as it was: only this proxy's snapshot can change (the others' scopes did not)
    this.scopeChanged.add(nodeId)
    this.armRebuild()
    return done
  }

  /**
   * one translator per config generation: proxies connecting between changes share its outbound work, and each
   * generation is built from the previous one, translating only what changed (translate.ts, incremental.ts)
   */
  private batch: BatchTranslator | null = null
  /** whether the input changed since `batch` was made */
  private batchStale = true

  private translator(): BatchTranslator {
    if (this.batch === null || this.batchStale) {
      this.batch = new BatchTranslator(this.translateInput(), this.batch ?? undefined)
      this.batchStale = false
    }
    return this.batch
  }

  /** What the translator reads now: the stored resources, the registry's services, the mesh config, the credentials. */
  translateInput(): TranslateInput {
    return {
      resources: this.resources,
      services: this.registry.services(),
      meshConfig: this.meshConfig,
      credentials: (this.credentials ??= readCredentials(credentialsDir(this.options.dataDir))),
    }
  }

  /** The mesh config proxies' config is built with (and `analyze` checks against): the CA's trust domain by default. */
  get meshConfig(): MeshConfig {
    const m = this.options.meshConfig ?? {}
    return this.ca === null ? m : { trustDomain: this.ca.trustDomain, ...m }
  }

  private build(node: TranslateNode): Snapshot {
    return this.withRootca(this.translator().translate(node))
  }

  /** The translated snapshot plus the trust bundle (SDS `ROOTCA`) beside its other secrets, when there is a CA. */
  private withRootca(snapshot: Snapshot): Snapshot {
    const rootca = this.rootca()
    if (rootca === null) return snapshot
    const resources = new Map(snapshot.resources)
    // the translator's own secrets (a gateway's credentials) stay beside the bundle
    const translated = resources.get(TYPE_URL.secret)
    resources.set(
      TYPE_URL.secret,
      translated === undefined || translated.items.size === 0
        ? rootca
        : {
            version: `${translated.version}.${rootca.version}`,
            items: new Map([...translated.items, ...rootca.items]),
          },
    )
    return { resources }
  }

  scheduleRebuild(): void {
    this.batchStale = true
    this.rebuildAll = true
    this.armRebuild()
  }

  /**
   * whether the next rebuild looks at every proxy (the input changed), or only at those in `scopeChanged`; not
   * `batchStale`, which a proxy connecting meanwhile clears when it gets its snapshot from the new translator
   */
  private rebuildAll = true
  /** on-demand proxies whose scope changed with their subscriptions since the last rebuild */
  private scopeChanged = new Set<string>()

  private armRebuild(): void {
    if (this.rebuildTimer !== null) return
    this.rebuildTimer = setTimeout(() => {
      this.rebuildTimer = null
      this.rebuild()
    }, this.options.rebuildDebounceMs ?? 50)
  }

  /** the trust bundle version the proxies were last given (a new one goes to every proxy) */
  private pushedRootca: string | null = null

  /**
   * Rebuilds the snapshots of the connected proxies whose config may have changed (every proxy when the trust
   * bundle changed); identical proxies share one translation, and unchanged parts are not translated again.
   */
  rebuild(): void {
    const waiters = this.rebuildWaiters
    this.rebuildWaiters = []
    try {
      this.rebuildNow()
    } finally {
      for (const w of waiters) w()
    }
  }

  private rebuildNow(): void {
    const t0 = performance.now()
    const connected = new Set(this.xds.connectedNodes())
    const batch = this.translator()
    const rootca = this.rootca()?.version ?? null
    const all = rootca !== this.pushedRootca
    this.pushedRootca = rootca
    // a rebuild for subscriptions alone looks only at the proxies whose scope they changed: with 1000 on-demand
    // proxies connecting, each burst of subscriptions would otherwise walk all of them again
    const everyProxy = all || this.rebuildAll
    const only = this.scopeChanged
    this.rebuildAll = false
    this.scopeChanged = new Set()
    let n = 0
    let changed = 0
    for (const id of everyProxy ? [...this.nodes.keys()] : only) {
      const node = this.nodes.get(id)
      if (node === undefined) continue
      if (!connected.has(id)) {
        this.nodes.delete(id)
        this.subscriptions.delete(id)
        continue
      }
      n++
      const current = this.scoped(node)
      const snapshot = all ? batch.translate(current) : batch.update(current)
      if (snapshot === null) continue
      this.xds.setSnapshot(id, this.withRootca(snapshot))
      changed++
    }
    this.lastRebuild = {
      ms: Math.round((performance.now() - t0) * 1000) / 1000,
      proxies: n,
      ...(everyProxy ? {} : { scopesOnly: true }),
      changed,
      revision: this.store.revision,
      at: new Date().toISOString(),
    }
    log('debug', 'control', 'snapshots rebuilt', this.lastRebuild)
    if (everyProxy) this.armWarm()
  }

  private warmTimer: NodeJS.Timeout | null = null

  /** Shortly after a rebuild (its pushes go first): `warm` once, with the translator of then. */
  private armWarm(): void {
    if (this.warmTimer !== null) return
    this.warmTimer = setTimeout(() => {
      this.warmTimer = null
      try {
        this.warm()
      } catch (e) {
        log('warn', 'control', 'could not warm the snapshot cache', {
          error: e instanceof Error ? e.message : String(e),
        })
      }
    }, WARM_DELAY_MS)
    this.warmTimer.unref()
  }

  /**
   * Warms the snapshot cache for the namespaces with services and no connected sidecar (the WARM_NAMESPACES with
   * the most services): the snapshot of a sidecar there without labels or metadata is translated and its resources
   * encoded, held by no node. The first sidecars to connect there, a thousand at once after a restart or a rollout,
   * then find most of what they get translated and encoded already, as Istio's push context is built on a config
   * change whether proxies are connected or not. Namespaces with a connected sidecar are warm through it.
   */
  private warm(): void {
    const cache = this.xds.cache
    const withProxy = new Set<string>()
    for (const id of this.xds.connectedNodes()) {
      const n = this.nodes.get(id)
      if (n?.kind === 'sidecar') withProxy.add(n.namespace)
    }
    const count = new Map<string, number>()
    for (const s of this.registry.services()) count.set(s.namespace, (count.get(s.namespace) ?? 0) + 1)
    const namespaces = [...count]
      .filter(([ns]) => !withProxy.has(ns))
      .sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1))
      .slice(0, WARM_NAMESPACES)
      .map(([ns]) => ns)
    const keep = new Set(namespaces)
    for (const key of cache.warmKeys()) if (!keep.has(key)) cache.warm(key, null)
    const batch = this.translator()
    for (const ns of namespaces) {
      const node: TranslateNode = {
        id: `sidecar~0.0.0.0~loom-warm.${ns}~${ns}.svc.cluster.local`,
        kind: 'sidecar',
        namespace: ns,
        labels: {},
        serviceAccount: 'default',
        ip: '0.0.0.0',
        generator: 'envoy',
      }
      cache.warm(ns, this.withRootca(batch.translate(node)))
    }
  }

  /** The snapshot a node gets now (debug endpoint). */
  snapshotOf(nodeId: string): Snapshot | null {
    const node = this.nodes.get(nodeId)
    return node === undefined ? null : this.build(node)
  }

  knownNodes(): ProxyNode[] {
    return [...this.nodes.values()]
  }

  /** The connected proxies that sent their admin address: what the gatherer reads. */
  scrapeTargets(): ScrapeTarget[] {
    const out: ScrapeTarget[] = []
    for (const st of this.xds.adminAddresses()) {
      const node = this.nodes.get(st.nodeId)
      if (node === undefined) continue
      out.push({
        nodeId: st.nodeId,
        adminAddress: st.adminAddress,
        workload: workloadOfNode(node),
        namespace: node.namespace,
        kind: node.kind,
      })
    }
    return out
  }

  /** Every workload known (registered, or a connected proxy's), with its services and whether it is meshed. */
  inventory(): InventoryWorkload[] {
    const proxies = new Set(this.scrapeTargets().map((t) => `${t.namespace}/${t.workload}`))
    const services = this.registry.services()
    const sameLabels = (a: Record<string, string>, b: Record<string, string>) =>
      Object.keys(a).length === Object.keys(b).length && Object.entries(a).every(([k, v]) => b[k] === v)
    const out: InventoryWorkload[] = []
    const seen = new Set<string>()
    for (const w of this.registry.workloads()) {
      const id = `${w.namespace}/${w.name}`
      seen.add(id)
      const served = services
        .filter((s) => s.namespace === w.namespace && s.endpoints.some((e) => sameLabels(e.labels, w.labels)))
        .map((s) => s.hostname.split('.')[0]!)
      out.push({
        name: w.name,
        namespace: w.namespace,
        services: [...new Set(served)],
        version: w.labels.version ?? '',
        instances: 1,
        meshed: proxies.has(id) ? 1 : 0,
      })
    }
    for (const t of this.scrapeTargets()) {
      const id = `${t.namespace}/${t.workload}`
      if (seen.has(id)) continue
      seen.add(id)
      out.push({ name: t.workload, namespace: t.namespace, services: [], version: '', instances: 1, meshed: 1 })
    }
    return out
  }

  async close(): Promise<void> {
    await this.telemetry.stop()
    if (this.rebuildTimer !== null) clearTimeout(this.rebuildTimer)
    if (this.warmTimer !== null) clearTimeout(this.warmTimer)
    // subscriptions waiting for a rebuild that will not come are answered (their streams are closing)
    for (const w of this.rebuildWaiters.splice(0)) w()
    if (this.expiryTimer !== null) clearInterval(this.expiryTimer)
    if (this.bundleTimer !== null) clearTimeout(this.bundleTimer)
    this.watch?.close()
    this.options.kubernetes?.close()
    this.credentialsWatch?.close()
    this.shares.close()
    await this.xds.close(500)
    await this.options.registrations?.close()
    await this.store.close()
  }
}
