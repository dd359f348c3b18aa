/**
 * The configuration store on etcd (`loom control --store etcd://host:port,...`): the Store contract kept by an etcd
 * cluster instead of the data directory, the first step towards several control planes sharing one configuration.
 *
 * Layout: each resource is one key, `<prefix>/resources/<kind>/<namespace>/<name>`, its value the resource as JSON
 * without `metadata.resourceVersion`. A resource's resourceVersion is the key's mod_revision, and the store's revision
 * is etcd's: a list reports the revision etcd answered at, and `watch(revision)` misses nothing after it.
 *
 * Writes: every write is one etcd transaction comparing the mod_revision of each key it touches with the state the
 * write was planned against (uid, creationTimestamp and generation come from that state), so no concurrent writer,
 * in this process or another control plane, is ever overwritten unseen. `expectedResourceVersion` is checked against
 * that state and fails with StoreConflictError as in the embedded store; `putAll` is one transaction (one revision).
 * A transaction whose compare fails is planned again against the fresh state its else branch returned. A retried
 * transaction whose first attempt did commit (the member answered too late, or died after the commit) is recognized
 * by its value, so it is reported once and as written. A write that fails for good (no member reachable before
 * `retryMs`) is reported as failed, never as written.
 *
 * Reads (`get`, `list`) are linearizable etcd reads. Watches are served from one etcd watch of the prefix per store,
 * started at the revision the store opened at, which feeds a local mirror and a bounded event history, so
 * `watch(fromRevision)` delivers in revision order and synchronously as the other stores do, and a write resolves
 * only after its own event has reached the watchers. `watch` from before the store's history (the revision it opened
 * at, or older than `historyLimit` events) throws StoreCompactedError: list again. Should etcd itself compact past
 * the mirror's position (a long partition), the mirror lists again and delivers the difference as events.
 *
 * Member failover and reconnection are the etcd3 client's: each call goes to a healthy member, a failed call is
 * retried on another, and the watch resumes from its last revision.
 */
import { readFileSync } from 'node:fs'
import {
  ConsecutiveBreaker,
  circuitBreaker,
  ExponentialBackoff,
  handleWhen,
  type IBackoff,
  isBrokenCircuitError,
  retry,
} from 'cockatiel'
import {
  Etcd3,
  type IKeyValue,
  type IOptions,
  type IRangeResponse,
  type IWatchResponse,
  isRecoverableError,
  type Namespace,
  type Watcher as EtcdWatcher,
} from 'etcd3'
import { keyOf, type Resource, resourceKey } from '../../api/resource.js'
import { log } from '../../core/log.js'
import { checkExpected, copy, deepFreeze, normalize, stamp, timestamp } from './base-store.js'
import { DEFAULT_HISTORY_LIMIT, WatchHistory } from './watch-history.js'
import {
  type ListResult,
  type PutOptions,
  type Store,
  StoreConflictError,
  type Watch,
  type WatchEvent,
} from './store.js'

export interface EtcdStoreOptions {
  /** the members' client endpoints, `host:port` (or `http(s)://host:port`) */
  endpoints: string[]
  /** the key prefix everything of this store lives under (default `/loom`) */
  prefix?: string
  /** TLS to the members: the CA that signed their certificates, and a client certificate when they ask for one */
  tls?: { ca: string; cert?: string; key?: string }
  /** etcd's user authentication */
  auth?: { user: string; password: string }
  /** watch events kept in memory for watch() from an older revision (default 10,000) */
  historyLimit?: number
  /** how long one operation keeps trying while members fail over before it fails, ms (default 15,000) */
  retryMs?: number
}

export const DEFAULT_ETCD_PREFIX = '/loom'
const DEFAULT_RETRY_MS = 15_000
/**
 * One etcd call's deadline. A member that accepts a call but cannot answer it (a follower whose leader was just
 * killed holds the proposal for etcd's own request timeout, about 6 s) is given up on for another; retrying is safe,
 * as every write compares mod_revisions and a retried write that had landed is recognized.
 */
const CALL_DEADLINE_MS = 3_000
/** a member that failed this many calls in a row is left alone for HOST_PAUSE_MS (then one call tries it) */
const HOST_FAILURES = 3
const HOST_PAUSE_MS = 1_000
/** compare-and-set rounds one write tries against concurrent writers before giving up */
const MAX_ROUNDS = 64

