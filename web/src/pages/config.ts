/**
 * Config: every resource in the store (`#/config`), grouped by kind, with what `loom analyze` says of it and whether
 * the proxies took the config; and one resource (`#/config/:kind/:namespace/:name`) as YAML with its warnings and an
 * editor that applies a change: a dry run first (results and warnings), then the apply. The same endpoints as
 * `loom get`, `loom analyze`, `loom proxy-status` and `loom apply [--dry-run]`.
 */
import { dump } from 'js-yaml'
import { ApiError, apiToken, getJson, send } from '../api.js'
import { tokenPanel } from '../components/token.js'
import { type Child, h, replace } from '../dom.js'
import { ago } from '../format.js'
import { hashQuery, link, type Page } from '../router.js'

interface Resource {
  apiVersion: string
  kind: string
  metadata: {
    name: string
    namespace: string
    labels?: Record<string, string>
    annotations?: Record<string, string>
    resourceVersion?: string
    creationTimestamp?: string
  }
  spec: Record<string, unknown>
}

interface Diagnostic {
  level: 'warning' | 'error'
  message: string
  /** `Kind/namespace/name` */
  resource: string
  path: string
  source?: string
  index?: number
}

interface ProxyStatus {
  nodeId: string
  perType: { typeUrl: string; state: string; nackError?: string }[]
}

interface ManifestError {
  source: string
  index: number
  kind?: string
  name?: string
  path: string
  message: string
  line?: number
}

interface ApplyAnswer {
  dryRun: boolean
  results: { kind: string; namespace: string; name: string; action: string; resourceVersion?: string }[]
  warnings: Diagnostic[]
  skipped: { index: number; kind: string; name?: string }[]
}

const TYPE: Record<string, string> = {
  'type.googleapis.com/envoy.config.cluster.v3.Cluster': 'CDS',
  'type.googleapis.com/envoy.config.listener.v3.Listener': 'LDS',
  'type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment': 'EDS',
  'type.googleapis.com/envoy.config.route.v3.RouteConfiguration': 'RDS',
  'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret': 'SDS',
  'type.googleapis.com/envoy.config.route.v3.VirtualHost': 'VHDS',
}

const keyOf = (r: Resource) => `${r.kind}/${r.metadata.namespace}/${r.metadata.name}`

/** What the store, analyze and the proxies say, read together. */
async function load(signal: AbortSignal): Promise<{
  revision: number
  items: Resource[]
  diagnostics: Map<string, Diagnostic[]>
  proxies: ProxyStatus[]
}> {
  const [list, analyzed, proxies] = await Promise.all([
    getJson<{ revision: number; items: Resource[] }>('/api/v1/resources', signal),
    // an empty body: the diagnostics of the stored config alone (analyze writes nothing)
    send<{ diagnostics: Diagnostic[] }>('POST', '/api/v1/analyze', ''),
    getJson<ProxyStatus[]>('/api/v1/proxy-status', signal),
  ])
  const diagnostics = new Map<string, Diagnostic[]>()
  for (const d of analyzed.diagnostics) {
    const list = diagnostics.get(d.resource) ?? []
    list.push(d)
    diagnostics.set(d.resource, list)
  }
  return { revision: list.revision, items: list.items, diagnostics, proxies }
}

/** The hosts (or host, or selector) a resource is about, for the table and the filter. */
function about(r: Resource): string {
  const s = r.spec ?? {}
  if (Array.isArray(s.hosts)) return (s.hosts as unknown[]).join(', ')
  if (typeof s.host === 'string') return s.host
  // Sidecar, EnvoyFilter: workloadSelector.labels; PeerAuthentication and the like: selector.matchLabels; Gateway:
  // selector, the labels themselves
  const selector = s.selector as Record<string, unknown> | undefined
  const labels =
    (selector?.matchLabels as Record<string, unknown> | undefined) ??
    (s.workloadSelector as { labels?: Record<string, unknown> } | undefined)?.labels ??
    selector
  if (labels !== null && typeof labels === 'object') {
    const text = Object.entries(labels)
      .filter(([, v]) => typeof v === 'string')
      .map(([k, v]) => `${k}=${v}`)
      .join(', ')
    if (text !== '') return text
  }
  return ''
}

