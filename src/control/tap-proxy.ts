/**
 * `GET /api/v1/tap/<namespace>/<workload>?...`: the live request stream of a workload's proxies, read from each
 * proxy's admin `/tap` (the address its node metadata ADMIN_ADDRESS gives, see proxy-status) and passed on line by
 * line, so a client needs only the control plane's address. Query parameters go to the proxies as they are
 * (method, path, authority, to, direction, max_rps); `max` is also counted here, across the proxies, and ends the
 * stream. The stream ends when every proxy's has, or at once when the client goes away (the proxies' taps are
 * closed too, so they stop recording).
 *
 * The workload is named as `kubectl` names it: `reviews-v2` or `deploy/reviews-v2` (every pod of the deployment:
 * node ids whose pod is `reviews-v2` or `reviews-v2-<suffix>`), `pod/<pod>` (that pod only).
 */
import * as http from 'node:http'
import type { NodeStatus } from '../xds/server.js'

export interface TapTarget {
  nodeId: string
  adminAddress: string
}

/** The pod and namespace of an Istio node id (`sidecar~<ip>~<pod>.<namespace>~...`), or null. */
function podOf(nodeId: string): { pod: string; namespace: string } | null {
  const third = nodeId.split('~')[2]
  if (third === undefined) return null
  const dot = third.lastIndexOf('.')
  return dot <= 0 ? null : { pod: third.slice(0, dot), namespace: third.slice(dot + 1) }
}

/** The proxies a tap of `name` in `namespace` reads; a message saying why there are none. */
export function tapTargets(nodes: readonly NodeStatus[], namespace: string, name: string): TapTarget[] | string {
  const slash = name.indexOf('/')
  const kind = slash < 0 ? '' : name.slice(0, slash)
  const want = slash < 0 ? name : name.slice(slash + 1)
  if (!['', 'deploy', 'deployment', 'pod', 'po'].includes(kind))
    return `cannot tap "${name}": name a workload as <name>, deploy/<name> or pod/<name>`
  const inNs = nodes.flatMap((n) => {
    const p = podOf(n.nodeId)
    return p !== null && p.namespace === namespace ? [{ n, pod: p.pod }] : []
  })
  const exact = inNs.filter((x) => x.pod === want)
  const matched =
    kind === 'pod' || kind === 'po' || exact.length > 0
      ? exact
      : inNs.filter((x) => x.pod.startsWith(`${want}-`) && !x.pod.slice(want.length + 1).includes('.'))
  if (matched.length === 0) {
    const known = inNs.map((x) => x.pod).sort()
    return `no connected proxy for ${name} in namespace ${namespace}; proxies there: ${known.join(', ') || '(none)'}`
  }
  const withAdmin = matched.filter((x) => x.n.adminAddress !== null)
  if (withAdmin.length === 0)
    return `the proxy of ${name} did not send its admin address (node metadata ADMIN_ADDRESS): it cannot be tapped`
  return withAdmin.map((x) => ({ nodeId: x.n.nodeId, adminAddress: x.n.adminAddress! }))
}

/** Streams the taps of `targets` to `res` as NDJSON. */
export function proxyTap(
  req: http.IncomingMessage,
  res: http.ServerResponse,
  targets: readonly TapTarget[],
  query: URLSearchParams,
): void {
  const maxParam = Number(query.get('max') ?? '0')
  const max = Number.isInteger(maxParam) && maxParam > 0 ? maxParam : 0
  const upstreams: http.ClientRequest[] = []
  let open = targets.length
  let sent = 0
  let ended = false
  let started = false
  const end = () => {
    if (ended) return
    ended = true
    for (const u of upstreams) u.destroy()
    if (!res.headersSent) {
      res.writeHead(502, { 'content-type': 'application/json' })
      res.end(`${JSON.stringify({ error: { message: 'no proxy answered the tap' } })}\n`)
    } else res.end()
  }
  const start = () => {
    if (started) return
    started = true
    res.writeHead(200, { 'content-type': 'application/x-ndjson', 'cache-control': 'no-cache' })
    res.flushHeaders()
  }
  res.once('close', () => {
    if (!ended) {
      ended = true
      for (const u of upstreams) u.destroy()
    }
  })
  for (const t of targets) {
    let done = false
    const over = () => {
      if (done) return
      done = true
      if (--open === 0) end()
    }
    const u = http.get(`http://${t.adminAddress}/tap?${query}`, (up) => {
      if (up.statusCode !== 200) {
        let text = ''
        up.setEncoding('utf8')
        up.on('data', (d: string) => (text += d))
        up.on('end', () => {
          if (!started && !ended) {
            ended = true
            for (const o of upstreams) o.destroy()
            res.writeHead(up.statusCode === 400 ? 400 : 502, { 'content-type': 'application/json' })
            res.end(`${JSON.stringify({ error: { message: `${t.nodeId}: ${text.trim()}` } })}\n`)
          }
          over()
        })
        return
      }
      start()
      let partial = ''
      up.setEncoding('utf8')
      up.on('data', (chunk: string) => {
        if (ended) return
        const lines = (partial + chunk).split('\n')
        partial = lines.pop()!
        for (const line of lines) {
          if (line === '') continue
          res.write(`${line}\n`)
          if (max > 0 && line.startsWith('{"type":"request"') && ++sent >= max) return end()
        }
      })
      up.on('end', over)
      up.on('error', over)
    })
    u.on('error', over)
    upstreams.push(u)
  }
  req.resume()
}
