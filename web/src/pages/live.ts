/**
 * Live requests (`#/live`): a tap of one workload's proxies (`GET /api/v1/tap/<namespace>/<workload>`, what
 * `loom tap` reads), the requests streaming into a table as they finish, newest first; and `explain` (what
 * `loom explain` asks) for a tapped request or one typed in.
 *
 * The tap is an NDJSON stream read with fetch's body reader; Stop, another tap, or leaving the page aborts it, and
 * the control plane then closes the proxies' taps, so nothing is recorded once nobody looks. `#/live?workload=x
 * &namespace=y` opens with that workload chosen.
 */
import { ApiError, send } from '../api.js'
import { type Explained, explainTree } from '../components/explain-tree.js'
import { type ProxyStatus, proxyStatus } from '../components/proxy-status.js'
import { h, replace } from '../dom.js'
import { ms } from '../format.js'
import { hashQuery, type Page } from '../router.js'

/** Rows kept in the table: the oldest go first. */
export const MAX_ROWS = 500

/** A tapped request: the proxy's access log entry with the tap's own fields in front (src/proxy/tap/tap.ts). */
interface TapRecord {
  type: 'request'
  direction: 'inbound' | 'outbound'
  source: string | null
  destination: string | null
  start_time: string
  method: string | null
  path: string | null
  authority: string | null
  response_code: number
  response_flags: string
  duration: number
  upstream_host: string | null
  upstream_cluster: string | null
}

/** Lines a tap could not send: over max_rps (skipped) or a reader that fell behind (dropped). */
interface TapLoss {
  type: 'dropped'
  count: number
  reason: 'max_rps' | 'slow_reader'
}

const METHODS = ['', 'GET', 'POST', 'PUT', 'DELETE', 'PATCH', 'HEAD', 'OPTIONS']

/** `<namespace>/<workload>`: how the page names a proxy's workload. */
function keyOf(p: ProxyStatus): string {
  return `${p.namespace ?? 'default'}/${p.workload}`
}

function splitKey(key: string): { namespace: string; workload: string } {
  const i = key.indexOf('/')
  return { namespace: key.slice(0, i), workload: key.slice(i + 1) }
}

/** The workloads that can be tapped: one entry per workload (several pods share one), sidecars then gateways. */
function workloads(proxies: ProxyStatus[]): ProxyStatus[] {
  const by = new Map<string, ProxyStatus>()
  for (const p of proxies) if (p.adminAddress !== null && !by.has(keyOf(p))) by.set(keyOf(p), p)
  return [...by.values()].sort(
    (a, b) => (a.kind === 'gateway' ? 1 : 0) - (b.kind === 'gateway' ? 1 : 0) || keyOf(a).localeCompare(keyOf(b)),
  )
}

function statusClass(code: number): string {
  return code === 0 || code >= 500 ? 'bad' : code >= 400 ? 'warn' : 'ok'
}

/** `spiffe://<trust domain>/ns/<ns>/sa/<sa>` → its namespace and service account, else null. */
function identityOf(principal: string | null): { namespace: string; serviceAccount: string } | null {
  const m = /^spiffe:\/\/[^/]+\/ns\/([^/]+)\/sa\/([^/]+)$/.exec(principal ?? '')
  return m === null ? null : { namespace: m[1]!, serviceAccount: m[2]! }
}

/**
 * Who sent a tapped request, for explain: an outbound request is the tapped workload's own; an inbound one was sent
 * by the proxy whose identity the mTLS peer certificate names (a gateway, or a sidecar of that service account).
 */
function senderOf(r: TapRecord, tapped: string, proxies: ProxyStatus[]): ProxyStatus | string {
  if (r.direction === 'outbound') {
    const p = proxies.find((x) => keyOf(x) === tapped)
    return p ?? `${tapped} is no longer connected`
  }
  const id = identityOf(r.source)
  if (id === null)
    return `the caller (${r.source ?? 'unknown'}) has no mesh identity: explain needs the proxy that sent the request`
  const same = proxies
    .filter((p) => p.namespace === id.namespace && p.serviceAccount === id.serviceAccount)
    .sort((a, b) => keyOf(a).localeCompare(keyOf(b)))
  return same[0] ?? `no connected proxy runs as ${r.source}`
}

