/**
 * Per-node snapshot cache for the xDS server.
 *
 * - Versions are content hashes: each resource gets a hash of its type URL, name and canonical JSON; a type's
 *   version is a hash of its (name, hash) pairs. An unchanged type keeps its version whoever builds the snapshot.
 * - Serialization is the main CPU cost at scale, so each distinct resource content is encoded to protobuf once and
 *   the bytes are shared by every node whose snapshot holds it (a Map keyed by content hash, reference counted:
 *   bytes live exactly as long as some node's snapshot uses them).
 * - Resources and the maps holding them are treated as immutable once handed over: hashes are memoized per
 *   resource object, a type's fingerprint per map object (alike proxies are handed one map and cost a lookup).
 * - Proxies alike get the same content: a type whose resources (names and content hashes, in the order given) match
 *   one another node holds is not built again: the nodes share one CachedType (its item map, version and snapshot
 *   items), interned by a fingerprint of those hashes and reference counted. A node's cost in the cache is then an
 *   entry pointing at shared types, plus what is really its own (a type no other node has).
 * - Watchers hear about a node whose snapshot changed, with the type URLs whose versions changed.
 */
import { hash } from 'node:crypto'
import { type EncodedAny, encodeResource, ProtoJsonError } from './proto.js'
import { type ResourceMap, type Snapshot, TYPE_URL, type TypeUrl } from './snapshot.js'

export interface CachedResource {
  readonly name: string
  /** content hash: the resource's version in delta xDS */
  readonly hash: string
  readonly resource: Record<string, unknown>
  /** the encoded Any, shared with every node holding the same content */
  readonly any: EncodedAny
}

export interface CachedType {
  /** content hash over the type's resources */
  readonly version: string
  readonly items: ReadonlyMap<string, CachedResource>
}

export interface CacheEntry {
  readonly nodeId: string
  readonly snapshot: Snapshot
  readonly types: ReadonlyMap<string, CachedType>
  readonly setAt: number
}

/** Called after a node's snapshot changed, with the type URLs whose version changed (all of them when cleared). */
export type SnapshotWatcher = (nodeId: string, changedTypes: string[]) => void

export interface CacheStats {
  nodes: number
  /** distinct per-type contents held (nodes with the same content share one) */
  sharedTypes: number
  /** distinct encoded resources held */
  encodedResources: number
  encodedBytes: number
  /** resources that had to be serialized */
  encodes: number
  /** resources whose bytes were already there (another node or an earlier snapshot) */
  reuses: number
}

const EMPTY_TYPE_VERSION = shortHash('')

export function shortHash(s: string): string {
  // the one-shot form: no Hash object per call (hashing is a large part of a rebuild of many small snapshots)
  return hash('sha256', s, 'hex').slice(0, 16)
}

/** JSON with object keys sorted at every level and undefined members dropped. */
export function canonicalJson(v: unknown): string {
  switch (typeof v) {
    case 'string':
      return JSON.stringify(v)
    case 'number':
      return Number.isFinite(v) ? String(v) : 'null'
    case 'boolean':
      return v ? 'true' : 'false'
    case 'bigint':
      return String(v)
    case 'object': {
      if (v === null) return 'null'
      if (Array.isArray(v)) {
        let s = '['
        for (let i = 0; i < v.length; i++) {
          if (i > 0) s += ','
          s += v[i] === undefined ? 'null' : canonicalJson(v[i])
        }
        return `${s}]`
      }
      if (v instanceof Uint8Array) return JSON.stringify(Buffer.from(v).toString('base64'))
      const o = v as Record<string, unknown>
      const keys = Object.keys(o)
      if (keys.length > 1) keys.sort()
      let s = '{'
      for (const k of keys) {
        const x = o[k]
        if (x === undefined) continue
        if (s.length > 1) s += ','
        s += `${JSON.stringify(k)}:${canonicalJson(x)}`
      }
      return `${s}}`
    }
    default:
      return 'null'
  }
}

/** The version of a set of resources: a hash over their sorted (name, content hash) pairs. */
export function versionOf(items: Iterable<{ name: string; hash: string }>): string {
  const pairs: string[] = []
  let sorted = true
  for (const r of items) {
    const p = `${r.name}\u0000${r.hash}`
    if (sorted && pairs.length > 0 && p < pairs[pairs.length - 1]!) sorted = false
    pairs.push(p)
  }
  // the translator hands over maps sorted by name: then there is nothing to sort
  if (!sorted) pairs.sort()
  return pairs.length === 0 ? EMPTY_TYPE_VERSION : shortHash(pairs.join('\n'))
}

/** The name xDS knows a resource by: `cluster_name` for a ClusterLoadAssignment, else `name`. */
export function resourceName(typeUrl: string, resource: Record<string, unknown>): string {
  const n = typeUrl === TYPE_URL.endpoint ? resource.cluster_name : resource.name
  if (typeof n !== 'string' || !n) throw new Error(`${typeUrl}: resource without a name`)
  return n
}

