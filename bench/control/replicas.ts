// The etcd row of `npm run bench:control`: apply → ACK with two `loom control` replicas on a 3-member etcd cluster,
// beside the same measure on one control plane with the embedded store. The proxies are in-process AdsClients
// that subscribe as a sidecar does and ACK; half of them on each replica. A change is applied on the first
// replica; it reaches the proxies of the second through etcd's watch.
import { AdsClient } from '../../src/xds/client.js'
import { TYPE_URL } from '../../src/xds/snapshot.js'
import { etcdBinary, startEtcdCluster } from '../../test/helpers/etcd.js'
import { simNode } from './clients.js'
import { percentiles } from './churn.js'
import { services, virtualService } from './manifests.js'

export interface ReplicaControl {
  api: string
  xds: string
}

export interface ReplicaRow {
  label: string
  proxies: number
  changes: number
  status: 'ok' | 'timeout' | 'skipped'
  note?: string
  /** POST /api/v1/apply until it answered, ms */
  applyMs: { p50: number | null; p90: number | null; p100: number | null }
  /** POST until the last proxy received the change (and ACKed it), ms */
  ackMs: { p50: number | null; p90: number | null; p100: number | null }
}

/** The service whose route timeout each change sets (one of the 10 the phase starts with). */
const CHANGED = 3

function names(value: unknown, key: string, out: Set<string>): void {
  if (Array.isArray(value)) for (const v of value) names(v, key, out)
  else if (value !== null && typeof value === 'object') {
    for (const [k, v] of Object.entries(value)) {
      if (k === key && typeof v === 'string') out.add(v)
      else names(v, key, out)
    }
  }
}

/** A simulated sidecar: subscribes to what its listeners and clusters name, and notes when a marker arrives. */
function probe(i: number, servers: string[], seen: Map<string, number>[], marker: () => string | null): AdsClient {
  const node = simNode(i)
  let client: AdsClient
  const mine = new Map<string, number>()
  seen.push(mine)
  client = new AdsClient({
    server: servers,
    node: { id: `${node.id}-r`, metadata: node.metadata },
    initialBackoffMs: 200,
    log: () => {},
    onResources: (typeUrl, _version, resources) => {
      if (typeUrl === TYPE_URL.listener) {
        const routes = new Set<string>()
        names([...resources.values()], 'route_config_name', routes)
        client.subscribe(TYPE_URL.route, routes)
      } else if (typeUrl === TYPE_URL.cluster) {
        const eds = new Set<string>()
        for (const c of resources.values()) {
          if (c.type !== 'EDS') continue
          const sn = (c.eds_cluster_config as { service_name?: string } | undefined)?.service_name
          eds.add(sn ?? String(c.name))
        }
        client.subscribe(TYPE_URL.endpoint, eds)
      } else if (typeUrl === TYPE_URL.route) {
        const m = marker()
        if (m !== null && !mine.has(m) && JSON.stringify([...resources.values()]).includes(`"${m}"`))
          mine.set(m, performance.now())
      }
      return { ok: true }
    },
  })
  return client.start()
}

async function post(cp: ReplicaControl, body: string): Promise<void> {
  const res = await fetch(`http://${cp.api}/api/v1/apply`, {
    method: 'POST',
    body,
    headers: { 'content-type': 'application/yaml', 'x-loom-source': 'bench' },
  })
  if (res.status !== 200) throw new Error(`apply: HTTP ${res.status}: ${(await res.text()).slice(0, 500)}`)
}