export const livePage: Page = (el, _params, ctx) => {
  let proxies: ProxyStatus[] = []
  let tap: AbortController | null = null
  let tapped = ''
  /** the control plane answered the tap: the proxies record from now on */
  let connected = false
  let requests = 0
  let skipped = 0
  let dropped = 0

  // the tap's controls
  const workload = h('select', { 'data-testid': 'tap-workload', 'aria-label': 'workload' })
  const method = h(
    'select',
    { 'data-testid': 'tap-method', 'aria-label': 'method' },
    ...METHODS.map((m) => h('option', { value: m }, m === '' ? 'any method' : m)),
  )
  const path = h('input', { 'data-testid': 'tap-path', placeholder: 'path prefix (/api)', size: 16 })
  const authority = h('input', { 'data-testid': 'tap-authority', placeholder: 'authority (reviews:9080)', size: 20 })
  const direction = h(
    'select',
    { 'data-testid': 'tap-direction', 'aria-label': 'direction' },
    h('option', { value: '' }, 'both directions'),
    h('option', { value: 'inbound' }, 'inbound'),
    h('option', { value: 'outbound' }, 'outbound'),
  )
  const maxRps = h('input', {
    'data-testid': 'tap-max-rps',
    type: 'number',
    min: 0,
    value: 100,
    title: 'at most this many requests a second (0: no limit); the rest are counted as skipped',
    'aria-label': 'max rps',
    class: 'narrow',
  })
  const start = h('button', { type: 'button', 'data-testid': 'tap-start', class: 'primary' }, 'Start')
  const stop = h('button', { type: 'button', 'data-testid': 'tap-stop', disabled: true }, 'Stop')
  const state = h('p', { class: 'muted', 'data-testid': 'tap-status' }, 'Choose a workload and start the tap.')

  // the table
  const empty = h('tr', { class: 'empty' }, h('td', { colspan: 9, class: 'muted' }, 'No requests yet.'))
  const rows = h('tbody', { 'data-testid': 'tap-rows' }, empty)
  const table = h(
    'table',
    { class: 'tap', 'data-testid': 'tap-table' },
    h(
      'thead',
      null,
      h(
        'tr',
        null,
        ...['Time (UTC)', 'Dir', 'Method', 'Authority', 'Path', 'Status', 'Duration', 'Flags', 'Upstream'].map((c) =>
          h('th', null, c),
        ),
      ),
    ),
    rows,
  )

  // explain
  const from = h('select', { 'data-testid': 'explain-from', 'aria-label': 'from' })
  const xMethod = h('input', { 'data-testid': 'explain-method', value: 'GET', size: 7, 'aria-label': 'method' })
  const xUrl = h('input', {
    'data-testid': 'explain-url',
    placeholder: 'http://reviews:9080/reviews/0',
    class: 'wide',
    'aria-label': 'url',
  })
  const xHeaders = h('textarea', {
    'data-testid': 'explain-headers',
    rows: 2,
    placeholder: 'headers, one a line: end-user: jason',
    'aria-label': 'headers',
  })
  const xGo = h('button', { type: 'button', 'data-testid': 'explain-go', class: 'primary' }, 'Explain')
  const xNote = h('p', { class: 'muted', 'data-testid': 'explain-note' })
  const xResult = h(
    'div',
    { 'data-testid': 'explain-result' },
    h('p', { class: 'muted' }, 'Click a request to see why it got its answer, or explain one by hand.'),
  )

  replace(
    el,
    h('h1', null, 'Live requests'),
    h(
      'div',
      { class: 'panel tap-controls' },
      workload,
      method,
      path,
      authority,
      direction,
      h('label', null, 'max rps ', maxRps),
      start,
      stop,
      state,
    ),
    h(
      'div',
      { class: 'live-grid' },
      h('div', { class: 'tap-table-wrap' }, table),
      h(
        'div',
        { class: 'panel explain-panel', 'data-testid': 'explain' },
        h('h2', null, 'Explain'),
        h('div', { class: 'explain-form' }, from, xMethod, xUrl, xHeaders, xGo),
        xNote,
        xResult,
      ),
    ),
  )

  const options = (select: HTMLSelectElement, list: ProxyStatus[]) => {
    const want = select.value
    const keys = list.map(keyOf)
    if (keys.join('\n') === [...select.options].map((o) => o.value).join('\n')) return
    replace(
      select,
      ...list.map((p) => h('option', { value: keyOf(p) }, `${p.workload} (${p.namespace ?? '?'}, ${p.kind ?? '?'})`)),
    )
    if (keys.includes(want)) select.value = want
  }

  const showState = () => {
    const losses = [
      skipped > 0 ? `${skipped} skipped (over max rps)` : null,
      dropped > 0 ? `${dropped} dropped (the reader fell behind)` : null,
    ].filter((x) => x !== null)
    const { namespace, workload: w } = splitKey(tapped)
    replace(
      state,
      tap === null
        ? `Stopped: ${w} in ${namespace}`
        : connected
          ? `Tapping ${w} in ${namespace}`
          : `Connecting to ${w} in ${namespace}…`,
      ` · ${requests} request${requests === 1 ? '' : 's'}`,
      losses.length === 0 ? null : ` · ${losses.join(', ')}`,
      requests > MAX_ROWS ? ` · the newest ${MAX_ROWS} shown` : null,
    )
    state.className = tap !== null && connected ? 'ok' : 'muted'
    state.dataset.state = tap === null ? 'stopped' : connected ? 'tapping' : 'connecting'
  }

  const addRow = (r: TapRecord) => {
    const key = tapped
    const row = h(
      'tr',
      { 'data-testid': 'tap-row', class: 'clickable', title: 'explain this request' },
      h('td', { title: r.start_time }, r.start_time.slice(11, 23)),
      h('td', null, r.direction === 'inbound' ? 'in' : 'out'),
      h('td', null, r.method ?? '-'),
      h('td', null, r.authority ?? '-'),
      h('td', { class: 'path' }, r.path ?? '-'),
      h('td', { class: statusClass(r.response_code) }, r.response_code === 0 ? '---' : r.response_code),
      h('td', null, ms(r.duration)),
      h('td', { class: r.response_flags === '-' ? 'muted' : 'warn' }, r.response_flags),
      h(
        'td',
        { class: 'upstream' },
        r.upstream_host ?? '-',
        r.upstream_cluster === null ? null : h('div', { class: 'muted' }, r.upstream_cluster),
      ),
    )
    row.addEventListener('click', () => {
      for (const x of rows.querySelectorAll('tr.selected')) x.classList.remove('selected')
      row.classList.add('selected')
      explainRecord(r, key)
    })
    if (empty.isConnected) empty.remove()
    rows.prepend(row)
    while (rows.childElementCount > MAX_ROWS) rows.lastElementChild!.remove()
  }

  const finish = (ac: AbortController, message: string | HTMLElement | null) => {
    if (tap !== ac) return
    tap = null
    start.disabled = false
    stop.disabled = true
    showState()
    if (message !== null) state.append(' · ', message)
  }

  const startTap = async () => {
    tap?.abort()
    const ac = new AbortController()
    tap = ac
    tapped = workload.value
    requests = skipped = dropped = 0
    connected = false
    replace(rows, empty)
    start.disabled = true
    stop.disabled = false
    const { namespace, workload: w } = splitKey(tapped)
    const q = new URLSearchParams()
    if (method.value !== '') q.set('method', method.value)
    if (path.value !== '') q.set('path', path.value)
    if (authority.value !== '') q.set('authority', authority.value)
    if (direction.value !== '') q.set('direction', direction.value)
    q.set('max_rps', String(Math.max(0, Math.floor(Number(maxRps.value) || 0))))
    showState()
    try {
      const r = await fetch(`/api/v1/tap/${encodeURIComponent(namespace)}/${encodeURIComponent(w)}?${q}`, {
        signal: ac.signal,
        headers: { accept: 'application/x-ndjson' },
      })
      if (!r.ok) {
        const text = await r.text()
        let msg = text.trim()
        try {
          msg = (JSON.parse(text) as { error: { message: string } }).error.message
        } catch {
          // a plain-text answer is shown as it is
        }
        return finish(ac, h('span', { class: 'bad' }, `the tap failed: ${msg}`))
      }
      connected = true
      showState()
      const reader = r.body!.getReader()
      const decoder = new TextDecoder()
      let partial = ''
      for (;;) {
        const { done, value } = await reader.read()
        if (done) break
        const lines = (partial + decoder.decode(value, { stream: true })).split('\n')
        partial = lines.pop()!
        for (const line of lines) {
          if (line === '' || tap !== ac) continue
          let e: TapRecord | TapLoss
          try {
            e = JSON.parse(line) as TapRecord | TapLoss
          } catch {
            continue
          }
          if (e.type === 'request') {
            requests++
            addRow(e)
          } else if (e.type === 'dropped') {
            if (e.reason === 'max_rps') skipped += e.count
            else dropped += e.count
          }
        }
        if (tap === ac) showState()
      }
      finish(ac, 'the stream ended (the proxies closed it)')
    } catch (err) {
      if (ac.signal.aborted) return
      finish(ac, h('span', { class: 'bad' }, `the tap failed: ${(err as Error).message}`))
    }
  }

  const stopTap = () => {
    const ac = tap
    if (ac === null) return
    ac.abort()
    finish(ac, null)
  }

  const runExplain = async () => {
    const { namespace, workload: w } = splitKey(from.value)
    const headers: [string, string][] = []
    for (const line of xHeaders.value.split('\n')) {
      if (line.trim() === '') continue
      const i = line.indexOf(':')
      if (i <= 0) {
        replace(xResult, h('p', { class: 'bad' }, `a header is "name: value", not "${line}"`))
        return
      }
      headers.push([line.slice(0, i).trim(), line.slice(i + 1).trim()])
    }
    let url = xUrl.value.trim()
    if (url === '') {
      replace(xResult, h('p', { class: 'bad' }, 'the request URL is required, e.g. http://reviews:9080/reviews/0'))
      return
    }
    if (!/^https?:\/\//.test(url)) url = `http://${url}`
    xGo.disabled = true
    replace(xResult, h('p', { class: 'muted' }, 'Explaining…'))
    try {
      const e = await send<Explained>('POST', '/api/v1/explain', {
        from: w,
        namespace,
        method: xMethod.value.trim().toUpperCase() || 'GET',
        url,
        headers,
      })
      if (!ctx.signal.aborted) replace(xResult, explainTree(e))
    } catch (err) {
      if (!ctx.signal.aborted)
        replace(
          xResult,
          h('p', { class: 'bad' }, err instanceof ApiError ? err.message : `explain failed: ${(err as Error).message}`),
        )
    } finally {
      xGo.disabled = false
    }
  }

  function explainRecord(r: TapRecord, key: string): void {
    const sender = senderOf(r, key, proxies)
    xMethod.value = r.method ?? 'GET'
    xUrl.value = `http://${r.authority ?? ''}${r.path ?? '/'}`
    xHeaders.value = ''
    if (typeof sender === 'string') {
      replace(xNote, h('span', { class: 'warn' }, sender))
      replace(xResult)
      return
    }
    from.value = keyOf(sender)
    replace(
      xNote,
      r.direction === 'inbound'
        ? `An inbound request, explained from its sender, ${sender.workload} (${sender.kind ?? 'proxy'}): the request as it sent it.`
        : `An outbound request of ${sender.workload}, as its application sent it.`,
      ' The tap does not record request headers: add those that matter to routing and explain again.',
    )
    void runExplain()
  }

  start.addEventListener('click', () => void startTap())
  stop.addEventListener('click', stopTap)
  xGo.addEventListener('click', () => void runExplain())
  ctx.signal.addEventListener('abort', () => tap?.abort())

  const q = hashQuery()
  let preselect = q.get('workload') === null ? null : `${q.get('namespace') ?? 'default'}/${q.get('workload')}`
  ctx.every(5000, async () => {
    proxies = await proxyStatus(ctx.signal)
    if (ctx.signal.aborted) return
    const list = workloads(proxies)
    options(workload, list)
    options(from, list)
    if (preselect !== null && list.some((p) => keyOf(p) === preselect)) {
      workload.value = preselect
      from.value = preselect
      preselect = null
    }
    if (list.length === 0) {
      start.disabled = true
      if (tap === null) replace(state, 'No proxy that can be tapped is connected (a proxy sends its admin address).')
    } else if (tap === null) start.disabled = false
  })
}
