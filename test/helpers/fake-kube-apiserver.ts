/**
 * A fake Kubernetes API server for tests: no real one can run here, so this one speaks the protocol `loom control
 * --kubernetes` uses, in the shapes the Kubernetes API documents (API concepts: "Efficient detection of changes",
 * "Watch bookmarks", "410 Gone responses"):
 *
 * - HTTPS with its own self-signed certificate and a bearer token, reached through a kubeconfig file it writes;
 * - `GET <collection>`: a `<Kind>List` with `metadata.resourceVersion`, the collection's version (items of built-in
 *   kinds without apiVersion and kind, custom resources with them, converted to the version asked for);
 * - `GET <collection>?watch=1&resourceVersion=R`: newline-delimited JSON `{"type","object"}` events after R, then
 *   live ones; `allowWatchBookmarks=true` gets `BOOKMARK` events (only metadata.resourceVersion set) when the test
 *   asks; `timeoutSeconds` ends the stream; R older than the compacted revision gets a 200 stream with one `ERROR`
 *   event holding a Status of code 410 (what the API server does), or, with `goneAs: 'status'`, a 410 answer;
 * - `POST /api/v1/namespaces/<ns>/events`: kept, for tests to read.
 *
 * One global revision counter, as etcd's: every create, update and delete takes the next one.
 */
import { execFileSync } from 'node:child_process'
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { createServer, type Server } from 'node:https'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import yaml from 'js-yaml'

// biome-ignore lint/suspicious/noExplicitAny: Kubernetes objects are open JSON
export type KObj = Record<string, any>

interface Collection {
  /** `''` for the core group */
  group: string
  plural: string
  kind: string
  namespaced: boolean
  /** namespace/name → object (stored with the apiVersion it was written in) */
  items: Map<string, KObj>
  /** every change, in revision order, for watches to replay */
  log: Array<{ rv: number; type: string; object: KObj }>
}

interface OpenWatch {
  coll: Collection
  namespace: string | undefined
  version: string
  res: ServerResponse
  bookmarks: boolean
}

export interface FakeApiServerOptions {
  /** how a watch from a compacted version is refused: an ERROR event in a 200 stream (default) or a 410 answer */
  goneAs?: 'event' | 'status'
}

const BUILTIN: Record<string, { group: string; plural: string; namespaced: boolean }> = {
  Service: { group: '', plural: 'services', namespaced: true },
  Pod: { group: '', plural: 'pods', namespaced: true },
  Node: { group: '', plural: 'nodes', namespaced: false },
  Namespace: { group: '', plural: 'namespaces', namespaced: false },
  ServiceAccount: { group: '', plural: 'serviceaccounts', namespaced: true },
  Event: { group: '', plural: 'events', namespaced: true },
  EndpointSlice: { group: 'discovery.k8s.io', plural: 'endpointslices', namespaced: true },
  Deployment: { group: 'apps', plural: 'deployments', namespaced: true },
}

export class FakeKubeApiServer {
  readonly token = 'fake-sa-token-0123456789'
  readonly counts = { lists: 0, watches: 0, gone: 0, bookmarks: 0, unauthorized: 0 }
  /** each request's method and path with its query, in order */
  readonly requests: string[] = []
  readonly #colls = new Map<string, Collection>()
  readonly #watches = new Set<OpenWatch>()
  readonly #options: FakeApiServerOptions
  #rv = 100
  #compacted = 0
  #server: Server | null = null
  #dir = ''
  url = ''
  kubeconfig = ''
  /** the server's certificate, PEM: what a pod's service account `ca.crt` would hold */
  caPem = ''

  constructor(options: FakeApiServerOptions = {}) {
    this.#options = options
  }