/** Applies `changes` route timeouts on `writer`, one after the other, each once every proxy has the previous one. */
async function measure(
  label: string,
  writer: ReplicaControl,
  serversOf: (i: number) => string[],
  proxies: number,
  changes: number,
  timeoutS: number,
): Promise<ReplicaRow> {
  const seen: Map<string, number>[] = []
  let current: string | null = null
  const clients = Array.from({ length: proxies }, (_, i) => probe(i, serversOf(i), seen, () => current))
  const applyMs: number[] = []
  const ackMs: number[] = []
  let status: ReplicaRow['status'] = 'ok'
  try {
    await post(writer, services(0, 10))
    // warm: every proxy has the route of the changed service before the first measured change
    const warm = '99s'
    current = warm
    await post(writer, virtualService(CHANGED, 99))
    if (!(await allSeen(seen, warm, timeoutS * 1000))) throw new Error(`${label}: the proxies never got the routes`)
    for (let j = 0; j < changes; j++) {
      const t = 10 + j
      current = `${t}s`
      const t0 = performance.now()
      await post(writer, virtualService(CHANGED, t))
      applyMs.push(performance.now() - t0)
      if (!(await allSeen(seen, current, timeoutS * 1000))) {
        status = 'timeout'
        break
      }
      ackMs.push(Math.max(...seen.map((m) => m.get(current!)!)) - t0)
    }
  } finally {
    for (const c of clients) c.close()
  }
  return { label, proxies, changes, status, applyMs: percentiles(applyMs), ackMs: percentiles(ackMs) }
}

async function allSeen(seen: Map<string, number>[], marker: string, ms: number): Promise<boolean> {
  const end = performance.now() + ms
  while (performance.now() < end) {
    if (seen.every((m) => m.has(marker))) return true
    await new Promise((r) => setTimeout(r, 5))
  }
  return false
}

/**
 * Both rows: `start(dataDir, extra)` starts a `loom control` with extra flags (the harness's startControl), `stop`
 * stops it.
 */
export async function replicasPhase<C extends ReplicaControl>(opts: {
  tmp: string
  proxies: number
  changes: number
  timeoutS: number
  start: (dataDir: string, extra: string[]) => Promise<C>
  stop: (cp: C) => Promise<void>
  log: (msg: string) => void
}): Promise<ReplicaRow[]> {
  const { proxies, changes, timeoutS, log } = opts
  const rows: ReplicaRow[] = []
  log(`[extra] replicas: apply -> ACK, ${proxies} proxies, ${changes} changes; embedded store, then 2 replicas on etcd`)
  const one = await opts.start(`${opts.tmp}/data-embedded`, [])
  try {
    rows.push(await measure('embedded store, 1 control plane', one, () => [one.xds], proxies, changes, timeoutS))
  } finally {
    await opts.stop(one)
  }
  const skipped = (note: string): ReplicaRow => ({
    label: 'etcd (3 members), 2 replicas',
    proxies,
    changes,
    status: 'skipped',
    note,
    applyMs: percentiles([]),
    ackMs: percentiles([]),
  })
  if (etcdBinary() === null) {
    rows.push(skipped('no etcd binary'))
    return rows
  }
  const cluster = await startEtcdCluster()
  const started: C[] = []
  try {
    const flags = (id: string) => ['--store', cluster.url, '--etcd-prefix', '/loom-bench', '--replica-id', id]
    const a = await opts.start(`${opts.tmp}/data-etcd-a`, flags('a'))
    started.push(a)
    const b = await opts.start(`${opts.tmp}/data-etcd-b`, flags('b'))
    started.push(b)
    rows.push(
      await measure(
        'etcd (3 members), 2 replicas',
        a,
        (i) => (i % 2 === 0 ? [a.xds, b.xds] : [b.xds, a.xds]),
        proxies,
        changes,
        timeoutS,
      ),
    )
  } finally {
    for (const cp of started) await opts.stop(cp)
    await cluster.stop()
  }
  return rows
}

export function renderReplicas(rows: ReplicaRow[]): string {
  const f = (n: number | null) => (n === null ? '-' : n.toFixed(0))
  const lines = [
    'apply -> ACK, a route timeout changed on one replica (ms)    proxies  apply p50/p100   last ACK p50/p90/p100',
  ]
  for (const r of rows) {
    const status = r.status === 'ok' ? '' : `  (${r.status}${r.note ? `: ${r.note}` : ''})`
    lines.push(
      `  ${r.label.padEnd(58)} ${String(r.proxies).padStart(6)}  ${`${f(r.applyMs.p50)}/${f(r.applyMs.p100)}`.padStart(14)}` +
        `   ${`${f(r.ackMs.p50)}/${f(r.ackMs.p90)}/${f(r.ackMs.p100)}`.padStart(18)}${status}`,
    )
  }
  return lines.join('\n')
}
