/**
 * An informer: a cache of one resource type kept in step with the API server the way client-go's reflector does.
 *
 *   list (pages of 500) ─► cache, resourceVersion R ─► watch from R (allowWatchBookmarks) ─► events move R on
 *        ▲                                                     │ stream ended by the server: watch again from R
 *        └──── 410 Gone (R compacted away), as a status or as an ERROR event: list again ◄┘ failure: back off, then the same
 *
 * A re-list replaces the cache whole, so an object deleted while no watch was open goes too. Bookmarks only move R:
 * after one, a watch that breaks resumes from a recent version instead of needing a re-list.
 */
import { log } from '../../core/log.js'
import { KubeApiError, type KubeClient, type KubeList, type KubeObject, type WatchHandle } from './client.js'

export interface InformerOptions {
  /** asked of the server per watch, seconds (default 300; the server ends the stream then and we watch again) */
  watchTimeoutSeconds?: number
  /** first back-off after a failure, ms (default 250, doubling to 10 s) */
  backoffMs?: number
}

/** What an informer did, for tests and `/debug`: each counter only grows. */
export interface InformerStats {
  lists: number
  watches: number
  events: number
  bookmarks: number
  /** re-lists because the watched version was gone (410) */
  gone: number
  /** watches that failed or were cut (not those the server ended cleanly) */
  failures: number
}

export class Informer {
  readonly path: string
  readonly stats: InformerStats = { lists: 0, watches: 0, events: 0, bookmarks: 0, gone: 0, failures: 0 }
  readonly #client: KubeClient
  readonly #onChange: () => void
  readonly #timeout: number
  readonly #backoff0: number
  readonly #items = new Map<string, KubeObject>()
  #rv = ''
  #watch: WatchHandle | null = null
  #timer: NodeJS.Timeout | null = null
  #backoff: number
  #stopped = false
  #synced = false
  #syncWaiters: Array<() => void> = []
  #lastError = ''

  /** `path` is the collection's: `/api/v1/services`, `/apis/networking.istio.io/v1/virtualservices`. */
  constructor(client: KubeClient, path: string, onChange: () => void, options: InformerOptions = {}) {
    this.#client = client
    this.path = path
    this.#onChange = onChange
    this.#timeout = options.watchTimeoutSeconds ?? 300
    this.#backoff0 = options.backoffMs ?? 250
    this.#backoff = this.#backoff0
  }

  start(): void {
    void this.#list()
  }

  /** Resolves after the first list has filled the cache. */
  synced(): Promise<void> {
    if (this.#synced) return Promise.resolve()
    return new Promise((resolve) => this.#syncWaiters.push(resolve))
  }

  get hasSynced(): boolean {
    return this.#synced
  }

  /** The resourceVersion the next watch starts from. */
  get resourceVersion(): string {
    return this.#rv
  }

  get lastError(): string {
    return this.#lastError
  }

  /** The cached objects, by `namespace/name`. Do not mutate them. */
  items(): KubeObject[] {
    return [...this.#items.values()]
  }

  stop(): void {
    this.#stopped = true
    this.#watch?.close()
    this.#watch = null
    if (this.#timer !== null) clearTimeout(this.#timer)
    this.#timer = null
    for (const w of this.#syncWaiters.splice(0)) w()
  }

  async #list(): Promise<void> {
    if (this.#stopped) return
    this.stats.lists++
    const fresh = new Map<string, KubeObject>()
    let rv = ''
    try {
      let cont = ''
      do {
        const qs = new URLSearchParams({ limit: '500', ...(cont !== '' ? { continue: cont } : {}) })
        const page = await this.#client.request<KubeList>('GET', `${this.path}?${qs}`)
        for (const o of page.items ?? []) fresh.set(keyOfObject(o), o)
        rv = page.metadata?.resourceVersion ?? ''
        cont = page.metadata?.continue ?? ''
      } while (cont !== '')
    } catch (err) {
      if (err instanceof KubeApiError && err.status === 404 && !this.#synced) {
        // a collection the server does not serve (Istio's CRDs not installed): empty for now, so the control plane
        // starts; listed again after the longest back-off, and watched once it is there
        log('warn', 'kubernetes', 'the API server does not serve this collection; taking it as empty for now', {
          path: this.path,
        })
        this.#markSynced()
        this.#backoff = 10_000
      }
      return this.#failed(err as Error, () => this.#list())
    }
    if (this.#stopped) return
    this.#items.clear()
    for (const [k, o] of fresh) this.#items.set(k, o)
    this.#rv = rv
    this.#backoff = this.#backoff0
    this.#markSynced()
    this.#onChange()
    void this.#startWatch()
  }

  #markSynced(): void {
    if (this.#synced) return
    this.#synced = true
    for (const w of this.#syncWaiters.splice(0)) w()
  }

  async #startWatch(): Promise<void> {
    if (this.#stopped) return
    this.stats.watches++
    const query = {
      resourceVersion: this.#rv,
      allowWatchBookmarks: 'true',
      timeoutSeconds: String(this.#timeout),
    }
    let gone = false
    const handle = await this.#client.watch(
      this.path,
      query,
      (e) => {
        if (gone || this.#stopped) return
        if (e.type === 'ERROR') {
          // a Status: 410 when the version we watch from is no longer kept
          const code = (e.object as { code?: number }).code
          gone = code === 410
          this.#watch?.close()
          this.#watch = null
          if (gone) this.#gone()
          else
            this.#failed(new Error(`watch ${this.path}: ${JSON.stringify(e.object).slice(0, 200)}`), () => this.#list())
          return
        }
        this.stats.events++
        const rv = e.object.metadata?.resourceVersion
        if (e.type === 'BOOKMARK') this.stats.bookmarks++
        else if (e.type === 'ADDED' || e.type === 'MODIFIED') {
          this.#items.set(keyOfObject(e.object), e.object)
          this.#onChange()
        } else if (e.type === 'DELETED') {
          if (this.#items.delete(keyOfObject(e.object))) this.#onChange()
        }
        if (rv !== undefined && rv !== '') this.#rv = rv
      },
      (err) => {
        if (this.#stopped || gone) return
        this.#watch = null
        if (err === null) return void this.#startWatch()
        if (err instanceof KubeApiError && err.status === 410) return this.#gone()
        this.#failed(err, () => this.#startWatch())
      },
    )
    if (this.#stopped) handle.close()
    else this.#watch = handle
  }

  #gone(): void {
    this.stats.gone++
    log('info', 'kubernetes', 'the watched version is gone; listing again', {
      path: this.path,
      resourceVersion: this.#rv,
    })
    this.#rv = ''
    void this.#list()
  }

  #failed(err: Error, retry: () => Promise<void>): void {
    if (this.#stopped) return
    this.stats.failures++
    this.#lastError = err.message
    const wait = this.#backoff
    this.#backoff = Math.min(this.#backoff * 2, 10_000)
    log('warn', 'kubernetes', 'list or watch failed; trying again', {
      path: this.path,
      error: err.message,
      in_ms: wait,
    })
    this.#timer = setTimeout(() => {
      this.#timer = null
      void retry()
    }, wait)
    this.#timer.unref()
  }
}

export function keyOfObject(o: KubeObject): string {
  return `${o.metadata?.namespace ?? ''}/${o.metadata?.name ?? ''}`
}
