/**
 * The service graph (`#/graph`), the dashboard's front page: who calls whom over the window, from
 * `/api/v1/graph` (the same answer as `loom graph -o json`) and the per-service and per-workload numbers of
 * `/api/v1/stats`, read every 5 s. One node per service by default, or each service around its workloads; the
 * gateway and unknown callers (clients without a sidecar) as nodes of their own. Edges are labelled with requests per
 * second, success and p99, colored by health, dashed where some traffic was not mutual TLS, wider with more traffic.
 *
 * Query (`#/graph?window=5m&namespace=default&view=workloads`): the controls' state, kept in the address so a reload
 * or a shared link shows the same graph.
 */
import { ApiError, getJson } from '../api.js'
import {
  createGraphView,
  type GraphView,
  type GraphViewEdge,
  type GraphViewNode,
  type Health,
} from '../components/cy-graph.js'
import { type Child, h, replace } from '../dom.js'
import { health, ms, percent, rps } from '../format.js'
import { hashQuery, link, type Page } from '../router.js'

interface Latency {
  p50: number
  p95: number
  p99: number
}

interface Traffic {
  requests: number
  rps: number
  successRate: number | null
  deniedShare: number | null
  mtlsShare: number | null
  latencyMs: Latency | null
}

interface GraphNode {
  id: string
  workload: string
  namespace: string
  kind: 'workload' | 'gateway' | 'unknown'
  service: string | null
  version: string
}

interface GraphService {
  id: string
  namespace: string
  name: string
  workloads: string[]
}

interface GraphEdge extends Traffic {
  from: string
  fromKind: 'service' | 'workload'
  to: string
  toKind: 'service' | 'workload'
  service: string
  principals: { source: string[]; destination: string[] }
}

interface About {
  window: string
  gathering: { intervalSeconds: number; retentionSeconds: number; rounds: number; proxies: number; failing: string[] }
}

interface GraphAnswer extends About {
  nodes: GraphNode[]
  edges: GraphEdge[]
  services: GraphService[]
  serviceEdges: GraphEdge[]
}

interface StatRow extends Omit<Traffic, 'deniedShare'> {
  namespace: string
  name: string
  version: string
  meshed: { meshed: number; total: number } | null
}

interface Data {
  graph: GraphAnswer
  services: StatRow[]
  workloads: StatRow[]
}

type ViewKind = 'services' | 'workloads'

const WINDOWS = [
  ['1m', 60],
  ['5m', 300],
  ['10m', 600],
] as const

/** What a drawn node stands for. */
type Subject = { type: 'service'; service: GraphService } | { type: 'workload'; node: GraphNode }

interface Shown {
  nodes: Map<string, { view: GraphViewNode; name: string; subject: Subject }>
  edges: Map<string, { view: GraphViewEdge; edge: GraphEdge; source: string; target: string }>
}

const RANK: Record<Health, number> = { none: 0, ok: 1, warn: 2, bad: 3 }

function worst(...hs: Health[]): Health {
  return hs.reduce((a, b) => (RANK[b] > RANK[a] ? b : a), 'none')
}

/**
 * An edge's health: its success rate's, and the share of requests an authorization policy refused (a 403 is not a
 * failure of the server, but traffic a policy stops is what the graph must show); grey without requests.
 */
function trafficHealth(t: Traffic): Health {
  if (t.requests === 0) return 'none'
  return worst(health(t.successRate), health(t.deniedShare === null ? null : 1 - t.deniedShare))
}

/** Several edges' traffic as one (a node's inbound): rates weighted by requests; latency left out. */
function sum(ts: Traffic[]): Traffic {
  let requests = 0
  let rate = 0
  let failed = 0
  let denied = 0
  let mtls = 0
  for (const t of ts) {
    requests += t.requests
    rate += t.rps
    failed += (1 - (t.successRate ?? 1)) * t.requests
    denied += (t.deniedShare ?? 0) * t.requests
    mtls += (t.mtlsShare ?? 0) * t.requests
  }
  const any = requests > 0
  return {
    requests,
    rps: rate,
    successRate: any ? 1 - failed / requests : null,
    deniedShare: any ? denied / requests : null,
    mtlsShare: any ? mtls / requests : null,
    latencyMs: null,
  }
}