/** Builds a Snapshot from lists of resources per type (versions are filled in by the cache). */
export function makeSnapshot(
  byType: Partial<Record<TypeUrl, Iterable<Record<string, unknown>> | ResourceMap>>,
): Snapshot {
  const resources = new Map<TypeUrl, { version: string; items: ResourceMap }>()
  for (const [typeUrl, list] of Object.entries(byType) as [TypeUrl, Iterable<Record<string, unknown>>][]) {
    if (!list) continue
    const items: ResourceMap = list instanceof Map ? list : new Map()
    if (!(list instanceof Map)) for (const r of list) items.set(resourceName(typeUrl, r), r)
    resources.set(typeUrl, { version: '', items })
  }
  return { resources }
}

/** One type's content, shared by the nodes that have it. */
interface InternedType {
  readonly key: string
  readonly type: CachedType
  /** the resources as handed over by the first node that had this content */
  readonly resources: ResourceMap
  refs: number
}

export class SnapshotCache {
  private readonly entries = new Map<string, CacheEntry>()
  /** per node: the interned types its entry uses */
  private readonly held = new Map<string, InternedType[]>()
  private readonly interned = new Map<string, InternedType>()
  /** by content hash: the resource as cached (one object for every node holding that content), reference counted */
  private readonly encoded = new Map<string, { cached: CachedResource; refs: number }>()
  private readonly memo = new WeakMap<object, { typeUrl: string; name: string; hash: string }>()
  /** the fingerprint of a resource map already seen (alike proxies are handed the same map object) */
  private readonly mapKeys = new WeakMap<ResourceMap, { typeUrl: string; key: string }>()
  private readonly watchers = new Map<string, Set<SnapshotWatcher>>()
  private encodes = 0
  private reuses = 0

  /**
   * Stores a node's snapshot, encoding what is new, and tells the watchers which types changed. Returns the changed
   * type URLs (empty when nothing changed). Throws, leaving the old snapshot in place, when a resource does not
   * encode (the error names the type, resource and field path).
   */
  setSnapshot(nodeId: string, snapshot: Snapshot): string[] {
    const old = this.entries.get(nodeId)
    const oldHeld = this.held.get(nodeId)
    const types = new Map<string, CachedType>()
    const resources = new Map<TypeUrl, { version: string; items: ResourceMap }>()
    const held: InternedType[] = []
    try {
      for (const [typeUrl, { items }] of snapshot.resources) {
        const t = this.intern(typeUrl, items)
        held.push(t)
        types.set(typeUrl, t.type)
        resources.set(typeUrl, { version: t.type.version, items: t.resources })
      }
    } catch (e) {
      for (const t of held) this.releaseType(t)
      throw e
    }
    this.entries.set(nodeId, { nodeId, snapshot: { resources }, types, setAt: Date.now() })
    this.held.set(nodeId, held)
    if (oldHeld) for (const t of oldHeld) this.releaseType(t)
    const changed = changedTypes(old, types)
    if (changed.length > 0) this.notify(nodeId, changed)
    return changed
  }

  /**
   * The shared CachedType for these resources: found by a fingerprint of their content hashes in the order given
   * (the translator builds alike proxies' maps in the same order), else built, encoding what is new. Takes a
   * reference.
   */
  private intern(typeUrl: string, items: ResourceMap): InternedType {
    const seen = this.mapKeys.get(items)
    if (seen !== undefined && seen.typeUrl === typeUrl) {
      const have = this.interned.get(seen.key)
      if (have) {
        have.refs++
        this.reuses += items.size
        return have
      }
    }
    const hashes: string[] = new Array(items.size)
    let i = 0
    for (const [name, resource] of items) hashes[i++] = this.hashOf(typeUrl, name, resource)
    const key = `${typeUrl}\n${items.size}\n${shortHash(hashes.join(','))}`
    this.mapKeys.set(items, { typeUrl, key })
    const have = this.interned.get(key)
    if (have) {
      have.refs++
      this.reuses += items.size
      return have
    }
    const cached = new Map<string, CachedResource>()
    const acquired: string[] = []
    try {
      i = 0
      for (const [name, resource] of items) {
        const hash = hashes[i++]!
        cached.set(name, this.acquire(typeUrl, name, hash, resource))
        acquired.push(hash)
      }
    } catch (e) {
      for (const h of acquired) this.release(h)
      throw e
    }
    const t: InternedType = {
      key,
      type: { version: versionOf(cached.values()), items: cached },
      resources: items,
      refs: 1,
    }
    this.interned.set(key, t)
    return t
  }

  private releaseType(t: InternedType): void {
    if (--t.refs > 0) return
    if (this.interned.get(t.key) === t) this.interned.delete(t.key)
    for (const r of t.type.items.values()) this.release(r.hash)
  }

  /** per warm key: the interned types a warm snapshot holds (`warm`) */
  private readonly warmHeld = new Map<string, InternedType[]>()