/**
 * The endpoints of `etcd://host:port[,host:port...]` (the `--store` flag), or null when `text` is not an etcd URL.
 * Throws with the offending part when it is one but malformed.
 */
export function parseEtcdUrl(text: string): string[] | null {
  const m = /^etcd:\/\/(.*)$/.exec(text)
  if (m === null) return null
  const endpoints = m[1]!.split(',').map((e) => e.trim())
  for (const e of endpoints) {
    const hp = /^(\[[0-9a-fA-F:.]+\]|[^:/[\]\s]+):(\d{1,5})$/.exec(e)
    if (hp === null || Number(hp[2]) > 65535 || Number(hp[2]) === 0)
      throw new Error(`--store ${text}: "${e}" is not host:port (etcd://host:port[,host:port...])`)
  }
  return endpoints
}

/** A key's state as a write is planned against it: the stored resource (or none) and whether it is etcd's now. */
interface Current {
  resource: Resource | undefined
  /** read from etcd for this write (else it is the mirror's, which may lag behind another control plane's write) */
  fresh: boolean
}

interface PlannedPut {
  key: string
  resource: Resource
  expected: string | undefined
}

export class EtcdStore implements Store {
  readonly endpoints: readonly string[]
  readonly prefix: string
  /** the etcd client, for what else lives under the prefix (the registrations) */
  readonly client: Etcd3
  private readonly kv: Namespace
  private readonly retryMs: number
  private readonly calls: EtcdCalls
  /** the mirror: every resource under the prefix as of `rev`, frozen */
  private readonly items = new Map<string, Resource>()
  private rev: number
  private readonly history: WatchHistory
  private feed: EtcdWatcher | null = null
  private resyncing: Promise<void> | null = null
  private revisionWaiters: { revision: number; resolve: () => void }[] = []
  /** writes run one after another: each is planned against the state the previous one left */
  private queue: Promise<unknown> = Promise.resolve()
  private closing: Promise<void> | null = null
  private disconnectedSince = 0

  private constructor(client: Etcd3, options: EtcdStoreOptions, revision: number, items: Resource[]) {
    this.client = client
    this.endpoints = options.endpoints
    this.prefix = options.prefix ?? DEFAULT_ETCD_PREFIX
    this.kv = client.namespace(`${this.prefix}/resources/`)
    this.retryMs = options.retryMs ?? DEFAULT_RETRY_MS
    this.calls = new EtcdCalls(options.endpoints, this.retryMs)
    this.history = new WatchHistory(options.historyLimit)
    for (const r of items) this.items.set(keyOf(r), deepFreeze(r))
    this.rev = revision
    this.history.forgetThrough(revision)
  }

  /** Connects, reads the prefix and starts the watch that feeds the mirror; fails with the endpoints it tried. */
  static async open(options: EtcdStoreOptions): Promise<EtcdStore> {
    if (options.endpoints.length === 0) throw new Error('etcd store: no endpoints')
    const limit = options.historyLimit ?? DEFAULT_HISTORY_LIMIT
    if (!Number.isSafeInteger(limit) || limit < 0)
      throw new RangeError(`historyLimit must be an integer >= 0: ${limit}`)
    const prefix = options.prefix ?? DEFAULT_ETCD_PREFIX
    if (!prefix.startsWith('/') || prefix.endsWith('/'))
      throw new Error(`etcd store: the prefix must start with '/' and not end with one: "${prefix}"`)
    const client = new Etcd3(clientOptions(options))
    const probe = new EtcdCalls(options.endpoints, options.retryMs ?? DEFAULT_RETRY_MS)
    try {
      const ns = client.namespace(`${prefix}/resources/`)
      const res = await probe.call(`reading ${prefix}/resources/`, () => ns.getAll().exec())
      const store = new EtcdStore(client, options, Number(res.header.revision), res.kvs.map(decode))
      await store.startFeed(store.rev + 1)
      return store
    } catch (err) {
      client.close()
      throw err
    }
  }

  get revision(): number {
    return this.rev
  }

  /** An etcd call with the store's failover retries and error messages, for what else lives under the prefix. */
  etcdCall<T>(what: string, run: () => Promise<T>): Promise<T> {
    return this.calls.call(what, run)
  }