function mtlsText(share: number | null): string {
  if (share === null) return ''
  if (share >= 0.9995) return 'mTLS'
  if (share <= 0) return 'plain text'
  return `mTLS ${percent(share)}`
}

function edgeLabel(t: Traffic): string {
  if (t.requests === 0) return 'idle'
  const lines = [
    `${rps(t.rps)} rps · ${percent(t.successRate)}`,
    [`p99 ${ms(t.latencyMs?.p99)}`, mtlsText(t.mtlsShare)].filter((s) => s !== '').join(' · '),
  ]
  if ((t.deniedShare ?? 0) > 0) lines.push(`${percent(t.deniedShare)} denied`)
  return lines.join('\n')
}

/** What makes an edge's health what it is, in words. */
function healthText(t: Traffic, window: string): string {
  const hl = trafficHealth(t)
  if (hl === 'none') return `no request in the last ${window}`
  if (hl === 'ok') return 'healthy'
  const byDenials = RANK[health(1 - (t.deniedShare ?? 0))] >= RANK[health(t.successRate)]
  return byDenials
    ? `${percent(t.deniedShare)} denied by an authorization policy`
    : `${hl === 'warn' ? 'degraded' : 'failing'}: ${percent(1 - (t.successRate ?? 1))} of requests failed`
}

function edgeWidth(t: Traffic): number {
  return t.requests === 0 ? 1 : Math.min(9, 1.5 + 1.6 * Math.log2(1 + t.rps))
}

/** The elements to draw for a view of the graph. */
function shownOf(g: GraphAnswer, view: ViewKind): Shown {
  const nodes: Shown['nodes'] = new Map()
  const edges: Shown['edges'] = new Map()
  const services = new Map(g.services.map((s) => [s.id, s]))
  const sid = (id: string) => `s:${id}`
  const wid = (id: string) => `w:${id}`
  const addService = (s: GraphService) =>
    nodes.set(sid(s.id), {
      view: { id: sid(s.id), label: `${s.name}\n${s.namespace}`, kind: 'service', health: 'none' },
      name: s.id,
      subject: { type: 'service', service: s },
    })
  const addWorkload = (n: GraphNode, parent: string | null) =>
    nodes.set(wid(n.id), {
      view: {
        id: wid(n.id),
        label:
          n.kind === 'unknown'
            ? 'unknown'
            : parent !== null
              ? n.version || n.workload
              : `${n.workload}\n${n.namespace}`,
        kind: n.kind,
        health: 'none',
        ...(parent !== null ? { parent } : {}),
      },
      name: n.id,
      subject: { type: 'workload', node: n },
    })
  const list = view === 'services' ? g.serviceEdges : g.edges
  for (const s of g.services) addService(s)
  for (const n of g.nodes) {
    if (n.service !== null && services.has(n.service)) {
      if (view === 'workloads') addWorkload(n, sid(n.service))
    } else addWorkload(n, null)
  }
  const endOf = (id: string, kind: 'service' | 'workload') => (kind === 'service' ? sid(id) : wid(id))
  for (const e of list) {
    const source = endOf(e.from, e.fromKind)
    const target = endOf(e.to, e.toKind)
    // every end is in the answer's nodes or services; a missing one would be an answer of another version
    if (!nodes.has(source) || !nodes.has(target)) continue
    const id = `e:${source}>${target}`
    edges.set(id, {
      view: {
        id,
        source,
        target,
        label: edgeLabel(e),
        health: trafficHealth(e),
        width: edgeWidth(e),
        mtls: e.requests === 0 || (e.mtlsShare ?? 0) >= 0.9995,
      },
      edge: e,
      source: nodes.get(source)!.name,
      target: nodes.get(target)!.name,
    })
  }
  // a node's color: the health of what it was sent, or of what it sent when nothing calls it (a gateway)
  for (const [id, n] of nodes) {
    const inbound = [...edges.values()].filter(
      (e) => e.view.target === id || nodes.get(e.view.target)?.view.parent === id,
    )
    const outbound = [...edges.values()].filter((e) => e.view.source === id)
    const t = sum((inbound.length > 0 ? inbound : outbound).map((e) => e.edge))
    n.view.health = trafficHealth(t)
  }
  return { nodes, edges }
}