/** valid (every stored resource passed validation), then the error and warning counts of analyze. */
function statusOf(diags: readonly Diagnostic[]): Child {
  const errors = diags.filter((d) => d.level === 'error').length
  const warnings = diags.length - errors
  return h(
    'span',
    { 'data-testid': 'resource-status' },
    h('span', { class: 'ok', title: 'stored: it passed validation' }, 'valid'),
    errors + warnings > 0 ? h('span', { class: 'muted' }, ' · analyze:') : null,
    errors > 0 ? h('span', { class: 'bad' }, ` ${errors} error${errors === 1 ? '' : 's'}`) : null,
    warnings > 0 ? h('span', { class: 'warn' }, ` ${warnings} warning${warnings === 1 ? '' : 's'}`) : null,
  )
}

/** Whether every connected proxy took the config: NACKs named, with the proxy's reason. */
function proxiesSummary(proxies: readonly ProxyStatus[]): Child {
  if (proxies.length === 0) return h('span', { class: 'none' }, 'no proxies connected')
  const nacks = proxies.flatMap((p) =>
    p.perType
      .filter((t) => t.state === 'NACKED')
      .map((t) => ({ node: p.nodeId, type: TYPE[t.typeUrl] ?? t.typeUrl, error: t.nackError ?? '' })),
  )
  const stale = proxies.filter((p) => p.perType.some((t) => t.state === 'STALE')).length
  if (nacks.length === 0)
    return h(
      'span',
      { 'data-testid': 'proxies-accepted' },
      h('span', { class: 'ok' }, `every proxy (${proxies.length}) accepted the config`),
      stale > 0 ? h('span', { class: 'muted' }, ` · ${stale} still receiving it`) : null,
    )
  const rejecting = new Set(nacks.map((n) => n.node)).size
  return h(
    'span',
    { 'data-testid': 'proxies-rejected' },
    h('span', { class: 'bad' }, `${rejecting} of ${proxies.length} proxies rejected the config`),
    h('ul', { class: 'nacks' }, ...nacks.map((n) => h('li', null, h('code', null, n.node), ` ${n.type}: ${n.error}`))),
  )
}

function diagnosticLine(d: Diagnostic): HTMLElement {
  return h(
    'li',
    { class: d.level === 'error' ? 'bad' : 'warn', 'data-testid': 'diagnostic' },
    h('strong', null, d.level === 'error' ? 'Error' : 'Warning'),
    ' ',
    d.path === '' ? null : h('code', null, d.path),
    d.path === '' ? '' : ': ',
    d.message,
  )
}