  async get(kind: string, namespace: string, name: string): Promise<Resource | null> {
    this.checkOpen()
    const key = resourceKey(kind, namespace, name)
    const res = await this.calls.call(`get ${key}`, () => this.kv.get(key).exec())
    const kv = res.kvs[0]
    return kv === undefined ? null : decode(kv)
  }

  async list(kind?: string, namespace?: string): Promise<ListResult> {
    this.checkOpen()
    const res = await this.calls.call(`list ${kind ?? 'all kinds'}`, () =>
      this.kv
        .getAll()
        .prefix(kind === undefined ? '' : `${kind}/`)
        .exec(),
    )
    // etcd answers in key order (bytes), the order of `kind/namespace/name`
    const items = res.kvs.map(decode).filter((r) => namespace === undefined || r.metadata.namespace === namespace)
    return { revision: Number(res.header.revision), items }
  }

  async put(resource: Resource, options?: PutOptions): Promise<Resource> {
    this.checkOpen()
    const r = normalize(resource)
    const expected = options?.expectedResourceVersion ?? r.metadata.resourceVersion
    const [stored] = await this.serial(() => this.commitPuts('put', [{ key: keyOf(r), resource: r, expected }]))
    return stored!
  }

  async putAll(resources: Resource[]): Promise<Resource[]> {
    this.checkOpen()
    const rs = resources.map(normalize)
    const keys = new Set<string>()
    for (const r of rs) {
      const key = keyOf(r)
      if (keys.has(key)) throw new TypeError(`putAll: ${key} appears more than once`)
      keys.add(key)
    }
    if (rs.length === 0) return []
    const writes = rs.map((r) => ({ key: keyOf(r), resource: r, expected: r.metadata.resourceVersion }))
    return this.serial(() => this.commitPuts('putAll', writes))
  }

  async delete(kind: string, namespace: string, name: string, options?: PutOptions): Promise<Resource | null> {
    this.checkOpen()
    const key = resourceKey(kind, namespace, name)
    const expected = options?.expectedResourceVersion
    return this.serial(() => this.commitDelete(key, expected))
  }

  /** As the embedded store's: kept events after `fromRevision` synchronously, then live ones in revision order. */
  watch(fromRevision: number, onEvent: (e: WatchEvent) => void): Watch {
    if (this.closing !== null) throw new Error('store is closed')
    return this.history.watch(fromRevision, onEvent)
  }

  /** Refuses new writes, closes every watch, waits for queued writes, then closes the client. Idempotent. */
  close(): Promise<void> {
    if (this.closing === null) {
      this.history.closeAll()
      this.closing = this.queue.then(async () => {
        const feed = this.feed
        this.feed = null
        for (const w of this.revisionWaiters.splice(0)) w.resolve()
        await feed?.cancel().catch(() => {})
        this.client.close()
      })
    }
    return this.closing
  }

  private checkOpen(): void {
    if (this.closing !== null) throw new Error('store is closed')
  }

  private serial<T>(run: () => Promise<T>): Promise<T> {
    const result = this.queue.then(run)
    this.queue = result.catch(() => {})
    return result
  }

  // === writes ===

  private async commitPuts(op: 'put' | 'putAll', writes: PlannedPut[]): Promise<Resource[]> {
    let current = writes.map((w): Current => ({ resource: this.items.get(w.key), fresh: false }))
    for (let round = 0; round < MAX_ROUNDS; round++) {
      // a conflict seen in the mirror is confirmed by etcd before it is reported: the mirror may lag
      if (current.some((c, i) => !c.fresh && conflicts(op, writes[i]!, c))) current = await this.read(writes)
      const now = timestamp()
      const stored = writes.map((w, i) => {
        const existing = current[i]!.resource
        checkExpected(op, w.key, existing, w.expected)
        return stamp(copy(w.resource), existing, 0, now)
      })
      const values = stored.map(encode)
      let txn = this.kv.if(writes[0]!.key, 'Mod', '==', modOf(current[0]!.resource))
      for (let i = 1; i < writes.length; i++) txn = txn.and(writes[i]!.key, 'Mod', '==', modOf(current[i]!.resource))
      txn = txn
        .then(...writes.map((w, i) => this.kv.put(w.key).value(values[i]!)))
        .else(...writes.map((w) => this.kv.get(w.key)))
      const res = await this.calls.call(`${op} ${describe(writes)}`, () => txn.commit())
      let revision: number
      if (res.succeeded) revision = Number(res.header.revision)
      else {
        const fresh = res.responses.map((r) => firstKv(r.response_range))
        const landed = landedRevision(fresh, values)
        if (landed === null) {
          current = fresh.map((kv) => ({ resource: kv === undefined ? undefined : decode(kv), fresh: true }))
          continue
        }
        revision = landed
      }
      for (const s of stored) s.metadata.resourceVersion = String(revision)
      await this.caughtUp(revision)
      return stored
    }
    throw new StoreConflictError(`${op} ${describe(writes)}: still conflicting after ${MAX_ROUNDS} rounds`)
  }