function stateFromHash(): { window: string; namespace: string; view: ViewKind } {
  const q = hashQuery()
  const w = q.get('window') ?? '1m'
  return {
    window: WINDOWS.some(([v]) => v === w) ? w : '1m',
    namespace: q.get('namespace') ?? '',
    view: q.get('view') === 'workloads' ? 'workloads' : 'services',
  }
}

export const graphPage: Page = (el, _params, ctx) => {
  const state = stateFromHash()
  let data: Data | null = null
  let shown: Shown | null = null
  let selected: { group: 'nodes' | 'edges'; id: string } | null = null
  const namespaces = new Set<string>()

  const canvas = h('div', { class: 'graph-canvas', 'data-testid': 'graph' })
  const empty = h('div', { class: 'graph-empty', 'data-testid': 'graph-empty', hidden: true })
  const detail = h('aside', { class: 'panel graph-detail', 'data-testid': 'graph-detail' })
  const nodeList = h('ul', { hidden: true, 'data-testid': 'graph-nodes' })
  const edgeList = h('ul', { hidden: true, 'data-testid': 'graph-edges' })
  const updated = h('span', { class: 'muted graph-updated', 'data-testid': 'graph-updated' })

  const windowSelect = h(
    'select',
    { 'data-testid': 'graph-window', 'aria-label': 'window' },
    ...WINDOWS.map(([v]) => h('option', { value: v, selected: v === state.window }, `last ${v}`)),
  )
  const nsSelect = h('select', { 'data-testid': 'graph-namespace', 'aria-label': 'namespace' })
  const viewButtons = (['services', 'workloads'] as const).map((v) =>
    h(
      'button',
      { type: 'button', 'data-testid': `graph-view-${v}`, onclick: () => setView(v) },
      v === 'services' ? 'Services' : 'Workloads',
    ),
  )

  const persist = () => {
    const q = new URLSearchParams()
    if (state.window !== '1m') q.set('window', state.window)
    if (state.namespace !== '') q.set('namespace', state.namespace)
    if (state.view !== 'services') q.set('view', state.view)
    const s = q.toString()
    history.replaceState(null, '', `#/graph${s === '' ? '' : `?${s}`}`)
  }

  // made once the container is in the page (cytoscape measures it)
  let view: GraphView

  function setView(v: ViewKind, select: string | null = null): void {
    state.view = v
    persist()
    renderGraph()
    if (select !== null) selectElement('nodes', select)
  }

  function selectElement(group: 'nodes' | 'edges', id: string): void {
    selected = { group, id }
    view.select(id)
    renderDetail()
  }

  windowSelect.addEventListener('change', () => {
    state.window = windowSelect.value
    persist()
    refreshNow()
  })
  nsSelect.addEventListener('change', () => {
    state.namespace = nsSelect.value
    persist()
    refreshNow()
  })

  let seq = 0
  async function load(): Promise<void> {
    const mine = ++seq
    const q = new URLSearchParams({ window: state.window })
    if (state.namespace !== '') q.set('namespace', state.namespace)
    let got: Data
    try {
      const [graph, services, workloads] = await Promise.all([
        getJson<GraphAnswer>(`/api/v1/graph?${q}`, ctx.signal),
        getJson<{ rows: StatRow[] }>(`/api/v1/stats?resource=service&${q}`, ctx.signal),
        getJson<{ rows: StatRow[] }>(`/api/v1/stats?resource=deployment&${q}`, ctx.signal),
      ])
      got = { graph, services: services.rows, workloads: workloads.rows }
    } catch (err) {
      // a control plane that gathers no metrics has no graph: say so where the graph would be
      if (err instanceof ApiError && err.status === 409 && mine === seq) {
        data = null
        showEmpty(err.message)
        return
      }
      throw err
    }
    if (mine !== seq || ctx.signal.aborted) return
    data = got
    for (const n of got.graph.nodes) namespaces.add(n.namespace)
    for (const s of got.graph.services) namespaces.add(s.namespace)
    renderControls()
    renderGraph()
  }

  function refreshNow(): void {
    load().catch((err: unknown) => {
      if (ctx.signal.aborted) return
      updated.className = 'bad graph-updated'
      replace(updated, err instanceof Error ? err.message : String(err))
    })
  }

  function renderControls(): void {
    const retention = data?.graph.gathering.retentionSeconds ?? Infinity
    for (const o of windowSelect.options) {
      const seconds = WINDOWS.find(([v]) => v === o.value)?.[1] ?? 0
      o.disabled = seconds > retention
    }
    const all = [...new Set([...namespaces, ...(state.namespace !== '' ? [state.namespace] : [])])].sort()
    replace(
      nsSelect,
      h('option', { value: '', selected: state.namespace === '' }, 'all namespaces'),
      ...all.map((ns) => h('option', { value: ns, selected: ns === state.namespace }, ns)),
    )
    viewButtons.forEach((b, i) => {
      const on = (i === 0 ? 'services' : 'workloads') === state.view
      b.classList.toggle('active', on)
      b.setAttribute('aria-pressed', String(on))
    })
  }

  function showEmpty(text: string | null): void {
    empty.hidden = text === null
    if (text !== null) replace(empty, text)
  }

  function renderGraph(): void {
    renderControls()
    if (data === null) return
    const g = data.graph
    shown = shownOf(g, state.view)
    view.update(
      [...shown.nodes.values()].map((n) => n.view),
      [...shown.edges.values()].map((e) => e.view),
    )
    const traffic = g.edges.some((e) => e.requests > 0)
    showEmpty(
      g.nodes.length === 0
        ? 'No workloads known yet: start some with loom up, or register them.'
        : g.gathering.rounds === 0
          ? `Waiting for the first reading of the proxies' metrics (every ${g.gathering.intervalSeconds}s).`
          : traffic
            ? null
            : `No traffic in the last ${g.window}: send some requests (with loom demo, open the product page).`,
    )
    updated.className = 'muted graph-updated'
    replace(
      updated,
      `updated ${new Date().toLocaleTimeString()} · metrics of ${g.gathering.proxies} proxies, read every ${g.gathering.intervalSeconds}s`,
      g.gathering.failing.length > 0 ? ` · ${g.gathering.failing.length} not answering` : '',
    )
    if (selected !== null && !(selected.group === 'nodes' ? shown.nodes : shown.edges).has(selected.id)) selected = null
    renderEdgeList()
    renderNodeList()
    renderDetail()
  }

  /** The drawn edges as a hidden list, for tests and tools that read the page. */
  function renderEdgeList(): void {
    if (shown === null) return
    replace(
      edgeList,
      ...[...shown.edges.values()].map((e) =>
        h(
          'li',
          {
            'data-id': e.view.id,
            'data-source': e.source,
            'data-target': e.target,
            'data-rps': e.edge.rps,
            'data-requests': e.edge.requests,
            'data-health': e.view.health,
            'data-success': e.edge.successRate ?? '',
            'data-denied': e.edge.deniedShare ?? '',
            'data-mtls': e.edge.mtlsShare ?? '',
            'data-p99': e.edge.latencyMs?.p99 ?? '',
          },
          `${e.source} → ${e.target}`,
        ),
      ),
    )
  }

  /** The drawn nodes with where they are on screen (relative to the graph's container). */
  function renderNodeList(): void {
    if (shown === null) return
    replace(
      nodeList,
      ...[...shown.nodes.values()].map((n) => {
        const p = view.renderedPosition(n.view.id)
        return h(
          'li',
          {
            'data-id': n.view.id,
            'data-name': n.name,
            'data-kind': n.view.kind,
            'data-health': n.view.health,
            'data-x': p === null ? '' : Math.round(p.x),
            'data-y': p === null ? '' : Math.round(p.y),
          },
          n.view.label.replace('\n', ' '),
        )
      }),
    )
  }

  function renderDetail(): void {
    if (data === null || shown === null || selected === null) {
      replace(
        detail,
        h('p', { class: 'muted' }, 'Click a service or an edge for its numbers, its versions and who it talks to.'),
      )
      return
    }
    if (selected.group === 'edges') {
      const e = shown.edges.get(selected.id)
      if (e !== undefined) replace(detail, edgeDetail(e))
      return
    }
    const n = shown.nodes.get(selected.id)
    if (n === undefined) return
    replace(detail, n.subject.type === 'service' ? serviceDetail(n.subject.service) : workloadDetail(n.subject.node))
  }

  const nameOf = (id: string, kind: 'service' | 'workload') => {
    if (kind === 'service') return id
    const n = data?.graph.nodes.find((x) => x.id === id)
    return n?.kind === 'unknown' ? 'unknown' : id
  }

  /** Inbound or outbound edges as rows; a row drawn in this view selects its edge. */
  function edgeTable(title: string, list: GraphEdge[], peer: 'from' | 'to', testId: string): Child {
    if (list.length === 0) return [h('h3', null, title), h('p', { class: 'muted' }, 'none')]
    const cyId = (e: GraphEdge) => {
      const end = (id: string, k: 'service' | 'workload') => (k === 'service' ? `s:${id}` : `w:${id}`)
      return `e:${end(e.from, e.fromKind)}>${end(e.to, e.toKind)}`
    }
    return [
      h('h3', null, title),
      h(
        'table',
        { 'data-testid': testId, class: 'compact' },
        h('thead', null, h('tr', null, ...['', 'RPS', 'Success', 'P99', 'mTLS'].map((c) => h('th', null, c)))),
        h(
          'tbody',
          null,
          ...list.map((e) => {
            const id = cyId(e)
            const drawn = shown?.edges.has(id) === true
            return h(
              'tr',
              {
                class: drawn ? 'clickable' : null,
                onclick: drawn ? () => selectElement('edges', id) : undefined,
              },
              h(
                'td',
                null,
                h('span', { class: `dot ${trafficHealth(e)}` }),
                peer === 'from' ? nameOf(e.from, e.fromKind) : nameOf(e.to, e.toKind),
              ),
              h('td', null, e.requests === 0 ? '-' : rps(e.rps)),
              h('td', null, percent(e.successRate)),
              h('td', null, ms(e.latencyMs?.p99)),
              h('td', null, mtlsText(e.mtlsShare) || '-'),
            )
          }),
        ),
      ),
    ]
  }

  function numbers(t: Partial<Traffic> | undefined, extra: [string, Child][] = []): Child {
    return h(
      'dl',
      { class: 'graph-numbers' },
      ...(
        [
          ['RPS', t === undefined || !t.requests ? '-' : rps(t.rps)],
          ['Success', percent(t?.successRate)],
          ['P50 / P99', `${ms(t?.latencyMs?.p50)} / ${ms(t?.latencyMs?.p99)}`],
          ['mTLS share', percent(t?.mtlsShare)],
          ...extra,
        ] as [string, Child][]
      ).flatMap(([k, v]) => [h('dt', null, k), h('dd', null, v)]),
    )
  }

  function serviceDetail(s: GraphService): Child {
    const g = data!.graph
    const rows = data!.services.filter((r) => r.namespace === s.namespace && r.name === s.name)
    const total = rows.find((r) => r.version === '')
    const byVersion = new Map(rows.filter((r) => r.version !== '').map((r) => [r.version, r]))
    const versions: { version: string; workload: string; row: StatRow | undefined }[] = []
    for (const id of s.workloads) {
      const n = g.nodes.find((x) => x.id === id)
      if (n === undefined) continue
      versions.push({ version: n.version, workload: n.workload, row: byVersion.get(n.version) })
      byVersion.delete(n.version)
    }
    // a version that had traffic in the window but whose workload is gone
    for (const [version, row] of byVersion) versions.push({ version, workload: '-', row })
    versions.sort((a, b) => a.version.localeCompare(b.version) || a.workload.localeCompare(b.workload))
    const inbound = g.serviceEdges.filter((e) => e.toKind === 'service' && e.to === s.id)
    const outbound = g.serviceEdges.filter((e) => e.fromKind === 'service' && e.from === s.id)
    return h(
      'div',
      { 'data-testid': 'node-detail', 'data-kind': 'service', 'data-name': s.id },
      h('h2', null, s.name),
      h('p', { class: 'muted' }, `service · namespace ${s.namespace}`),
      h(
        'p',
        null,
        h('a', { href: link('services', s.namespace, s.name), 'data-testid': 'service-link' }, 'Service page →'),
      ),
      numbers(total, [['Meshed', total?.meshed ? `${total.meshed.meshed}/${total.meshed.total}` : '-']]),
      h('h3', null, 'Versions'),
      versions.length === 0
        ? h('p', { class: 'muted' }, 'No workload serves it.')
        : h(
            'table',
            { class: 'compact', 'data-testid': 'versions' },
            h(
              'thead',
              null,
              h('tr', null, ...['Version', 'Workload', 'RPS', 'Success', 'P99'].map((c) => h('th', null, c))),
            ),
            h(
              'tbody',
              null,
              ...versions.map((v) =>
                h(
                  'tr',
                  { 'data-testid': 'version-row', 'data-version': v.version },
                  h('td', null, v.version || '-'),
                  h('td', null, v.workload),
                  h('td', null, v.row === undefined || v.row.requests === 0 ? '-' : rps(v.row.rps)),
                  h('td', { class: health(v.row?.successRate) }, percent(v.row?.successRate)),
                  h('td', null, ms(v.row?.latencyMs?.p99)),
                ),
              ),
            ),
          ),
      state.view === 'services' && s.workloads.length > 0
        ? h(
            'button',
            { type: 'button', 'data-testid': 'show-workloads', onclick: () => setView('workloads', `s:${s.id}`) },
            'Show its workloads in the graph',
          )
        : null,
      edgeTable('Called by', inbound, 'from', 'inbound'),
      edgeTable('Calls', outbound, 'to', 'outbound'),
    )
  }

  function workloadDetail(n: GraphNode): Child {
    const g = data!.graph
    const row = data!.workloads.find((r) => r.namespace === n.namespace && r.name === n.workload)
    const inbound = g.edges.filter((e) => e.to === n.id)
    const outbound = g.edges.filter((e) => e.from === n.id)
    const what =
      n.kind === 'gateway' ? 'gateway' : n.kind === 'unknown' ? 'callers without a sidecar' : `workload ${n.version}`
    return h(
      'div',
      { 'data-testid': 'node-detail', 'data-kind': n.kind, 'data-name': n.id },
      h('h2', null, n.kind === 'unknown' ? 'unknown' : n.workload),
      h('p', { class: 'muted' }, n.kind === 'unknown' ? what : `${what} · namespace ${n.namespace}`),
      n.kind === 'unknown'
        ? null
        : h(
            'p',
            null,
            h(
              'a',
              { href: link('workloads', n.namespace, n.workload), 'data-testid': 'workload-link' },
              'Workload page →',
            ),
            n.service !== null ? ' · ' : null,
            n.service !== null
              ? h('a', { href: link('services', ...splitId(n.service)) }, `service ${splitId(n.service)[1]}`)
              : null,
          ),
      n.kind === 'workload' ? numbers(row) : null,
      edgeTable('Called by', inbound, 'from', 'inbound'),
      edgeTable('Calls', outbound, 'to', 'outbound'),
    )
  }

  function edgeDetail(s: NonNullable<ReturnType<Shown['edges']['get']>>): Child {
    const e = s.edge
    const ids = (list: string[]) =>
      list.length === 0 ? h('span', { class: 'muted' }, 'none') : list.map((p) => h('div', null, h('code', null, p)))
    const hl = trafficHealth(e)
    return h(
      'div',
      { 'data-testid': 'edge-detail', 'data-source': s.source, 'data-target': s.target, 'data-health': hl },
      h('h2', null, `${nameOf(e.from, e.fromKind)} → ${nameOf(e.to, e.toKind)}`),
      h('p', null, h('span', { class: `dot ${hl}` }), h('span', { class: hl }, healthText(e, data!.graph.window))),
      h(
        'dl',
        { class: 'graph-numbers' },
        ...(
          [
            ['Source', nameOf(e.from, e.fromKind)],
            ['Destination', nameOf(e.to, e.toKind)],
            ['Service', e.service],
            ['Requests', e.requests.toFixed(e.requests % 1 === 0 ? 0 : 1)],
            ['RPS', e.requests === 0 ? '-' : rps(e.rps)],
            ['Success', percent(e.successRate)],
            ['Denied by policy', percent(e.deniedShare)],
            ['P50 / P95 / P99', `${ms(e.latencyMs?.p50)} / ${ms(e.latencyMs?.p95)} / ${ms(e.latencyMs?.p99)}`],
            ['mTLS share', percent(e.mtlsShare)],
            ['Client identity', ids(e.principals.source)],
            ['Server identity', ids(e.principals.destination)],
          ] as [string, Child][]
        ).flatMap(([k, v]) => [h('dt', null, k), h('dd', null, v)]),
      ),
      e.service !== 'unknown' && e.toKind === 'service'
        ? h('p', null, h('a', { href: link('services', ...splitId(e.to)) }, `Service ${e.service} →`))
        : null,
    )
  }

  replace(
    el,
    h('h1', null, 'Service graph'),
    h(
      'div',
      { class: 'graph-controls' },
      h('div', { class: 'segmented', role: 'group', 'aria-label': 'nodes' }, ...viewButtons),
      windowSelect,
      nsSelect,
      h('button', { type: 'button', 'data-testid': 'graph-relayout', onclick: () => view.relayout() }, 'Re-layout'),
      updated,
    ),
    h('div', { class: 'graph-body' }, h('div', { class: 'graph-wrap' }, canvas, empty), detail),
    legend(),
    nodeList,
    edgeList,
  )
  view = createGraphView(canvas, {
    onSelect(sel) {
      selected = sel
      renderDetail()
    },
    onMove: () => renderNodeList(),
  })
  ctx.signal.addEventListener('abort', () => view.destroy())
  renderControls()
  renderDetail()
  ctx.every(5000, load)
}

function splitId(id: string): [string, string] {
  const i = id.indexOf('/')
  return [id.slice(0, i), id.slice(i + 1)]
}

function legend(): HTMLElement {
  const line = (cls: string, text: string, dashed = false) =>
    h('li', null, h('span', { class: `swatch ${cls}${dashed ? ' dashed' : ''}` }), text)
  return h(
    'ul',
    { class: 'graph-legend', 'data-testid': 'graph-legend' },
    line('ok', 'success ≥ 99%'),
    line('warn', '≥ 95%'),
    line('bad', 'below 95%, or more than 5% denied by policy'),
    line('none', 'no request in the window'),
    line('none', 'some requests not over mutual TLS', true),
    h('li', { class: 'muted' }, 'width: requests per second · ◇ gateway · ◯ unknown callers (no sidecar)'),
  )
}
