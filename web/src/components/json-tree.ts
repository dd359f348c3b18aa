/**
 * JSON as a collapsible tree: objects and arrays are <details> whose children are built when first opened, so a
 * proxy's whole config (thousands of nodes for a sidecar with many clusters) costs a few elements until it is read.
 * Every key and value is a text node. Private keys (a gateway's credentials in its SDS secrets) are not shown.
 */
import { type Child, h } from '../dom.js'

const SECRET_KEYS = new Set(['private_key', 'privateKey'])

function summaryOf(v: unknown): string {
  if (Array.isArray(v)) return `[${v.length}]`
  const keys = Object.keys(v as object)
  return `{${keys.length === 0 ? '' : keys.length <= 3 ? keys.join(', ') : `${keys.slice(0, 3).join(', ')}, …`}}`
}

function scalar(v: unknown): HTMLElement {
  if (typeof v === 'string') return h('span', { class: 'json-str' }, JSON.stringify(v))
  if (typeof v === 'number') return h('span', { class: 'json-num' }, String(v))
  return h('span', { class: 'json-lit' }, String(v))
}

function isBranch(v: unknown): v is object {
  return v !== null && typeof v === 'object' && (Array.isArray(v) ? v.length > 0 : Object.keys(v).length > 0)
}

function node(key: string | null, v: unknown): HTMLElement {
  const label: Child = key === null ? null : h('span', { class: 'json-key' }, `${key}: `)
  if (key !== null && SECRET_KEYS.has(key)) return h('div', { class: 'json-leaf' }, label, h('em', null, '(not shown)'))
  if (!isBranch(v)) {
    const empty = Array.isArray(v) ? '[]' : v !== null && typeof v === 'object' ? '{}' : null
    return h('div', { class: 'json-leaf' }, label, empty === null ? scalar(v) : h('span', { class: 'json-lit' }, empty))
  }
  return jsonTree(v, key, false)
}

/** A collapsible view of `value`; `label` names it in the summary line; `open` opens the first level. */
export function jsonTree(value: object, label: string | null = null, open = false): HTMLDetailsElement {
  const body = h('div', { class: 'json-body' })
  const el = h(
    'details',
    { class: 'json' },
    h(
      'summary',
      null,
      label === null ? null : h('span', { class: 'json-key' }, `${label}: `),
      h('span', { class: 'muted' }, summaryOf(value)),
    ),
    body,
  )
  let built = false
  const build = () => {
    if (built) return
    built = true
    const entries = Array.isArray(value) ? value.map((v, i) => [String(i), v] as const) : Object.entries(value)
    for (const [k, v] of entries) body.append(node(k, v))
  }
  el.addEventListener('toggle', () => {
    if (el.open) build()
  })
  if (open) {
    build()
    el.open = true
  }
  return el
}