  private async commitDelete(key: string, expected: string | undefined): Promise<Resource | null> {
    let current: Current = { resource: this.items.get(key), fresh: false }
    for (let round = 0; round < MAX_ROUNDS; round++) {
      if (!current.fresh) current = (await this.read([{ key }]))[0]!
      const existing = current.resource
      checkExpected('delete', key, existing, expected)
      if (existing === undefined) return null
      const res = await this.calls.call(`delete ${key}`, () =>
        this.kv.if(key, 'Mod', '==', modOf(existing)).then(this.kv.delete().key(key)).else(this.kv.get(key)).commit(),
      )
      if (res.succeeded) {
        await this.caughtUp(Number(res.header.revision))
        return copy(existing)
      }
      const kv = firstKv(res.responses[0]?.response_range)
      current = { resource: kv === undefined ? undefined : decode(kv), fresh: true }
      // gone: this delete's earlier attempt landed (or another writer deleted it); either way it is deleted
      if (current.resource === undefined) return copy(existing)
    }
    throw new StoreConflictError(`delete ${key}: still conflicting after ${MAX_ROUNDS} rounds`)
  }

  /** The keys' state as etcd has it now, in one transaction (one revision). */
  private async read(keys: { key: string }[]): Promise<Current[]> {
    const res = await this.calls.call(`reading ${describe(keys)}`, () =>
      this.kv
        .if(keys[0]!.key, 'Mod', '>', -1)
        .then(...keys.map((k) => this.kv.get(k.key)))
        .commit(),
    )
    return res.responses.map((r) => {
      const kv = firstKv(r.response_range)
      return { resource: kv === undefined ? undefined : decode(kv), fresh: true }
    })
  }

