/**
 * Self-registered workloads kept in etcd, beside the etcd store's resources, so every control plane on the cluster
 * sees the same registry: each registration is the key `<prefix>/registrations/<namespace>/<name>` (the workload as
 * JSON) attached to an etcd lease of its TTL. A heartbeat, on whichever control plane receives it, renews that lease
 * (the key names it); a change of health rewrites the key; a deregistration deletes it. When the owner stops
 * heart-beating the lease runs out, etcd deletes the key, and every control plane drops the workload. A control plane
 * that starts (or restarts) loads the registrations etcd holds, each with the lease time it has left.
 *
 * The registry stays the in-memory view the translator reads; it answers the API at once, and the etcd writes
 * follow in order (a failed one is logged with what failed and where). It does not expire registrations by its own
 * clock in this mode (`expiresElsewhere`): the lease is the one TTL.
 */
import type { IKeyValue, IWatchResponse, Namespace, Watcher } from 'etcd3'
import { log } from '../../core/log.js'
import type { EtcdStore } from '../store/etcd-store.js'
import type { RegisteredWorkload, Registry, RegistrationEvent } from './registry.js'

export class EtcdRegistrations {
  private readonly kv: Namespace
  /** registration id → the lease its key is attached to (as etcd last showed it) */
  private readonly leases = new Map<string, string>()
  /** registration id → the value etcd last showed (an echo of this control plane's own write changes nothing) */
  private readonly values = new Map<string, string>()
  private registry: Registry | null = null
  /** set while etcd's state is applied to the registry: those changes are not written back */
  private applying = false
  private feed: Watcher | null = null
  private unsubscribe: (() => void) | null = null
  /** the etcd writes, one after another in the order the registry saw the calls */
  private writes: Promise<void> = Promise.resolve()
  private closed = false

  constructor(private readonly store: EtcdStore) {
    this.kv = store.client.namespace(`${store.prefix}/registrations/`)
  }

  /** Loads the registrations etcd holds into `registry`, then keeps both in step until `close`. */
  async attach(registry: Registry): Promise<void> {
    this.registry = registry
    const n = await this.load()
    if (n > 0) log('info', 'control', 'registrations loaded from etcd', { workloads: n })
    this.unsubscribe = registry.onRegistration((e) => {
      if (this.applying || this.closed) return
      this.enqueue(e)
    })
  }

  /**
   * Reads every registration into the registry (dropping those etcd no longer has), then watches from there.
   * Run again when the watch ends (etcd compacted past it after a long disconnection). Returns how many there are.
   */
  private async load(): Promise<number> {
    const res = await this.store.etcdCall(`reading ${this.store.prefix}/registrations/`, () => this.kv.getAll().exec())
    const present = new Set<string>()
    for (const kv of res.kvs) {
      present.add(kv.key.toString())
      this.onPut(kv)
    }
    for (const id of [...this.values.keys()]) if (!present.has(id)) this.onDelete(id)
    const feed = await this.store.etcdCall('watching the registrations', () =>
      this.kv
        .watch()
        .prefix('')
        .startRevision(String(Number(res.header.revision) + 1))
        .create(),
    )
    if (this.closed) {
      await feed.cancel().catch(() => {})
      return res.kvs.length
    }
    this.feed = feed
    feed.on('data', (r: IWatchResponse) => {
      for (const e of r.events) {
        if (e.type === 'Put') this.onPut(e.kv)
        else this.onDelete(e.kv.key.toString())
      }
    })
    feed.on('error', (err: Error) => {
      if (this.closed || this.feed !== feed) return
      this.feed = null
      log('warn', 'control', 'etcd: the registrations watch ended; reading them again', { error: err.message })
      void this.reload()
    })
    return res.kvs.length
  }

  private async reload(): Promise<void> {
    while (!this.closed) {
      try {
        await this.load()
        return
      } catch (err) {
        log('error', 'control', 'etcd: cannot read the registrations again; retrying', { error: String(err) })
        await new Promise((r) => setTimeout(r, 1000))
      }
    }
  }

