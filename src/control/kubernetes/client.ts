/**
 * The Kubernetes API as `loom control` uses it: JSON requests and watch streams on an API server, authenticated the
 * way `@kubernetes/client-node`'s KubeConfig says (a kubeconfig file, or the pod's service account: token and CA
 * from /var/run/secrets/kubernetes.io/serviceaccount). The client library does the configuration and its
 * credentials (tokens, client certificates, exec plugins); requests are made here with its agent and headers, so a
 * list and a watch read the same bytes the API server sends, and a watch's end or error is ours to handle.
 */
import { request as httpRequest, type IncomingMessage } from 'node:http'
import { type Agent, request as httpsRequest } from 'node:https'
import { createInterface } from 'node:readline'
import type { KubeConfig } from '@kubernetes/client-node'

/** An error answer of the API server: its HTTP status and, when it sent one, its Status object's message. */
export class KubeApiError extends Error {
  override name = 'KubeApiError'
  constructor(
    readonly status: number,
    message: string,
    readonly reason = '',
  ) {
    super(message)
  }
}

/** One line of a watch stream: `ADDED`, `MODIFIED`, `DELETED`, `BOOKMARK` or `ERROR` (its object a Status). */
export interface WatchEvent {
  type: string
  object: KubeObject
}

/** Any Kubernetes object, as JSON. */
export interface KubeObject {
  apiVersion?: string
  kind?: string
  metadata?: {
    name?: string
    namespace?: string
    resourceVersion?: string
    uid?: string
    labels?: Record<string, string>
    annotations?: Record<string, string>
    creationTimestamp?: string
    generation?: number
    [k: string]: unknown
  }
  [k: string]: unknown
}

export interface KubeList {
  metadata?: { resourceVersion?: string; continue?: string }
  items: KubeObject[]
}

/** An open watch: `close()` ends it without calling its `onEnd`. */
export interface WatchHandle {
  close(): void
}

export class KubeClient {
  readonly server: string
  readonly #kc: KubeConfig

  private constructor(kc: KubeConfig) {
    this.#kc = kc
    const cluster = kc.getCurrentCluster()
    if (cluster === null) throw new Error('the Kubernetes configuration names no current cluster')
    this.server = cluster.server.replace(/\/+$/, '')
  }

  /**
   * From a kubeconfig file, or, without one, the pod's own service account (in-cluster: the API server from
   * KUBERNETES_SERVICE_HOST and _PORT, token, CA and namespace under `<root>/var/run/secrets/kubernetes.io/
   * serviceaccount`, `root` being `/` but in tests).
   */
  static async open(kubeconfig?: string, root = ''): Promise<KubeClient> {
    const { KubeConfig } = await import('@kubernetes/client-node')
    const kc = new KubeConfig()
    if (kubeconfig !== undefined) kc.loadFromFile(kubeconfig)
    else {
      if (process.env.KUBERNETES_SERVICE_HOST === undefined)
        throw new Error('not in a cluster (KUBERNETES_SERVICE_HOST is not set) and no --kubeconfig given')
      kc.loadFromCluster(root)
    }
    return new KubeClient(kc)
  }

  /** The agent and headers of the current user and cluster; read per request, so rotated tokens are picked up. */
  async #options(): Promise<{ agent: Agent | undefined; headers: Record<string, string> }> {
    const o = await this.#kc.applyToFetchOptions({})
    const headers: Record<string, string> = {}
    for (const [k, v] of (o.headers as unknown as Headers).entries()) headers[k] = v
    return { agent: this.server.startsWith('https:') ? (o.agent as Agent) : undefined, headers }
  }

  async #send(method: string, path: string, body: unknown, contentType: string): Promise<IncomingMessage> {
    const { agent, headers } = await this.#options()
    const url = new URL(this.server + path)
    const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body))
    return new Promise((resolve, reject) => {
      const req = (url.protocol === 'https:' ? httpsRequest : httpRequest)(url, {
        method,
        ...(agent !== undefined ? { agent } : {}),
        headers: {
          ...headers,
          accept: 'application/json',
          ...(payload !== undefined ? { 'content-type': contentType, 'content-length': payload.length } : {}),
        },
      })
      req.on('response', resolve)
      req.on('error', reject)
      req.end(payload)
    })
  }

  /** A JSON request; an error status throws KubeApiError. */
  async request<T = KubeObject>(
    method: string,
    path: string,
    body?: unknown,
    contentType = 'application/json',
  ): Promise<T> {
    const res = await this.#send(method, path, body, contentType)
    const chunks: Buffer[] = []
    for await (const c of res) chunks.push(c as Buffer)
    const text = Buffer.concat(chunks).toString('utf8')
    const status = res.statusCode ?? 0
    if (status < 200 || status > 299) throw apiError(status, text, `${method} ${path}`)
    return (text === '' ? {} : JSON.parse(text)) as T
  }

  /**
   * Opens a watch (`?watch=1`): `onEvent` per line, then `onEnd` once: with null when the server ended the stream
   * (its timeout, a restart), with an error when it failed or answered with an error status (a 410 is a
   * KubeApiError with status 410).
   */
  async watch(
    path: string,
    query: Record<string, string>,
    onEvent: (e: WatchEvent) => void,
    onEnd: (err: Error | null) => void,
  ): Promise<WatchHandle> {
    const qs = new URLSearchParams({ ...query, watch: '1' }).toString()
    let closed = false
    let ended = false
    const end = (err: Error | null) => {
      if (ended || closed) return
      ended = true
      onEnd(err)
    }
    let res: IncomingMessage
    try {
      res = await this.#send('GET', `${path}${path.includes('?') ? '&' : '?'}${qs}`, undefined, '')
    } catch (err) {
      queueMicrotask(() => end(err as Error))
      return { close: () => void (closed = true) }
    }
    const status = res.statusCode ?? 0
    if (status !== 200) {
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('end', () => end(apiError(status, Buffer.concat(chunks).toString('utf8'), `watch ${path}`)))
      res.on('error', end)
      return {
        close: () => {
          closed = true
          res.destroy()
        },
      }
    }
    const lines = createInterface({ input: res, crlfDelay: Number.POSITIVE_INFINITY })
    lines.on('line', (line) => {
      if (closed || line.trim() === '') return
      let e: WatchEvent
      try {
        e = JSON.parse(line) as WatchEvent
      } catch {
        res.destroy()
        end(new Error(`watch ${path}: a line that is not JSON`))
        return
      }
      onEvent(e)
    })
    res.on('error', end)
    // readline passes the response's error on: without a listener it would be thrown
    lines.on('error', end)
    res.on('aborted', () => end(new Error(`watch ${path}: the connection was cut`)))
    lines.on('close', () => end(res.complete ? null : new Error(`watch ${path}: the connection was cut`)))
    return {
      close: () => {
        closed = true
        res.destroy()
      },
    }
  }
}

function apiError(status: number, text: string, what: string): KubeApiError {
  let message = text.trim().slice(0, 300)
  let reason = ''
  try {
    const s = JSON.parse(text) as { message?: string; reason?: string }
    if (typeof s.message === 'string') message = s.message
    if (typeof s.reason === 'string') reason = s.reason
  } catch {}
  return new KubeApiError(status, `${what}: ${status}${message !== '' ? ` ${message}` : ''}`, reason)
}