  /** Resolves once the mirror has applied `revision` (so watchers have its events), or after `retryMs`. */
  private caughtUp(revision: number): Promise<void> {
    // while closing too: the feed runs until the queued writes are done
    if (this.rev >= revision || (this.feed === null && this.resyncing === null)) return Promise.resolve()
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        log('warn', 'control', 'etcd: a write is acknowledged before its watch event arrived', {
          revision,
          endpoints: this.endpoints.join(','),
        })
        done()
      }, this.retryMs)
      const done = () => {
        clearTimeout(timer)
        resolve()
      }
      this.revisionWaiters.push({ revision, resolve: done })
    })
  }

  // === the mirror ===

  private async startFeed(fromRevision: number): Promise<void> {
    const feed = await this.calls.call('watching the prefix', () =>
      this.kv.watch().prefix('').startRevision(String(fromRevision)).create(),
    )
    if (this.closing !== null) {
      await feed.cancel().catch(() => {})
      return
    }
    this.feed = feed
    feed.on('data', (res: IWatchResponse) => this.onFeed(feed, res))
    feed.on('disconnected', (err: Error) => {
      if (this.disconnectedSince !== 0) return
      this.disconnectedSince = Date.now()
      log('warn', 'control', 'etcd watch disconnected; reconnecting', {
        endpoints: this.endpoints.join(','),
        error: err.message,
      })
    })
    feed.on('connected', () => {
      if (this.disconnectedSince === 0) return
      log('info', 'control', 'etcd watch reconnected', {
        endpoints: this.endpoints.join(','),
        after_ms: Date.now() - this.disconnectedSince,
      })
      this.disconnectedSince = 0
    })
    feed.on('error', (err: Error) => {
      if (this.feed !== feed || this.closing !== null) return
      this.feed = null
      log('warn', 'control', 'etcd watch ended; listing again', {
        endpoints: this.endpoints.join(','),
        error: err.message,
      })
      void this.resync()
    })
  }

  private onFeed(feed: EtcdWatcher, res: IWatchResponse): void {
    if (this.feed !== feed) return
    let batch: WatchEvent[] = []
    let batchRev = 0
    for (const e of res.events) {
      const revision = Number(e.kv.mod_revision)
      if (revision <= this.rev) continue
      if (revision !== batchRev && batch.length > 0) {
        this.applyEvents(batchRev, batch)
        batch = []
      }
      batchRev = revision
      const key = e.kv.key.toString()
      if (e.type === 'Put') {
        const resource = decodeOrSkip(e.kv)
        if (resource === null) continue
        batch.push({ type: 'PUT', revision, resource, previous: this.items.get(key) ?? null })
        this.items.set(key, resource)
      } else {
        const resource = this.items.get(key)
        if (resource === undefined) continue
        this.items.delete(key)
        batch.push({ type: 'DELETE', revision, resource })
      }
    }
    if (batch.length > 0) this.applyEvents(batchRev, batch)
  }

  /** Lists the prefix again after the feed ended (etcd compacted past it), delivering the difference as events. */
  private resync(): Promise<void> {
    this.resyncing ??= (async () => {
      for (;;) {
        if (this.closing !== null) return
        try {
          const res = await this.calls.call('listing the prefix again', () => this.kv.getAll().exec())
          const revision = Number(res.header.revision)
          const seen = new Set<string>()
          const events: WatchEvent[] = []
          for (const kv of res.kvs) {
            const key = kv.key.toString()
            seen.add(key)
            const previous = this.items.get(key)
            if (previous?.metadata.resourceVersion === kv.mod_revision) continue
            const resource = decodeOrSkip(kv)
            if (resource === null) continue
            this.items.set(key, resource)
            events.push({ type: 'PUT', revision, resource, previous: previous ?? null })
          }
          for (const [key, resource] of this.items) {
            if (seen.has(key)) continue
            this.items.delete(key)
            events.push({ type: 'DELETE', revision, resource })
          }
          // events before the new list are not all known any more
          this.history.forgetThrough(revision)
          this.applyEvents(revision, events)
          await this.startFeed(revision + 1)
          return
        } catch (err) {
          log('error', 'control', 'etcd: cannot list the prefix again; retrying', { error: String(err) })
          await new Promise((r) => setTimeout(r, 1000))
        }
      }
    })().finally(() => {
      this.resyncing = null
    })
    return this.resyncing
  }

  private applyEvents(revision: number, events: WatchEvent[]): void {
    if (revision > this.rev) this.rev = revision
    this.history.publish(events)
    if (this.revisionWaiters.length > 0) {
      const due = this.revisionWaiters.filter((w) => w.revision <= this.rev)
      this.revisionWaiters = this.revisionWaiters.filter((w) => w.revision > this.rev)
      for (const w of due) w.resolve()
    }
  }
}

/**
 * Calls etcd, retrying what a failover heals (no leader yet, a member gone) until `retryMs` has passed; fails with
 * what was tried, against which endpoints, and the last error.
 */
class EtcdCalls {
  constructor(
    private readonly endpoints: readonly string[],
    private readonly retryMs: number,
  ) {}

  async call<T>(what: string, run: () => Promise<T>): Promise<T> {
    const deadline = Date.now() + this.retryMs
    let delay = 50
    /** the last error a member answered with (not "every member is paused"), which says what went wrong */
    let last: Error | null = null
    for (;;) {
      try {
        return await run()
      } catch (err) {
        const e = err as Error
        const paused = isBrokenCircuitError(e)
        if (!paused) last = e
        if ((!paused && !isRecoverableError(e)) || Date.now() + delay > deadline) {
          const cause = last ?? e
          const after = paused || isRecoverableError(e) ? ` (still failing after ${this.retryMs / 1000} s)` : ''
          let message = cause.message.replace(/\s*Resolution note:\s*$/, '')
          if (message.includes('too many operations in txn request'))
            message += ' (etcd --max-txn-ops, 128 by default, bounds the resources one apply writes)'
          throw new Error(`etcd (${this.endpoints.join(',')}): ${what} failed${after}: ${message}`, { cause })
        }
      }
      await new Promise((r) => setTimeout(r, delay))
      delay = Math.min(delay * 2, 1000)
    }
  }
}