export const configPage: Page = (el, _params, ctx) => {
  const summary = h('div', { class: 'panel config-summary', 'data-testid': 'config-summary' }, 'Loading…')
  const filter = h('input', {
    type: 'search',
    class: 'config-filter',
    placeholder: 'filter: kind, namespace, name or host',
    'aria-label': 'filter',
    'data-testid': 'config-filter',
  })
  filter.value = hashQuery().get('q') ?? ''
  const groups = h('div', { 'data-testid': 'config-groups' })
  replace(el, h('h1', null, 'Config'), summary, h('div', { class: 'config-tools' }, filter), groups)

  let last: Awaited<ReturnType<typeof load>> | null = null
  const render = () => {
    if (last === null) return
    const { items, diagnostics } = last
    if (items.length === 0) {
      replace(
        groups,
        h(
          'p',
          { class: 'muted', 'data-testid': 'config-empty' },
          'The store holds no resources yet: apply some with ',
          h('code', null, 'loom apply -f <file>'),
          '.',
        ),
      )
      return
    }
    const terms = filter.value
      .toLowerCase()
      .split(/\s+/)
      .filter((t) => t !== '')
    const shown = items.filter((r) => {
      const text = `${r.kind} ${r.metadata.namespace}/${r.metadata.name} ${about(r)}`.toLowerCase()
      return terms.every((t) => text.includes(t))
    })
    if (shown.length === 0) {
      replace(groups, h('p', { class: 'muted', 'data-testid': 'config-empty' }, `Nothing matches “${filter.value}”.`))
      return
    }
    const byKind = new Map<string, Resource[]>()
    for (const r of shown) byKind.set(r.kind, [...(byKind.get(r.kind) ?? []), r])
    replace(
      groups,
      ...[...byKind.keys()].sort().map((kind) => {
        const rows = byKind.get(kind)!.sort((a, b) => keyOf(a).localeCompare(keyOf(b)))
        return h(
          'section',
          { 'data-testid': 'config-kind', 'data-kind': kind },
          h('h2', null, kind, h('span', { class: 'muted' }, ` (${rows.length})`)),
          h(
            'table',
            null,
            h(
              'thead',
              null,
              h(
                'tr',
                null,
                ...['Namespace', 'Name', 'Hosts / selector', 'Status', 'Version', 'Age'].map((c) => h('th', null, c)),
              ),
            ),
            h(
              'tbody',
              null,
              ...rows.map((r) =>
                h(
                  'tr',
                  { 'data-testid': 'resource-row', 'data-key': keyOf(r) },
                  h('td', null, r.metadata.namespace),
                  h(
                    'td',
                    null,
                    h('a', { href: link('config', r.kind, r.metadata.namespace, r.metadata.name) }, r.metadata.name),
                  ),
                  h('td', { class: 'muted' }, about(r)),
                  h('td', null, statusOf(diagnostics.get(keyOf(r)) ?? [])),
                  h('td', { class: 'muted' }, r.metadata.resourceVersion ?? '-'),
                  h(
                    'td',
                    { class: 'muted', title: r.metadata.creationTimestamp ?? '' },
                    ago(r.metadata.creationTimestamp),
                  ),
                ),
              ),
            ),
          ),
        )
      }),
    )
  }
  filter.addEventListener('input', () => {
    // the filter goes into the address (a reload or a link keeps it) without a navigation
    const q = filter.value.trim()
    history.replaceState(null, '', `#/config${q === '' ? '' : `?q=${encodeURIComponent(q)}`}`)
    render()
  })
  ctx.every(5000, async () => {
    const data = await load(ctx.signal)
    if (ctx.signal.aborted) return
    last = data
    const warned = [...data.diagnostics.values()].flat()
    const kinds = new Set(data.items.map((r) => r.kind)).size
    replace(
      summary,
      h(
        'div',
        null,
        h('strong', { 'data-testid': 'config-count' }, `${data.items.length} resources`),
        ` in ${kinds} kind${kinds === 1 ? '' : 's'} · store revision ${data.revision} · `,
        warned.length === 0
          ? h('span', { class: 'ok' }, 'loom analyze finds nothing')
          : h('span', { class: 'warn' }, `loom analyze: ${warned.length} finding${warned.length === 1 ? '' : 's'}`),
      ),
      h('div', null, 'Proxies: ', proxiesSummary(data.proxies)),
    )
    render()
  })
}

/** The YAML a user edits: what `loom apply` takes, with the resourceVersion it was read at (a stale edit is refused). */
function editable(r: Resource): string {
  const m = r.metadata
  const metadata: Record<string, unknown> = { name: m.name, namespace: m.namespace }
  if (m.labels !== undefined && Object.keys(m.labels).length > 0) metadata.labels = m.labels
  if (m.annotations !== undefined && Object.keys(m.annotations).length > 0) metadata.annotations = m.annotations
  if (m.resourceVersion !== undefined) metadata.resourceVersion = m.resourceVersion
  return dump({ apiVersion: r.apiVersion, kind: r.kind, metadata, spec: r.spec }, { noRefs: true, lineWidth: 120 })
}

function manifestErrorLine(e: ManifestError): HTMLElement {
  const who = [e.kind, e.name].filter((x) => x !== undefined).join(' ')
  return h(
    'li',
    { class: 'bad', 'data-testid': 'apply-error' },
    `document ${e.index}${who === '' ? '' : ` (${who})`}`,
    e.line === undefined || e.message.includes('(line') ? '' : `, line ${e.line}`,
    ': ',
    e.path === '' ? null : h('code', null, e.path),
    e.path === '' ? '' : ': ',
    e.message,
  )
}

