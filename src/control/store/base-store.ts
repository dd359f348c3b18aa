/**
 * What MemoryStore and FileStore share: the in-memory state, metadata stamping (resourceVersion, uid,
 * creationTimestamp, generation), compare-and-set, the serialized write queue and the watch history. Subclasses only
 * make a batch of transactions durable (`persist`) before it is applied.
 *
 * Writes go through one queue. The writes waiting in it when the previous batch finishes are planned together against
 * the committed state plus the batch's earlier writes (so compare-and-set sees them), handed to `persist` as one
 * batch (one log record and one fsync for FileStore: group commit), then applied in order: the in-memory state
 * changes, watchers get the events, and the promises resolve. Reads only ever see durable writes. Each transaction
 * (one put, putAll or delete) gets the next revision.
 *
 * Stored resources are deep-frozen and shared by watch events; get/list/put/delete return copies the caller owns.
 * The metadata and compare-and-set helpers at the end are shared with EtcdStore, so both stores stamp and refuse alike.
 */
import { randomUUID } from 'node:crypto'
import { keyOf, type Resource, resourceKey } from '../../api/resource.js'
import {
  type ListResult,
  type PutOptions,
  type Store,
  StoreConflictError,
  type Watch,
  type WatchEvent,
} from './store.js'
import { WatchHistory } from './watch-history.js'

/** One transaction as it is logged and replayed: its revision and the resulting state of each key it touches. */
export interface Transaction {
  revision: number
  ops: TxnOp[]
}

export type TxnOp = { op: 'put'; resource: Resource } | { op: 'delete'; key: string }

export interface StoreOptions {
  /** watch events kept in memory for watch() from an older revision (default 10,000) */
  historyLimit?: number
}

type Lookup = (key: string) => Resource | undefined

interface Plan<T> {
  ops: TxnOp[]
  result: T
}

interface WriteJob {
  kind: 'write'
  plan: (lookup: Lookup, revision: number) => Plan<unknown>
  resolve: (value: unknown) => void
  reject: (error: unknown) => void
}

interface TaskJob {
  kind: 'task'
  run: () => Promise<unknown>
  resolve: (value: unknown) => void
  reject: (error: unknown) => void
}

type Outcome =
  | { job: WriteJob; ok: true; value: unknown; txn?: Transaction }
  | { job: WriteJob; ok: false; error: unknown }

/** writes planned and persisted together at most */
const MAX_BATCH = 512

export abstract class BaseStore implements Store {
  private readonly items = new Map<string, Resource>()
  private readonly byKind = new Map<string, Map<string, Resource>>()
  private rev = 0
  private readonly history: WatchHistory
  private queue: (WriteJob | TaskJob)[] = []
  private draining = false
  private idleWaiters: (() => void)[] = []
  private closing: Promise<void> | null = null
  /** set when a write could not be made durable: later writes are refused until the store is reopened */
  private failure: Error | null = null

  constructor(options: StoreOptions = {}) {
    this.history = new WatchHistory(options.historyLimit)
  }

  /** Makes a batch of transactions durable; the store applies them only after this resolves. */
  protected abstract persist(txns: Transaction[]): Promise<void>

  /** Runs after each applied batch, still inside the write queue (FileStore compacts its log here). */
  protected async afterCommit(): Promise<void> {}

  /** Releases what the subclass holds, once every queued write has finished. */
  protected async release(): Promise<void> {}

  get revision(): number {
    return this.rev
  }

  async get(kind: string, namespace: string, name: string): Promise<Resource | null> {
    const r = this.items.get(resourceKey(kind, namespace, name))
    return r === undefined ? null : copy(r)
  }

