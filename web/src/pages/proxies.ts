/**
 * Proxies (`#/proxies`): every proxy connected to the control plane, whether it holds the newest config of each xDS
 * type (SYNCED), is behind (STALE), refused it (NACKED, with the proxy's reason) or got none (NOT_SENT), refreshed
 * every 5 s. `#/proxies?node=<id>` is one proxy: its stream, its types' versions, and the config the control plane
 * serves it (`/debug/snapshot`) as a collapsible tree per type.
 */
import { getJson } from '../api.js'
import { jsonTree } from '../components/json-tree.js'
import {
  type ProxyStatus,
  proxyStatus,
  shortType,
  stateClass,
  type TypeStatus,
  uptime,
  XDS_TYPES,
} from '../components/proxy-status.js'
import { type Child, h, replace } from '../dom.js'
import { ago } from '../format.js'
import { hashQuery, type Page, type PageContext } from '../router.js'

export const proxiesPage: Page = (el, _params, ctx) => {
  const node = hashQuery().get('node')
  if (node !== null && node !== '') return detail(el, node, ctx)
  return list(el, ctx)
}

function nodeLink(nodeId: string): string {
  return `#/proxies?${new URLSearchParams({ node: nodeId })}`
}

/** The types any of the proxies subscribes to, in push order (types without a short name last). */
function typeColumns(proxies: ProxyStatus[]): string[] {
  const seen = new Set(proxies.flatMap((p) => p.perType.map((t) => t.typeUrl)))
  const known = XDS_TYPES.map(([u]) => u).filter((u) => seen.has(u))
  return [...known, ...[...seen].filter((u) => !known.includes(u)).sort()]
}

/** A type's state, colored, with the version the proxy holds (`withVersion`) and a refusal's reason. */
function stateCell(t: TypeStatus | undefined, withVersion = true): Child {
  if (t === undefined) return h('span', { class: 'none', 'data-state': 'NOT_SENT' }, 'NOT_SENT')
  const version = withVersion ? (t.ackedVersion ?? t.sentVersion) : undefined
  return h(
    'span',
    {
      class: `sync ${stateClass(t.state)}`,
      'data-state': t.state,
      title: `sent ${t.sentVersion ?? '-'}, ACKed ${t.ackedVersion ?? '-'}`,
    },
    t.state,
    version === undefined ? null : h('span', { class: 'version' }, version.slice(0, 8)),
    withVersion && t.state === 'NACKED' && t.nackError !== undefined ? h('div', { class: 'nack' }, t.nackError) : null,
  )
}

/** "7 proxies, all synced" or what is not. */
function summary(proxies: ProxyStatus[]): HTMLElement {
  const n = proxies.length
  const nacked = proxies.filter((p) => p.perType.some((t) => t.state === 'NACKED')).length
  const behind = proxies.filter((p) => !p.synced).length
  const cls = n === 0 ? 'none' : nacked > 0 ? 'bad' : behind > 0 ? 'warn' : 'ok'
  const text =
    n === 0
      ? 'No proxy is connected.'
      : `${n} ${n === 1 ? 'proxy' : 'proxies'}, ${
          behind === 0 ? 'all synced' : `${behind} not synced${nacked > 0 ? ` (${nacked} refused config: NACKED)` : ''}`
        }`
  const kinds = ['sidecar', 'gateway']
    .map((k) => [k, proxies.filter((p) => p.kind === k).length] as const)
    .filter(([, c]) => c > 0)
    .map(([k, c]) => `${c} ${k}${c === 1 ? '' : 's'}`)
  return h(
    'p',
    { class: `summary ${cls}`, 'data-testid': 'proxies-summary', 'data-synced': String(n > 0 && behind === 0) },
    text,
    kinds.length === 0 ? null : h('span', { class: 'muted' }, ` · ${kinds.join(', ')}`),
  )
}

function list(el: HTMLElement, ctx: PageContext): void {
  const head = h('div')
  const body = h('div')
  replace(el, h('h1', null, 'Proxies'), head, body)
  ctx.every(5000, async () => {
    const proxies = await proxyStatus(ctx.signal)
    if (ctx.signal.aborted) return
    replace(head, summary(proxies))
    if (proxies.length === 0) {
      replace(
        body,
        h(
          'p',
          { class: 'muted', 'data-testid': 'proxies-empty' },
          'Proxies appear here when they open their xDS stream to this control plane (loom proxy --xds, loom up).',
        ),
      )
      return
    }
    const types = typeColumns(proxies)
    const rows = proxies.map((p) => {
      const by = new Map(p.perType.map((t) => [t.typeUrl, t]))
      return h(
        'tr',
        { 'data-testid': 'proxy-row', 'data-node': p.nodeId, 'data-synced': String(p.synced) },
        h(
          'td',
          null,
          h('a', { href: nodeLink(p.nodeId) }, p.workload),
          p.namespace === null ? null : h('span', { class: 'muted' }, `.${p.namespace}`),
        ),
        h('td', null, p.kind ?? '-'),
        ...types.map((u) => h('td', { 'data-type': shortType(u) }, stateCell(by.get(u)))),
        h('td', { title: `connected ${p.connectedAt}` }, uptime(p.uptimeSeconds)),
        h('td', null, p.userAgent ?? '-', h('div', { class: 'muted' }, `${p.protocol} xDS`)),
        h('td', { class: 'node-id' }, p.nodeId),
      )
    })
    replace(
      body,
      h(
        'table',
        { 'data-testid': 'proxies-table', class: 'proxies' },
        h(
          'thead',
          null,
          h(
            'tr',
            null,
            ...['Workload', 'Kind', ...types.map(shortType), 'Uptime', 'Proxy', 'Node id'].map((c) => h('th', null, c)),
          ),
        ),
        h('tbody', null, ...rows),
      ),
    )
  })
}