function clientOptions(options: EtcdStoreOptions): IOptions {
  const tls = options.tls
  const scheme = tls === undefined ? 'http' : 'https'
  const read = (file: string, what: string) => {
    try {
      return readFileSync(file)
    } catch (err) {
      throw new Error(`etcd store: cannot read the ${what} ${file}: ${(err as Error).message}`)
    }
  }
  return {
    hosts: options.endpoints.map((e) => (/^https?:\/\//.test(e) ? e : `${scheme}://${e}`)),
    ...(tls !== undefined
      ? {
          credentials: {
            rootCertificate: read(tls.ca, 'CA certificate (--etcd-ca)'),
            ...(tls.cert !== undefined ? { certChain: read(tls.cert, 'client certificate (--etcd-cert)') } : {}),
            ...(tls.key !== undefined ? { privateKey: read(tls.key, 'client key (--etcd-key)') } : {}),
          },
        }
      : {}),
    ...(options.auth !== undefined ? { auth: { username: options.auth.user, password: options.auth.password } } : {}),
    // failover: a failing member is paused briefly and the call goes to another at once; EtcdCalls retries the
    // rest (a leader election, every member paused) until its deadline
    faultHandling: {
      host: () =>
        circuitBreaker(handleWhen(isRecoverableError), {
          halfOpenAfter: HOST_PAUSE_MS,
          breaker: new ConsecutiveBreaker(HOST_FAILURES),
        }),
      global: retry(handleWhen(isRecoverableError), { maxAttempts: options.endpoints.length - 1 }),
      // the watch manager takes a backoff factory (it calls next() on it), whatever the option's type says
      watchBackoff: new ExponentialBackoff({ initialDelay: 50, maxDelay: 2_000 }) as unknown as IBackoff<unknown>,
    },
    defaultCallOptions: (context) => (context.isStream ? {} : { deadline: Date.now() + CALL_DEADLINE_MS }),
  }
}

/** A stored value: the resource as JSON, without resourceVersion (that is the key's mod_revision). */
function encode(r: Resource): string {
  return JSON.stringify({ ...r, metadata: { ...r.metadata, resourceVersion: undefined } })
}

function decode(kv: IKeyValue): Resource {
  let r: Resource
  try {
    r = JSON.parse(kv.value.toString()) as Resource
  } catch (err) {
    throw new Error(`etcd key ${kv.key.toString()}: the value is not JSON: ${(err as Error).message}`)
  }
  if (typeof r !== 'object' || r === null || typeof r.metadata !== 'object' || r.metadata === null)
    throw new Error(`etcd key ${kv.key.toString()}: the value is not a resource`)
  r.metadata.resourceVersion = kv.mod_revision
  return r
}

/** A watched value as a frozen resource; one written by something other than Loom is logged and skipped. */
function decodeOrSkip(kv: IKeyValue): Resource | null {
  try {
    return deepFreeze(decode(kv))
  } catch (err) {
    log('warn', 'control', 'etcd: a value under the prefix is not a resource; watchers go on without it', {
      error: (err as Error).message,
    })
    return null
  }
}

function modOf(r: Resource | undefined): number {
  return r === undefined ? 0 : Number(r.metadata.resourceVersion)
}

function firstKv(range: IRangeResponse | undefined): IKeyValue | undefined {
  return range?.kvs[0]
}

function conflicts(op: string, w: PlannedPut, c: Current): boolean {
  try {
    checkExpected(op, w.key, c.resource, w.expected)
    return false
  } catch {
    return true
  }
}

/** The revision an earlier attempt of this very transaction committed at: every key holds exactly its value. */
function landedRevision(fresh: (IKeyValue | undefined)[], values: string[]): number | null {
  let revision: string | null = null
  for (let i = 0; i < values.length; i++) {
    const kv = fresh[i]
    if (kv === undefined || kv.value.toString() !== values[i]) return null
    if (revision !== null && kv.mod_revision !== revision) return null
    revision = kv.mod_revision
  }
  return revision === null ? null : Number(revision)
}

function describe(keys: { key: string }[]): string {
  return keys.length === 1 ? keys[0]!.key : `${keys[0]!.key} and ${keys.length - 1} more`
}