  async list(kind?: string, namespace?: string): Promise<ListResult> {
    const source = kind === undefined ? this.items : this.byKind.get(kind)
    const found: [string, Resource][] = []
    if (source !== undefined) {
      for (const [key, r] of source)
        if (namespace === undefined || r.metadata.namespace === namespace) found.push([key, r])
    }
    found.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0))
    return { revision: this.rev, items: found.map(([, r]) => copy(r)) }
  }

  /**
   * Compare-and-set uses `options.expectedResourceVersion`, else the resource's own `metadata.resourceVersion` when
   * it is set (as in Kubernetes: writing back what you read fails if someone wrote in between); neither = unconditional.
   */
  async put(resource: Resource, options?: PutOptions): Promise<Resource> {
    const r = normalize(resource)
    const expected = options?.expectedResourceVersion ?? r.metadata.resourceVersion
    return this.write((lookup, revision) => {
      const key = keyOf(r)
      const existing = lookup(key)
      checkExpected('put', key, existing, expected)
      const stored = stamp(r, existing, revision, timestamp())
      return { ops: [{ op: 'put', resource: stored }], result: copy(stored) }
    })
  }

  /** All or nothing, one revision; each resource's `metadata.resourceVersion`, when set, is its compare-and-set. */
  async putAll(resources: Resource[]): Promise<Resource[]> {
    const rs = resources.map(normalize)
    const keys = new Set<string>()
    for (const r of rs) {
      const key = keyOf(r)
      if (keys.has(key)) throw new TypeError(`putAll: ${key} appears more than once`)
      keys.add(key)
    }
    if (rs.length === 0) return []
    return this.write((lookup, revision) => {
      const now = timestamp()
      const stored = rs.map((r) => {
        const key = keyOf(r)
        const existing = lookup(key)
        checkExpected('putAll', key, existing, r.metadata.resourceVersion)
        return stamp(r, existing, revision, now)
      })
      return {
        ops: stored.map((resource): TxnOp => ({ op: 'put', resource })),
        result: stored.map(copy),
      }
    })
  }

  /** The deleted resource as it was last stored, or null (no new revision) when it did not exist. */
  async delete(kind: string, namespace: string, name: string, options?: PutOptions): Promise<Resource | null> {
    const key = resourceKey(kind, namespace, name)
    const expected = options?.expectedResourceVersion
    return this.write((lookup): Plan<Resource | null> => {
      const existing = lookup(key)
      checkExpected('delete', key, existing, expected)
      if (existing === undefined) return { ops: [], result: null }
      return { ops: [{ op: 'delete', key }], result: copy(existing) }
    })
  }

  /**
   * Delivers the kept events after `fromRevision` synchronously, before returning, then live events as each write is
   * applied (after it is durable, before its promise resolves). Event resources are frozen and shared: copy them
   * before changing them. Throws StoreCompactedError when events after `fromRevision` are no longer kept. An exception
   * from `onEvent` does not affect the write or other watchers; it is rethrown asynchronously.
   */
  watch(fromRevision: number, onEvent: (e: WatchEvent) => void): Watch {
    if (this.closing !== null) throw new Error('store is closed')
    return this.history.watch(fromRevision, onEvent)
  }

  /** Refuses new writes, closes every watch, waits for queued writes, then releases files. Idempotent. */
  close(): Promise<void> {
    if (this.closing === null) {
      this.history.closeAll()
      this.closing = this.idle().then(() => this.release())
    }
    return this.closing
  }

  protected get closed(): boolean {
    return this.closing !== null
  }

  /** Every stored resource (frozen), for snapshots. */
  protected resources(): IterableIterator<Resource> {
    return this.items.values()
  }

  /** Loads a snapshot into an empty store: events up to `revision` are unknown to watch(). */
  protected load(revision: number, resources: Resource[]): void {
    for (const r of resources) this.setItem(keyOf(r), deepFreeze(r))
    this.rev = revision
    this.history.forgetThrough(revision)
  }

  /** Applies a durable transaction: state, revision, history, watchers. Used for live writes and log replay. */
  protected apply(txn: Transaction): void {
    if (txn.revision !== this.rev + 1)
      throw new Error(`transaction revision ${txn.revision} does not follow ${this.rev}`)
    const revision = txn.revision
    const events: WatchEvent[] = []
    for (const op of txn.ops) {
      if (op.op === 'put') {
        const key = keyOf(op.resource)
        const resource = deepFreeze(op.resource)
        events.push({ type: 'PUT', revision, resource, previous: this.items.get(key) ?? null })
        this.setItem(key, resource)
      } else {
        const resource = this.items.get(op.key)
        if (resource === undefined) throw new Error(`transaction ${revision} deletes ${op.key}, which does not exist`)
        this.deleteItem(op.key, resource.kind)
        events.push({ type: 'DELETE', revision, resource })
      }
    }
    this.rev = revision
    this.history.publish(events)
  }

  /** Runs `run` alone in the write queue (no write is planned or persisted meanwhile). */
  protected exclusive<T>(run: () => Promise<T>): Promise<T> {
    const refused = this.refusal()
    if (refused !== null) return Promise.reject(refused)
    return new Promise<T>((resolve, reject) => {
      this.queue.push({ kind: 'task', run, resolve: resolve as (value: unknown) => void, reject })
      this.kick()
    })
  }

  /** Stops accepting writes after a failure that may have left the files in an unknown state. */
  protected fail(message: string, cause: unknown): Error {
    this.failure ??= new Error(`${message}; the store accepts no more writes until it is reopened`, { cause })
    return this.failure
  }

  private write<T>(plan: (lookup: Lookup, revision: number) => Plan<T>): Promise<T> {
    const refused = this.refusal()
    if (refused !== null) return Promise.reject(refused)
    return new Promise<T>((resolve, reject) => {
      this.queue.push({ kind: 'write', plan, resolve: resolve as (value: unknown) => void, reject })
      this.kick()
    })
  }

  private refusal(): Error | null {
    if (this.closing !== null) return new Error('store is closed')
    return this.failure
  }

  private kick(): void {
    if (this.draining) return
    this.draining = true
    void this.drain()
  }

  private async drain(): Promise<void> {
    while (this.queue.length > 0) {
      const head = this.queue[0]!
      if (head.kind === 'task') {
        this.queue.shift()
        if (this.failure !== null) head.reject(this.failure)
        else {
          try {
            head.resolve(await head.run())
          } catch (e) {
            head.reject(e)
          }
        }
        continue
      }
      let n = 1
      while (n < this.queue.length && n < MAX_BATCH && this.queue[n]!.kind === 'write') n++
      await this.commit(this.queue.splice(0, n) as WriteJob[])
    }
    this.draining = false
    const waiters = this.idleWaiters
    this.idleWaiters = []
    for (const w of waiters) w()
  }

  private idle(): Promise<void> {
    if (!this.draining) return Promise.resolve()
    return new Promise((resolve) => this.idleWaiters.push(resolve))
  }

  private async commit(jobs: WriteJob[]): Promise<void> {
    if (this.failure !== null) {
      for (const job of jobs) job.reject(this.failure)
      return
    }
    const staged = new Map<string, Resource | null>()
    const lookup: Lookup = (key) => (staged.has(key) ? (staged.get(key) ?? undefined) : this.items.get(key))
    const outcomes: Outcome[] = []
    const txns: Transaction[] = []
    let revision = this.rev
    for (const job of jobs) {
      try {
        const { ops, result } = job.plan(lookup, revision + 1)
        if (ops.length === 0) {
          outcomes.push({ job, ok: true, value: result })
          continue
        }
        const txn = { revision: ++revision, ops }
        for (const op of ops) {
          if (op.op === 'put') staged.set(keyOf(op.resource), op.resource)
          else staged.set(op.key, null)
        }
        txns.push(txn)
        outcomes.push({ job, ok: true, value: result, txn })
      } catch (error) {
        outcomes.push({ job, ok: false, error })
      }
    }
    if (txns.length > 0) {
      try {
        await this.persist(txns)
      } catch (e) {
        const failure = this.fail(`write of revisions ${txns[0]!.revision}-${revision} failed`, e)
        for (const o of outcomes) o.job.reject(failure)
        return
      }
    }
    for (const o of outcomes) {
      if (!o.ok) {
        o.job.reject(o.error)
        continue
      }
      if (o.txn !== undefined) {
        try {
          this.apply(o.txn)
        } catch (e) {
          o.job.reject(this.fail(`applying revision ${o.txn.revision} failed`, e))
          continue
        }
      }
      o.job.resolve(o.value)
    }
    try {
      await this.afterCommit()
    } catch (e) {
      this.fail('compaction failed', e)
    }
  }

  private setItem(key: string, r: Resource): void {
    this.items.set(key, r)
    let ofKind = this.byKind.get(r.kind)
    if (ofKind === undefined) this.byKind.set(r.kind, (ofKind = new Map()))
    ofKind.set(key, r)
  }

  private deleteItem(key: string, kind: string): void {
    this.items.delete(key)
    const ofKind = this.byKind.get(kind)
    ofKind?.delete(key)
    if (ofKind?.size === 0) this.byKind.delete(kind)
  }
}

