/**
 * Building the page: every element is made with `h`, and every value from the mesh becomes a text node (or an
 * attribute set through the DOM), never HTML. Nothing in the dashboard assigns innerHTML, so a resource name, a header
 * or a path from a request cannot inject markup.
 */

export type Child = Node | string | number | null | undefined | false | Child[]

type Attrs = Record<string, string | number | boolean | null | undefined | ((ev: Event) => void)>

/** `h('a', { href: '#/graph', class: 'nav' }, 'Graph')`; `on<event>` attributes become listeners. */
export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Attrs | null = null,
  ...children: Child[]
): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag)
  if (attrs !== null) {
    for (const [k, v] of Object.entries(attrs)) {
      if (v === null || v === undefined || v === false) continue
      if (typeof v === 'function') el.addEventListener(k.slice(2).toLowerCase(), v)
      else if (k === 'class') el.className = String(v)
      else if (v === true) el.setAttribute(k, '')
      else el.setAttribute(k, String(v))
    }
  }
  append(el, children)
  return el
}

/** Appends children: strings and numbers as text nodes, arrays flattened, empty values skipped. */
export function append(el: Node, children: Child[]): void {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue
    if (Array.isArray(c)) append(el, c)
    else if (typeof c === 'string' || typeof c === 'number') el.appendChild(document.createTextNode(String(c)))
    else el.appendChild(c)
  }
}

/** Replaces an element's children. */
export function replace(el: Element, ...children: Child[]): void {
  el.replaceChildren()
  append(el, children)
}

/** A table from a header row and rows of cells; `data-testid` on the table when given. */
export function table(head: string[], rows: Child[][], testId?: string): HTMLTableElement {
  return h(
    'table',
    testId === undefined ? null : { 'data-testid': testId },
    h('thead', null, h('tr', null, ...head.map((c) => h('th', null, c)))),
    h('tbody', null, ...rows.map((r) => h('tr', null, ...r.map((c) => h('td', null, c))))),
  )
}