  async start(): Promise<void> {
    this.#dir = mkdtempSync(join(tmpdir(), 'loom-fake-kube-'))
    const key = join(this.#dir, 'key.pem')
    const cert = join(this.#dir, 'cert.pem')
    execFileSync(
      'openssl',
      // biome-ignore format: one flag and its value a pair
      ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '1',
        '-keyout', key, '-out', cert, '-subj', '/CN=kube-apiserver', '-addext', 'subjectAltName=IP:127.0.0.1'],
      { stdio: 'ignore' },
    )
    this.caPem = readFileSync(cert, 'utf8')
    this.#server = createServer({ key: readFileSync(key), cert: readFileSync(cert) }, (req, res) =>
      this.#handle(req, res),
    )
    await new Promise<void>((resolve) => this.#server!.listen(0, '127.0.0.1', resolve))
    const port = (this.#server.address() as AddressInfo).port
    this.url = `https://127.0.0.1:${port}`
    this.kubeconfig = join(this.#dir, 'kubeconfig')
    writeFileSync(
      this.kubeconfig,
      yaml.dump({
        apiVersion: 'v1',
        kind: 'Config',
        clusters: [
          {
            name: 'fake',
            cluster: {
              server: this.url,
              'certificate-authority-data': Buffer.from(readFileSync(cert)).toString('base64'),
            },
          },
        ],
        users: [{ name: 'loom', user: { token: this.token } }],
        contexts: [{ name: 'fake', context: { cluster: 'fake', user: 'loom', namespace: 'default' } }],
        'current-context': 'fake',
      }),
    )
  }

  async close(): Promise<void> {
    for (const w of this.#watches) w.res.destroy()
    this.#watches.clear()
    await new Promise<void>((resolve) => (this.#server === null ? resolve() : this.#server.close(() => resolve())))
    this.#server?.closeAllConnections()
  }

  /** The current revision. */
  get revision(): number {
    return this.#rv
  }

  /** Loads every document of a manifest file (YAML or JSON documents). */
  loadFile(file: string): KObj[] {
    const docs = yaml.loadAll(readFileSync(file, 'utf8')).filter((d): d is KObj => d !== null && typeof d === 'object')
    return docs.map((d) => this.create(d))
  }

  /** Creates an object (namespace `default` unless it says); returns it as stored. */
  create(obj: KObj): KObj {
    const coll = this.#collectionOf(obj)
    const o = structuredClone(obj)
    o.metadata ??= {}
    if (coll.namespaced) o.metadata.namespace ??= 'default'
    const key = `${o.metadata.namespace ?? ''}/${o.metadata.name}`
    if (coll.items.has(key)) throw new Error(`${coll.kind} ${key} exists`)
    o.metadata.uid = `uid-${coll.plural}-${key}`
    o.metadata.creationTimestamp = new Date().toISOString()
    o.metadata.generation = 1
    return this.#write(coll, key, o, 'ADDED')
  }

  /** Replaces an object (which must exist; its status too, as the status subresource would); returns it as stored. */
  update(obj: KObj): KObj {
    const coll = this.#collectionOf(obj)
    const ns = coll.namespaced ? (obj.metadata?.namespace ?? 'default') : ''
    const key = `${ns}/${obj.metadata.name}`
    const old = coll.items.get(key)
    if (old === undefined) throw new Error(`${coll.kind} ${key} does not exist`)
    const o = structuredClone(obj)
    o.metadata = {
      ...old.metadata,
      ...o.metadata,
      namespace: old.metadata.namespace,
      // as for resources with a status subresource: only a change to the spec is a new generation
      generation:
        JSON.stringify(o.spec) === JSON.stringify(old.spec) ? old.metadata.generation : old.metadata.generation + 1,
    }
    if (!coll.namespaced) delete o.metadata.namespace
    return this.#write(coll, key, o, 'MODIFIED')
  }

  delete(kind: string, apiVersion: string, namespace: string, name: string): void {
    const coll = this.#collectionOf({ kind, apiVersion })
    const key = `${coll.namespaced ? namespace : ''}/${name}`
    const old = coll.items.get(key)
    if (old === undefined) throw new Error(`${kind} ${key} does not exist`)
    coll.items.delete(key)
    const o = structuredClone(old)
    o.metadata.resourceVersion = String(++this.#rv)
    coll.log.push({ rv: this.#rv, type: 'DELETED', object: o })
    this.#notify(coll, 'DELETED', o)
  }

  /** The objects of a kind (`Event`, `Service`...) as stored. */
  list(kind: string): KObj[] {
    const coll = [...this.#colls.values()].find((c) => c.kind === kind)
    return coll === undefined ? [] : [...coll.items.values()].map((o) => structuredClone(o))
  }

  /** Forgets history up to the current revision: a watch from any older version gets 410 Gone. */
  compact(): void {
    this.#compacted = this.#rv
    for (const c of this.#colls.values()) c.log = c.log.filter((e) => e.rv > this.#compacted)
  }

  /** Cuts every open watch connection (a network failure: no clean end of the stream). */
  breakWatches(): number {
    const n = this.#watches.size
    for (const w of this.#watches) w.res.socket?.destroy()
    this.#watches.clear()
    return n
  }

  /** Sends each watch that asked for bookmarks a BOOKMARK at the current revision. */
  bookmark(): number {
    let n = 0
    for (const w of this.#watches) {
      if (!w.bookmarks) continue
      const object = {
        kind: w.coll.kind,
        apiVersion: this.#apiVersion(w.coll, w.version),
        metadata: { resourceVersion: String(this.#rv) },
      }
      w.res.write(`${JSON.stringify({ type: 'BOOKMARK', object })}\n`)
      n++
    }
    this.counts.bookmarks += n
    return n
  }

  /** Open watches, by collection path (`services`, `virtualservices`...). */
  openWatches(plural?: string): number {
    return [...this.#watches].filter((w) => plural === undefined || w.coll.plural === plural).length
  }

  /** Resolves when `n` watches of `plural` are open (each informer's first, or after a break). */
  async waitForWatches(plural: string, n = 1, ms = 10_000): Promise<void> {
    const deadline = Date.now() + ms
    while (this.openWatches(plural) < n) {
      if (Date.now() > deadline) throw new Error(`no watch on ${plural} after ${ms} ms`)
      await new Promise((r) => setTimeout(r, 10))
    }
  }

  #write(coll: Collection, key: string, o: KObj, type: string): KObj {
    o.metadata.resourceVersion = String(++this.#rv)
    coll.items.set(key, o)
    coll.log.push({ rv: this.#rv, type, object: structuredClone(o) })
    this.#notify(coll, type, o)
    return structuredClone(o)
  }

  #notify(coll: Collection, type: string, o: KObj): void {
    for (const w of this.#watches) {
      if (w.coll !== coll || (w.namespace !== undefined && o.metadata.namespace !== w.namespace)) continue
      w.res.write(`${JSON.stringify({ type, object: this.#as(coll, o, w.version) })}\n`)
    }
  }

  #apiVersion(coll: Collection, version: string): string {
    return coll.group === '' ? version : `${coll.group}/${version}`
  }

  /** The object as a client asking for `version` gets it (custom resources are converted by version). */
  #as(coll: Collection, o: KObj, version: string): KObj {
    return { ...structuredClone(o), apiVersion: this.#apiVersion(coll, version), kind: coll.kind }
  }

  #collectionOf(obj: KObj): Collection {
    const kind = String(obj.kind)
    const b = BUILTIN[kind]
    const group = b?.group ?? String(obj.apiVersion).split('/')[0]!
    const plural = b?.plural ?? pluralOf(kind)
    const id = `${group}/${plural}`
    let c = this.#colls.get(id)
    if (c === undefined) {
      c = { group, plural, kind, namespaced: b?.namespaced ?? true, items: new Map(), log: [] }
      this.#colls.set(id, c)
    }
    return c
  }

  #handle(req: IncomingMessage, res: ServerResponse): void {
    this.requests.push(`${req.method} ${req.url}`)
    const send = (status: number, body: unknown) => {
      res.writeHead(status, { 'content-type': 'application/json' })
      res.end(JSON.stringify(body))
    }
    const status = (code: number, reason: string, message: string) =>
      send(code, { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason, code })
    if (req.headers.authorization !== `Bearer ${this.token}`) {
      this.counts.unauthorized++
      return status(401, 'Unauthorized', 'Unauthorized')
    }
    const url = new URL(req.url ?? '/', 'https://x')
    const parts = url.pathname.split('/').filter((p) => p !== '')
    // /api/v1[/namespaces/ns]/plural | /apis/group/version[/namespaces/ns]/plural
    const [group, version, rest] =
      parts[0] === 'api' ? ['', parts[1]!, parts.slice(2)] : [parts[1] ?? '', parts[2] ?? '', parts.slice(3)]
    let namespace: string | undefined
    let plural = rest[0]
    if (rest[0] === 'namespaces' && rest.length >= 3) {
      namespace = rest[1]
      plural = rest[2]
    }
    if (plural === 'events' && req.method === 'POST' && namespace !== undefined) {
      const chunks: Buffer[] = []
      req.on('data', (c: Buffer) => chunks.push(c))
      req.on('end', () => {
        const ev = JSON.parse(Buffer.concat(chunks).toString('utf8')) as KObj
        ev.metadata.name ??= `${ev.metadata.generateName ?? 'event.'}${(this.#rv + 1).toString(16)}`
        ev.metadata.namespace = namespace
        send(201, this.create(ev))
      })
      return
    }
    const coll = this.#colls.get(`${group}/${plural}`) ?? this.#emptyCollection(group, plural ?? '')
    if (req.method !== 'GET' || coll === null)
      return status(404, 'NotFound', `the server could not find ${url.pathname}`)
    const watch = url.searchParams.get('watch')
    if (watch !== '1' && watch !== 'true') {
      this.counts.lists++
      const items = [...coll.items.values()]
        .filter((o) => namespace === undefined || o.metadata.namespace === namespace)
        .map((o) => {
          const out = this.#as(coll, o, version)
          if (coll.group === '' || BUILTIN[coll.kind] !== undefined) {
            delete out.apiVersion
            delete out.kind
          }
          return out
        })
      return send(200, {
        kind: `${coll.kind}List`,
        apiVersion: this.#apiVersion(coll, version),
        metadata: { resourceVersion: String(this.#rv) },
        items,
      })
    }
    this.counts.watches++
    const from = Number(url.searchParams.get('resourceVersion') ?? '0')
    if (from !== 0 && from < this.#compacted) {
      this.counts.gone++
      const gone = {
        kind: 'Status',
        apiVersion: 'v1',
        metadata: {},
        status: 'Failure',
        message: `too old resource version: ${from} (${this.#compacted})`,
        reason: 'Expired',
        code: 410,
      }
      if (this.#options.goneAs === 'status') return send(410, gone)
      res.writeHead(200, { 'content-type': 'application/json' })
      res.end(`${JSON.stringify({ type: 'ERROR', object: gone })}\n`)
      return
    }
    res.writeHead(200, { 'content-type': 'application/json', 'transfer-encoding': 'chunked' })
    for (const e of coll.log) {
      if (e.rv <= from || (namespace !== undefined && e.object.metadata.namespace !== namespace)) continue
      res.write(`${JSON.stringify({ type: e.type, object: this.#as(coll, e.object, version) })}\n`)
    }
    const w: OpenWatch = {
      coll,
      namespace,
      version,
      res,
      bookmarks: url.searchParams.get('allowWatchBookmarks') === 'true',
    }
    this.#watches.add(w)
    const timeout = Number(url.searchParams.get('timeoutSeconds') ?? '0')
    const timer = timeout > 0 ? setTimeout(() => res.end(), timeout * 1000) : null
    res.on('close', () => {
      if (timer !== null) clearTimeout(timer)
      this.#watches.delete(w)
    })
  }

  /** A collection the server serves but holds nothing of yet (Loom lists every Istio kind). */
  #emptyCollection(group: string, plural: string): Collection | null {
    const builtin = Object.entries(BUILTIN).find(([, b]) => b.group === group && b.plural === plural)
    const kind = builtin?.[0] ?? ISTIO_PLURALS[plural]
    if (kind === undefined) return null
    return this.#collectionOf({ kind, apiVersion: `${group}/v1` })
  }
}

const ISTIO_PLURALS: Record<string, string> = Object.fromEntries(
  [
    'VirtualService',
    'DestinationRule',
    'Gateway',
    'ServiceEntry',
    'WorkloadEntry',
    'WorkloadGroup',
    'Sidecar',
    'EnvoyFilter',
    'ProxyConfig',
    'PeerAuthentication',
    'AuthorizationPolicy',
    'RequestAuthentication',
  ].map((k) => [pluralOf(k), k]),
)

function pluralOf(kind: string): string {
  const k = kind.toLowerCase()
  return /[^aeiou]y$/.test(k) ? `${k.slice(0, -1)}ies` : `${k}s`
}