/** A caller-owned copy of a stored (JSON-only) resource; faster than structuredClone for such data. */
export function copy(r: Resource): Resource {
  return JSON.parse(JSON.stringify(r)) as Resource
}

/** A JSON copy of a resource with its key fields checked and namespace defaulted to `default`. */
export function normalize(input: Resource): Resource {
  if (typeof input !== 'object' || input === null || Array.isArray(input)) {
    throw new TypeError('resource must be an object')
  }
  const r = JSON.parse(JSON.stringify(input)) as Resource
  const m = r.metadata as Partial<Resource['metadata']> | undefined
  if (typeof r.kind !== 'string' || r.kind === '') throw new TypeError('resource has no kind')
  if (typeof m !== 'object' || m === null || Array.isArray(m))
    throw new TypeError(`${r.kind}: resource has no metadata`)
  if (typeof m.name !== 'string' || m.name === '') throw new TypeError(`${r.kind}: resource has no metadata.name`)
  if (m.namespace === undefined || m.namespace === '') m.namespace = 'default'
  if (typeof m.namespace !== 'string') throw new TypeError(`${r.kind} ${m.name}: metadata.namespace must be a string`)
  for (const part of [r.kind, m.namespace, m.name]) {
    if (part.includes('/'))
      throw new TypeError(`${r.kind}/${m.namespace}/${m.name}: kind, namespace and name cannot contain '/'`)
  }
  if (m.resourceVersion !== undefined && typeof m.resourceVersion !== 'string') {
    throw new TypeError(`${keyOf(r)}: metadata.resourceVersion must be a string`)
  }
  return r
}

