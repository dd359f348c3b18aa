/**
 * Several `loom control` replicas on one etcd cluster: what they must share, and how they find each other.
 *
 * - Shared secrets (`sharedFiles`): the CA root (key, certificate, rotation state) and the bootstrap-token signing
 *   key must be one for the whole mesh, or a proxy that moves to another replica would not trust it (nor it the
 *   proxy's token). They live in etcd under `<prefix>/shared/<name>`: the first replica to start generates them as
 *   it would alone and publishes them with a compare-and-set on the key's create revision (`create_revision == 0`);
 *   every other replica, and a replica that lost that race, writes what etcd holds into its data directory before
 *   opening it. Anyone who can read the prefix can mint workload certificates: protect etcd (TLS, auth).
 * - Membership (`EtcdReplicas`): each replica keeps `<prefix>/replicas/<id>` (its API and xDS addresses) under a
 *   lease it renews, so any replica can list the others (`loom proxy-status` asks each for its own proxies) and a
 *   replica that dies leaves the list within the lease's TTL.
 * - Leadership: the replicas campaign in an etcd election (`<prefix>/leader`); exactly one is leader at a time, and
 *   jobs that must run once for the mesh run only there (see docs/control-plane.md for which).
 */
import { existsSync, mkdirSync, readFileSync, renameSync } from 'node:fs'
import { join } from 'node:path'
import type { Campaign, Lease } from 'etcd3'
import { log } from '../core/log.js'
import { writeFileAtomic } from './ca/keys.js'
import type { EtcdStore } from './store/etcd-store.js'

/** A replica as the others see it. */
export interface ReplicaInfo {
  /** `--replica-id`, else its xDS address */
  id: string
  /** its API address (host:port), where the others ask it for its proxies */
  api: string
  xds: string
  startedAt: string
}

/** What the API reads of the replicas (EtcdReplicas). */
export interface ReplicaSet {
  readonly self: ReplicaInfo
  readonly leader: boolean
  list(): Promise<ReplicaInfo[]>
}

interface SharedValue {
  files: Record<string, string>
  by: string
  at: string
}

/**
 * Makes `files` in `dir` the cluster's: when etcd holds them under `name`, they are written into `dir` (a
 * differing local file is kept beside as `<file>.replaced`); otherwise `create()` makes them locally and they are
 * published with a compare-and-set, and should another replica have published first, its files win. Resolves with
 * whether this replica created them.
 */
export async function sharedFiles(
  store: EtcdStore,
  name: string,
  dir: string,
  files: readonly string[],
  replica: string,
  create: () => Promise<void>,
): Promise<boolean> {
  const key = `${store.prefix}/shared/${name}`
  const client = store.client
  const held = await store.etcdCall(`reading ${key}`, () => client.get(key).string())
  if (held !== null) {
    writeShared(key, dir, parseShared(key, held))
    return false
  }
  await create()
  const mine: SharedValue = { files: {}, by: replica, at: new Date().toISOString() }
  for (const f of files) {
    const file = join(dir, f)
    if (existsSync(file)) mine.files[f] = readFileSync(file, 'utf8')
  }
  const res = await store.etcdCall(`publishing ${key}`, () =>
    client
      .if(key, 'Create', '==', 0)
      .then(client.put(key).value(JSON.stringify(mine)))
      .else(client.get(key))
      .commit(),
  )
  if (res.succeeded) {
    log('info', 'control', 'published for every replica', { key, files: Object.keys(mine.files) })
    return true
  }
  // another replica published first: its files are the cluster's
  const kv = res.responses[0]?.response_range?.kvs[0]
  if (kv === undefined) throw new Error(`${key}: the compare-and-set failed but etcd holds nothing there`)
  writeShared(key, dir, parseShared(key, kv.value.toString()))
  return false
}

function parseShared(key: string, text: string): SharedValue {
  try {
    const v = JSON.parse(text) as SharedValue
    if (v !== null && typeof v.files === 'object') return v
  } catch {
    // reported below
  }
  throw new Error(`${key}: not what a control plane publishes (JSON with "files"); remove it with etcdctl del`)
}

function writeShared(key: string, dir: string, value: SharedValue): void {
  mkdirSync(dir, { recursive: true, mode: 0o700 })
  for (const [f, text] of Object.entries(value.files)) {
    const file = join(dir, f)
    if (existsSync(file)) {
      if (readFileSync(file, 'utf8') === text) continue
      renameSync(file, `${file}.replaced`)
      log('warn', 'control', "a local file differs from the cluster's; using the cluster's, the local one kept aside", {
        key,
        file,
        kept: `${file}.replaced`,
      })
    }
    writeFileAtomic(file, text, 0o600)
  }
}