  /**
   * Holds the encoded resources of a snapshot no node has, under `key` (null lets them go): what the first proxies
   * to connect are likely to get is then encoded already. A warm snapshot is no node's: it is not served, listed
   * or watched. Throws as `setSnapshot` does, keeping what `key` held.
   */
  warm(key: string, snapshot: Snapshot | null): void {
    const held: InternedType[] = []
    if (snapshot !== null) {
      try {
        for (const [typeUrl, { items }] of snapshot.resources) held.push(this.intern(typeUrl, items))
      } catch (e) {
        for (const t of held) this.releaseType(t)
        throw e
      }
    }
    const old = this.warmHeld.get(key)
    if (held.length > 0) this.warmHeld.set(key, held)
    else this.warmHeld.delete(key)
    if (old) for (const t of old) this.releaseType(t)
  }

  /** The keys `warm` holds snapshots under. */
  warmKeys(): string[] {
    return [...this.warmHeld.keys()]
  }

  /** The node's snapshot, with the cache's content-hash versions. */
  getSnapshot(nodeId: string): Snapshot | undefined {
    return this.entries.get(nodeId)?.snapshot
  }

  /** The node's snapshot with per-resource hashes and encoded bytes (what the xDS server serves). */
  getEntry(nodeId: string): CacheEntry | undefined {
    return this.entries.get(nodeId)
  }

  /** Forgets one node's snapshot, or every snapshot. Watchers of those nodes are told every type changed. */
  clear(nodeId?: string): void {
    const ids = nodeId === undefined ? [...this.entries.keys()] : [nodeId]
    for (const id of ids) {
      const e = this.entries.get(id)
      if (!e) continue
      this.entries.delete(id)
      for (const t of this.held.get(id) ?? []) this.releaseType(t)
      this.held.delete(id)
      this.notify(id, [...e.types.keys()])
    }
  }

  nodeIds(): string[] {
    return [...this.entries.keys()]
  }

  /** Watches one node (or every node with `'*'`); returns the function that stops watching. */
  watch(nodeId: string, watcher: SnapshotWatcher): () => void {
    let set = this.watchers.get(nodeId)
    if (!set) this.watchers.set(nodeId, (set = new Set()))
    set.add(watcher)
    return () => {
      set.delete(watcher)
      if (set.size === 0 && this.watchers.get(nodeId) === set) this.watchers.delete(nodeId)
    }
  }

  stats(): CacheStats {
    let bytes = 0
    for (const e of this.encoded.values()) bytes += e.cached.any.value.length
    return {
      nodes: this.entries.size,
      sharedTypes: this.interned.size,
      encodedResources: this.encoded.size,
      encodedBytes: bytes,
      encodes: this.encodes,
      reuses: this.reuses,
    }
  }

  private hashOf(typeUrl: string, name: string, resource: Record<string, unknown>): string {
    const m = this.memo.get(resource)
    if (m && m.typeUrl === typeUrl && m.name === name) return m.hash
    const hash = shortHash(`${typeUrl}\n${name}\n${canonicalJson(resource)}`)
    this.memo.set(resource, { typeUrl, name, hash })
    return hash
  }

  /**
   * The cached resource of this content, encoded the first time. The hash names the type, name and content, so the
   * object is the same for every node (its `resource` is the first one handed over: equal to any later one).
   */
  private acquire(typeUrl: string, name: string, hash: string, resource: Record<string, unknown>): CachedResource {
    const e = this.encoded.get(hash)
    if (e) {
      e.refs++
      this.reuses++
      return e.cached
    }
    let any: EncodedAny
    try {
      any = encodeResource(resource, typeUrl)
    } catch (err) {
      const detail = err instanceof ProtoJsonError ? err.message : String(err)
      throw new Error(`cannot encode ${typeUrl.slice(typeUrl.lastIndexOf('.') + 1)} "${name}": ${detail}`)
    }
    if (any.type_url !== typeUrl) throw new Error(`resource "${name}" has @type ${any.type_url}, expected ${typeUrl}`)
    this.encodes++
    const cached: CachedResource = { name, hash, resource, any }
    this.encoded.set(hash, { cached, refs: 1 })
    return cached
  }

  private release(hash: string): void {
    const e = this.encoded.get(hash)
    if (e && --e.refs <= 0) this.encoded.delete(hash)
  }

  private notify(nodeId: string, changed: string[]): void {
    for (const key of [nodeId, '*']) {
      for (const w of [...(this.watchers.get(key) ?? [])]) {
        try {
          w(nodeId, changed)
        } catch {
          // a failing watcher must not stop the others
        }
      }
    }
  }
}

function changedTypes(old: CacheEntry | undefined, types: ReadonlyMap<string, CachedType>): string[] {
  const all = new Set([...(old?.types.keys() ?? []), ...types.keys()])
  return [...all].filter((t) => old?.types.get(t)?.version !== types.get(t)?.version)
}