export const resourcePage: Page = (el, p, ctx) => {
  const kind = p.kind ?? ''
  const ns = p.namespace ?? ''
  const name = p.name ?? ''
  const path = `/api/v1/resources/${encodeURIComponent(kind)}/${encodeURIComponent(ns)}/${encodeURIComponent(name)}`
  const meta = h('div', { class: 'panel', 'data-testid': 'resource-meta' }, 'Loading…')
  const warnings = h('div', { 'data-testid': 'resource-warnings' })
  const yaml = h('pre', { 'data-testid': 'resource-yaml' })
  const editor = h('textarea', {
    class: 'editor',
    spellcheck: 'false',
    'aria-label': 'resource YAML',
    'data-testid': 'editor',
  })
  const dryRun = h('button', { 'data-testid': 'dry-run' }, 'Dry run')
  const apply = h('button', { class: 'primary', 'data-testid': 'apply', disabled: true }, 'Apply')
  const reset = h('button', { 'data-testid': 'reset' }, 'Reset')
  const stale = h('p', { class: 'warn', 'data-testid': 'editor-stale', hidden: true })
  const result = h('div', { class: 'apply-result', 'data-testid': 'apply-result', 'aria-live': 'polite' })
  const access = () => {
    const writable = apiToken() !== null
    editor.readOnly = !writable
    editor.classList.toggle('read-only-editor', !writable)
    dryRun.disabled = !writable
    reset.disabled = !writable
    apply.disabled = !writable || checked === null || checked !== editor.value
  }
  const tokens = tokenPanel(() => access())

  replace(
    el,
    h('p', { class: 'crumbs' }, h('a', { href: '#/config' }, 'Config'), ` / ${kind}`),
    h('h1', null, `${kind} ${ns}/${name}`),
    meta,
    h('h2', null, 'What loom analyze finds'),
    warnings,
    h('h2', null, 'YAML'),
    yaml,
    h(
      'section',
      { class: 'panel editor-panel', 'data-testid': 'editor-panel' },
      h('h2', null, 'Change it'),
      h(
        'p',
        { class: 'muted' },
        'Edit the YAML, check it with a dry run (what would be written and what loom analyze says of it), then apply. ',
        'The resourceVersion it was read at makes the apply fail if it changed meanwhile.',
      ),
      tokens,
      editor,
      stale,
      h('div', { class: 'editor-buttons' }, dryRun, apply, reset),
      result,
    ),
  )

  /** the stored resource shown, and the text the editor was filled from */
  let current: Resource | null = null
  let base: string | null = null
  /** the editor text a dry run accepted last (Apply sends only that) */
  let checked: string | null = null

  const fill = (r: Resource) => {
    base = editable(r)
    editor.value = base
    editor.rows = Math.min(40, Math.max(8, base.split('\n').length + 2))
    checked = null
    stale.hidden = true
    access()
  }
  editor.addEventListener('input', () => access())
  reset.addEventListener('click', () => {
    if (current !== null) fill(current)
    replace(result)
  })

  const showFailure = (err: unknown, what: string) => {
    if (err instanceof ApiError) {
      const body = err.body as { errors?: ManifestError[]; error?: { message?: string } }
      if (err.status === 422 && Array.isArray(body?.errors)) {
        replace(
          result,
          h('p', { class: 'bad' }, `${what}: the YAML is not valid; nothing was written.`),
          h('ul', null, ...body.errors.map(manifestErrorLine)),
        )
        return
      }
      const message = body?.error?.message ?? err.message
      replace(
        result,
        h(
          'p',
          { class: 'bad', 'data-testid': 'apply-refused' },
          `${what} refused (${err.status}): ${message}`,
          err.status === 409 ? ' — Reset loads the current version.' : '',
        ),
      )
      return
    }
    replace(result, h('p', { class: 'bad', 'data-testid': 'apply-refused' }, `${what} failed: ${String(err)}`))
  }

  const showAnswer = (a: ApplyAnswer) => {
    replace(
      result,
      h(
        'p',
        { class: a.dryRun ? 'muted' : 'ok', 'data-testid': a.dryRun ? 'dry-run-done' : 'applied' },
        a.dryRun ? 'Dry run: nothing was written. Apply would do:' : 'Applied:',
      ),
      h(
        'ul',
        { 'data-testid': 'apply-results' },
        ...a.results.map((r) =>
          h(
            'li',
            null,
            `${r.kind} ${r.namespace}/${r.name} `,
            h('strong', null, r.action),
            r.resourceVersion === undefined ? '' : ` (resourceVersion ${r.resourceVersion})`,
          ),
        ),
      ),
      a.warnings.length === 0
        ? h('p', { class: 'ok' }, 'loom analyze finds nothing in it.')
        : [
            h('p', null, 'What loom analyze finds in it (it does not stop the apply):'),
            h('ul', { 'data-testid': 'apply-warnings' }, ...a.warnings.map(diagnosticLine)),
          ],
      a.skipped.length === 0
        ? null
        : h(
            'p',
            { class: 'muted' },
            `Skipped (not Istio kinds): ${a.skipped.map((s) => `${s.kind} ${s.name ?? ''}`).join(', ')}`,
          ),
    )
  }

  const submit = async (dry: boolean) => {
    const text = editor.value
    dryRun.disabled = apply.disabled = true
    replace(result, h('p', { class: 'muted' }, dry ? 'Checking…' : 'Applying…'))
    try {
      const a = await send<ApplyAnswer>('POST', `/api/v1/apply${dry ? '?dryRun=true' : ''}`, text, {
        'x-loom-source': 'the editor',
      })
      if (ctx.signal.aborted) return
      showAnswer(a)
      if (dry) checked = text
      else await refresh(true)
    } catch (err) {
      if (ctx.signal.aborted) return
      showFailure(err, dry ? 'Dry run' : 'Apply')
      if (!dry) checked = null
    } finally {
      access()
    }
  }
  dryRun.addEventListener('click', () => void submit(true))
  apply.addEventListener('click', () => void submit(false))

  /** the resource, its warnings and the proxies; `refill`: the editor takes the stored text again */
  const refresh = async (refill = false) => {
    let r: Resource
    try {
      r = await getJson<Resource>(path, ctx.signal)
    } catch (err) {
      if (err instanceof ApiError && err.status === 404) {
        current = null
        replace(
          meta,
          h('p', { class: 'bad', 'data-testid': 'resource-missing' }, `${kind} ${ns}/${name} is not in the store.`),
        )
        replace(warnings)
        replace(yaml)
        return
      }
      throw err
    }
    const [analyzed, proxies] = await Promise.all([
      send<{ diagnostics: Diagnostic[] }>('POST', '/api/v1/analyze', ''),
      getJson<ProxyStatus[]>('/api/v1/proxy-status', ctx.signal),
    ])
    if (ctx.signal.aborted) return
    const mine = analyzed.diagnostics.filter((d) => d.resource === keyOf(r))
    replace(
      meta,
      h(
        'div',
        null,
        statusOf(mine),
        ` · resourceVersion ${r.metadata.resourceVersion ?? '-'}`,
        ` · created ${ago(r.metadata.creationTimestamp)}`,
      ),
      h('div', null, 'Proxies: ', proxiesSummary(proxies)),
    )
    replace(
      warnings,
      mine.length === 0
        ? h('p', { class: 'ok' }, 'loom analyze finds nothing in it.')
        : h('ul', { class: 'diagnostics' }, ...mine.map(diagnosticLine)),
    )
    const text = dump(r, { noRefs: true, lineWidth: 120 })
    if (yaml.textContent !== text) replace(yaml, text)
    const first = current === null
    current = r
    const now = editable(r)
    if (first || refill || (editor.value === base && now !== base)) fill(r)
    else if (now !== base) {
      stale.hidden = false
      replace(
        stale,
        `The stored resource changed since the editor was filled (now resourceVersion ${r.metadata.resourceVersion}): `,
        'applying this text will be refused; Reset loads the current version.',
      )
    }
  }
  access()
  ctx.every(5000, () => refresh())
}