export function checkExpected(
  op: string,
  key: string,
  existing: Resource | undefined,
  expected: string | undefined,
): void {
  if (expected === undefined) return
  const found = existing?.metadata.resourceVersion
  if (expected === '') {
    if (found !== undefined) {
      throw new StoreConflictError(`${op} ${key}: expected it not to exist, but it exists at resourceVersion ${found}`)
    }
  } else if (found !== expected) {
    throw new StoreConflictError(
      `${op} ${key}: expected resourceVersion ${expected}, but ` +
        (found === undefined ? 'it does not exist' : `it is at resourceVersion ${found}`),
    )
  }
}

/** Sets the store-owned metadata; keeps uid and creationTimestamp of an update, bumping generation on spec change. */
export function stamp(r: Resource, existing: Resource | undefined, revision: number, now: string): Resource {
  const m = r.metadata
  m.resourceVersion = String(revision)
  if (existing === undefined) {
    m.uid = randomUUID()
    m.creationTimestamp = now
    m.generation = 1
  } else {
    const previous = existing.metadata
    m.uid = previous.uid
    m.creationTimestamp = previous.creationTimestamp
    m.generation = (previous.generation ?? 0) + (jsonEqual(existing.spec, r.spec) ? 0 : 1)
  }
  return r
}

/** RFC 3339 in UTC, whole seconds, as Kubernetes writes creationTimestamp. */
export function timestamp(): string {
  return new Date().toISOString().replace(/\.\d{3}Z$/, 'Z')
}

function jsonEqual(a: unknown, b: unknown): boolean {
  if (a === b) return true
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null) return false
  if (Array.isArray(a)) {
    if (!Array.isArray(b) || a.length !== b.length) return false
    return a.every((x, i) => jsonEqual(x, b[i]))
  }
  if (Array.isArray(b)) return false
  const ao = a as Record<string, unknown>
  const bo = b as Record<string, unknown>
  const keys = Object.keys(ao)
  if (keys.length !== Object.keys(bo).length) return false
  return keys.every((k) => Object.hasOwn(bo, k) && jsonEqual(ao[k], bo[k]))
}

export function deepFreeze<T>(value: T): T {
  if (typeof value === 'object' && value !== null && !Object.isFrozen(value)) {
    Object.freeze(value)
    for (const v of Object.values(value)) deepFreeze(v)
  }
  return value
}