  /** Waits for the writes under way, then stops watching. Registrations stay in etcd until their leases run out. */
  async close(): Promise<void> {
    if (this.closed) return
    this.closed = true
    this.unsubscribe?.()
    await this.writes
    await this.feed?.cancel().catch(() => {})
  }

  /** Resolves when every write queued so far has been tried (for tests and shutdown). */
  settled(): Promise<void> {
    return this.writes
  }

  private enqueue(e: RegistrationEvent): void {
    this.writes = this.writes.then(async () => {
      const id = e.type === 'deregister' ? e.id : e.workload.id
      try {
        if (e.type === 'register') await this.write(e.workload, null)
        else if (e.type === 'heartbeat') await this.heartbeat(e.workload, e.healthChanged)
        else await this.remove(id)
      } catch (err) {
        log('warn', 'control', `etcd: cannot keep the registration's ${e.type}`, {
          workload: id,
          error: (err as Error).message,
        })
      }
    })
  }

  /** Puts the registration under `lease`, or under a new lease of its TTL (revoking the one it had). */
  private async write(w: RegisteredWorkload, lease: string | null): Promise<void> {
    const value = encode(w)
    const client = this.store.client
    const id =
      lease ??
      (
        await this.store.etcdCall(`granting a lease for ${w.id}`, () =>
          client.leaseClient.leaseGrant({ TTL: w.ttlSeconds, ID: 0 }),
        )
      ).ID
    await this.store.etcdCall(`writing the registration ${w.id}`, () => this.kv.put(w.id).value(value).lease(id).exec())
    const previous = this.leases.get(w.id)
    this.leases.set(w.id, String(id))
    this.values.set(w.id, value)
    if (previous !== undefined && previous !== String(id)) await this.revoke(previous)
  }

  /** Renews the registration's lease (registering it again if etcd has let it go); a change of health is written. */
  private async heartbeat(w: RegisteredWorkload, healthChanged: boolean): Promise<void> {
    const lease = this.leases.get(w.id)
    if (lease === undefined || !(await this.keepAlive(lease))) return this.write(w, null)
    if (healthChanged) await this.write(w, lease)
  }

  private async remove(id: string): Promise<void> {
    const lease = this.leases.get(id)
    await this.store.etcdCall(`deleting the registration ${id}`, () => this.kv.delete().key(id).exec())
    this.leases.delete(id)
    this.values.delete(id)
    if (lease !== undefined) await this.revoke(lease)
  }

  /** One keep-alive of `lease`; false when etcd no longer has it (it ran out). */
  private async keepAlive(lease: string): Promise<boolean> {
    const client = this.store.client
    const res = await this.store.etcdCall(`renewing the lease of a registration`, async () => {
      const stream = await client.leaseClient.leaseKeepAlive()
      try {
        return await new Promise<{ TTL: string }>((resolve, reject) => {
          stream.on('data', resolve)
          stream.on('error', reject)
          stream.write({ ID: lease })
        })
      } finally {
        stream.end()
      }
    })
    return Number(res.TTL) > 0
  }

  private async revoke(lease: string): Promise<void> {
    await this.store.client.leaseClient.leaseRevoke({ ID: lease }).catch(() => {
      // already gone (ran out, or revoked by another control plane): nothing to release
    })
  }

  private onPut(kv: IKeyValue): void {
    const id = kv.key.toString()
    const value = kv.value.toString()
    const known = this.values.get(id) === value && this.leases.get(id) === kv.lease
    this.leases.set(id, kv.lease)
    this.values.set(id, value)
    if (known) return
    let w: RegisteredWorkload
    try {
      w = JSON.parse(value) as RegisteredWorkload
    } catch (err) {
      log('warn', 'control', 'etcd: a registration that is not JSON is skipped', { key: id, error: String(err) })
      return
    }
    this.apply(() => this.registry?.restore([w]))
  }

  private onDelete(id: string): void {
    this.leases.delete(id)
    this.values.delete(id)
    this.apply(() => this.registry?.deregister(id))
  }

  private apply(change: () => void): void {
    this.applying = true
    try {
      change()
    } finally {
      this.applying = false
    }
  }
}

function encode(w: RegisteredWorkload): string {
  const { lastSeenMs: _, ...kept } = w
  return JSON.stringify(kept)
}