function field(name: string, value: Child): HTMLElement[] {
  return [h('dt', null, name), h('dd', null, value)]
}

interface Dump {
  [typeUrl: string]: { version: string; resources: Record<string, unknown>[] }
}

/** The name a resource goes by: `name`, or a ClusterLoadAssignment's `cluster_name`. */
function resourceName(r: Record<string, unknown>, i: number): string {
  const n = r.name ?? r.cluster_name
  return typeof n === 'string' ? n : `#${i}`
}

function dumpView(dump: Dump): HTMLElement {
  const urls = Object.keys(dump)
  const order = [
    ...XDS_TYPES.map(([u]) => u).filter((u) => u in dump),
    ...urls.filter((u) => !XDS_TYPES.some(([k]) => k === u)),
  ]
  if (order.length === 0) return h('p', { class: 'muted' }, 'The control plane serves this proxy nothing.')
  return h(
    'div',
    null,
    ...order.map((u) => {
      const { version, resources } = dump[u]!
      const long = XDS_TYPES.find(([k]) => k === u)?.[2] ?? u
      const sorted = resources.map((r, i) => [resourceName(r, i), r] as const).sort(([a], [b]) => a.localeCompare(b))
      return h(
        'details',
        { class: 'dump-type panel', 'data-testid': 'dump-type', 'data-type': shortType(u) },
        h(
          'summary',
          null,
          h('strong', null, `${long} (${shortType(u)})`),
          h('span', { class: 'muted' }, ` · ${resources.length} · version ${version.slice(0, 8)}`),
        ),
        ...sorted.map(([name, r]) => {
          const tree = jsonTree(r, null)
          tree.setAttribute('data-testid', 'dump-resource')
          tree.setAttribute('data-name', name)
          tree.querySelector('summary')!.prepend(h('span', { class: 'resource-name' }, name), ' ')
          return tree
        }),
      )
    }),
  )
}

function detail(el: HTMLElement, nodeId: string, ctx: PageContext): void {
  const info = h('div')
  const dump = h('div', { 'data-testid': 'config-dump' }, h('p', { class: 'muted' }, 'Loading the config…'))
  const reload = h('button', { type: 'button' }, 'Reload')
  const title = h('h1', null, 'Proxy ', h('code', null, nodeId))
  replace(
    el,
    h('p', null, h('a', { href: '#/proxies' }, '← all proxies')),
    title,
    info,
    h(
      'h2',
      null,
      'Config ',
      h('span', { class: 'muted' }, '(what the control plane serves it, per xDS type) '),
      reload,
    ),
    dump,
  )
  ctx.every(5000, async () => {
    const p = (await proxyStatus(ctx.signal)).find((x) => x.nodeId === nodeId)
    if (ctx.signal.aborted) return
    if (p === undefined) {
      replace(info, h('p', { class: 'bad', 'data-testid': 'proxy-gone' }, 'This proxy is not connected.'))
      return
    }
    replace(title, 'Proxy ', p.workload, h('span', { class: 'muted' }, ` (${p.kind ?? 'unknown kind'})`))
    const rows = p.perType.map((t) =>
      h(
        'tr',
        { 'data-testid': 'type-row', 'data-type': shortType(t.typeUrl) },
        h('td', null, shortType(t.typeUrl)),
        h('td', null, stateCell(t, false)),
        h('td', null, h('code', null, t.sentVersion ?? '-')),
        h('td', null, h('code', null, t.ackedVersion ?? '-')),
        h('td', { class: t.nackError === undefined ? 'muted' : 'bad' }, t.nackError ?? ''),
      ),
    )
    replace(
      info,
      h(
        'dl',
        { class: 'facts panel' },
        ...field('Node id', h('code', null, p.nodeId)),
        ...field('Workload', `${p.workload}${p.namespace === null ? '' : ` in ${p.namespace}`}`),
        ...field('Service account', p.serviceAccount ?? '-'),
        ...field('Proxy', p.userAgent ?? '-'),
        ...field('xDS', `${p.protocol === 'delta' ? 'delta' : 'state of the world'} ADS, ${p.streams} stream(s)`),
        ...field('Connected', `${ago(p.connectedAt)} (up ${uptime(p.uptimeSeconds)})`),
        ...field('Admin', p.adminAddress ?? 'not sent'),
      ),
      h(
        'table',
        { 'data-testid': 'proxy-types' },
        h(
          'thead',
          null,
          h('tr', null, ...['Type', 'State', 'Sent', 'ACKed', 'Refused because'].map((c) => h('th', null, c))),
        ),
        h('tbody', null, ...rows),
      ),
    )
  })
  const load = async () => {
    reload.disabled = true
    try {
      const d = await getJson<Dump>(`/debug/snapshot?${new URLSearchParams({ node: nodeId })}`, ctx.signal)
      if (!ctx.signal.aborted) replace(dump, dumpView(d))
    } catch (err) {
      if (!ctx.signal.aborted)
        replace(dump, h('p', { class: 'bad' }, `The config could not be read: ${(err as Error).message}`))
    } finally {
      reload.disabled = false
    }
  }
  reload.addEventListener('click', () => void load())
  void load()
}