/** Membership and leadership of the replicas on one etcd (module doc). */
export class EtcdReplicas implements ReplicaSet {
  private lease: Lease | null = null
  private campaign: Campaign | null = null
  private leading = false
  private closed = false
  private retry: NodeJS.Timeout | null = null
  private readonly listeners = new Set<(leader: boolean) => void>()

  private constructor(
    private readonly store: EtcdStore,
    readonly self: ReplicaInfo,
    private readonly ttlSeconds: number,
  ) {}

  /** Announces `self` and campaigns for leadership (resolves once announced; leadership comes when it comes). */
  static async join(store: EtcdStore, self: ReplicaInfo, ttlSeconds = 10): Promise<EtcdReplicas> {
    const r = new EtcdReplicas(store, self, ttlSeconds)
    await r.announce()
    r.stand()
    return r
  }

  get leader(): boolean {
    return this.leading
  }

  /** Called with `true` when this replica becomes leader, `false` when it stops being it. */
  onLeadership(fn: (leader: boolean) => void): void {
    this.listeners.add(fn)
  }

  /** Every replica announced now (this one included), by id. */
  async list(): Promise<ReplicaInfo[]> {
    const prefix = `${this.store.prefix}/replicas/`
    const res = await this.store.etcdCall(`reading ${prefix}`, () =>
      this.store.client.namespace(prefix).getAll().strings(),
    )
    const out: ReplicaInfo[] = []
    for (const text of Object.values(res)) {
      try {
        out.push(JSON.parse(text) as ReplicaInfo)
      } catch {
        // not one of ours
      }
    }
    return out.sort((a, b) => a.id.localeCompare(b.id))
  }

  /** The leader's id, or null while there is none. */
  async leaderId(): Promise<string | null> {
    const id = await this.store.etcdCall('reading the leader', () =>
      this.store.client.election(`${this.store.prefix}/leader`, this.ttlSeconds).leader(),
    )
    return id ?? null
  }

  private async announce(): Promise<void> {
    const lease = this.store.client.lease(this.ttlSeconds, { autoKeepAlive: true })
    this.lease = lease
    lease.on('lost', (err: Error) => {
      if (this.closed || this.lease !== lease) return
      log('warn', 'control', 'the replica lease was lost; announcing again', { error: err.message })
      this.lease = null
      this.later(() => this.announce())
    })
    const key = `${this.store.prefix}/replicas/${this.self.id}`
    await this.store.etcdCall(`announcing ${key}`, () => lease.put(key).value(JSON.stringify(this.self)).exec())
  }

  private stand(): void {
    if (this.closed) return
    const election = this.store.client.election(`${this.store.prefix}/leader`, this.ttlSeconds)
    const campaign = election.campaign(this.self.id)
    this.campaign = campaign
    campaign.on('elected', () => {
      if (this.campaign !== campaign || this.closed) return
      this.setLeader(true)
    })
    campaign.on('error', (err: Error) => {
      if (this.campaign !== campaign || this.closed) return
      log('warn', 'control', 'the leader election failed; standing again', { error: err.message })
      this.campaign = null
      this.setLeader(false)
      this.later(() => this.stand())
    })
  }

  private setLeader(leader: boolean): void {
    if (this.leading === leader) return
    this.leading = leader
    log('info', 'control', leader ? 'this replica leads' : 'this replica no longer leads', { replica: this.self.id })
    for (const l of this.listeners) l(leader)
  }

  private later(fn: () => unknown): void {
    if (this.closed) return
    this.retry = setTimeout(() => {
      this.retry = null
      Promise.resolve(fn()).catch((err: unknown) => {
        log('warn', 'control', 'etcd unreachable for the replica bookkeeping; trying again', { error: String(err) })
        this.later(fn)
      })
    }, 1000)
    this.retry.unref()
  }

  /** Resigns (another replica leads at once) and leaves the list. */
  async close(): Promise<void> {
    this.closed = true
    if (this.retry !== null) clearTimeout(this.retry)
    this.setLeader(false)
    await this.campaign?.resign().catch(() => {})
    await this.lease?.revoke().catch(() => {})
  }
}
