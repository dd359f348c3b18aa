/**
 * A call graph drawn by cytoscape, laid out left to right by dagre. The layout runs only when nodes or edges come
 * or go: a refresh that changes numbers only updates labels, colors and widths, and nodes stay where they are
 * (also where the user dragged them). Everything drawn is canvas text: names from the mesh are never markup.
 */
import cytoscape, { type Core, type ElementDefinition } from 'cytoscape'
import dagre from 'cytoscape-dagre'

cytoscape.use(dagre)

export type Health = 'ok' | 'warn' | 'bad' | 'none'

export interface GraphViewNode {
  id: string
  label: string
  kind: 'service' | 'workload' | 'gateway' | 'unknown'
  health: Health
  /** a compound parent's id (a service around its workloads) */
  parent?: string
}

export interface GraphViewEdge {
  id: string
  source: string
  target: string
  label: string
  health: Health
  /** line width, px */
  width: number
  /** every request over mutual TLS (solid); some plain text (dashed) */
  mtls: boolean
}

export interface GraphView {
  /** adds, updates and removes elements; lays out again only when the set of elements changed */
  update(nodes: GraphViewNode[], edges: GraphViewEdge[]): void
  /** the node's position on screen, relative to the container (null when it is not drawn) */
  renderedPosition(id: string): { x: number; y: number } | null
  /** selects one element (as a click would, without telling onSelect) */
  select(id: string): void
  /** lays the graph out again and fits it to the view */
  relayout(): void
  destroy(): void
}

export interface GraphViewOptions {
  /** a node or an edge was clicked (null: the background) */
  onSelect(sel: { group: 'nodes' | 'edges'; id: string } | null): void
  /** nodes moved, or the view was panned or zoomed */
  onMove(): void
}

/**
 * Cytoscape puts a one-line <style> element in the page's head unless an element with this id is there already;
 * the dashboard's Content-Security-Policy refuses <style> elements (and would log an error), so a placeholder takes
 * its place and app.css carries its one rule.
 */
const CYTOSCAPE_STYLESHEET_ID = '__________cytoscape_stylesheet'

/** A node's box around its label (cytoscape's own `width: label` is deprecated): ~7.5 px a character, 17 px a line. */
function boxOf(label: string): { width: number; height: number } {
  const lines = label.split('\n')
  return { width: Math.max(60, ...lines.map((l) => l.length * 7.5 + 24)), height: lines.length * 17 + 16 }
}

function cssVar(name: string, fallback: string): string {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim() || fallback
}

export function createGraphView(container: HTMLElement, opts: GraphViewOptions): GraphView {
  if (document.getElementById(CYTOSCAPE_STYLESHEET_ID) === null) {
    const placeholder = document.createElement('meta')
    placeholder.id = CYTOSCAPE_STYLESHEET_ID
    document.head.prepend(placeholder)
  }
  const color: Record<Health, string> = {
    ok: cssVar('--ok', '#3fb950'),
    warn: cssVar('--warn', '#d29922'),
    bad: cssVar('--bad', '#f85149'),
    none: cssVar('--none', '#6e7681'),
  }
  const text = cssVar('--text', '#dce3ea')
  const muted = cssVar('--muted', '#8a98a6')
  const panel = cssVar('--panel', '#182028')
  const bg = cssVar('--bg', '#0f1419')
  const accent = cssVar('--accent', '#5aa9e6')
  const font = getComputedStyle(document.documentElement).fontFamily

  const cy: Core = cytoscape({
    container,
    minZoom: 0.2,
    maxZoom: 3,
    boxSelectionEnabled: false,
    selectionType: 'single',
    style: [
      {
        selector: 'node',
        style: {
          label: 'data(label)',
          'text-wrap': 'wrap',
          'text-valign': 'center',
          'text-halign': 'center',
          'font-family': font,
          'font-size': 13,
          color: text,
          'background-color': panel,
          'border-width': 2,
          'border-color': (n: cytoscape.NodeSingular) => color[n.data('health') as Health],
          shape: 'round-rectangle',
          width: (n: cytoscape.NodeSingular) => boxOf(n.data('label') as string).width,
          height: (n: cytoscape.NodeSingular) => boxOf(n.data('label') as string).height,
        },
      },
      { selector: 'node[kind = "workload"]', style: { shape: 'rectangle', 'font-size': 11 } },
      {
        selector: 'node[kind = "gateway"]',
        style: {
          shape: 'round-diamond',
          width: (n: cytoscape.NodeSingular) => boxOf(n.data('label') as string).width * 1.5,
          height: (n: cytoscape.NodeSingular) => boxOf(n.data('label') as string).height * 1.6,
        },
      },
      {
        selector: 'node[kind = "unknown"]',
        style: { shape: 'ellipse', 'border-style': 'dashed', color: muted },
      },
      {
        // a service around its workloads: the name on top, the box a shade off the background
        selector: ':parent',
        style: {
          'text-valign': 'top',
          'text-halign': 'center',
          'text-margin-y': -4,
          'background-color': bg,
          'background-opacity': 0.6,
          'border-style': 'solid',
          padding: '14px',
        },
      },
      {
        selector: 'edge',
        style: {
          label: 'data(label)',
          'text-wrap': 'wrap',
          'font-family': font,
          'font-size': 11,
          color: (e: cytoscape.EdgeSingular) => (e.data('health') === 'ok' ? text : color[e.data('health') as Health]),
          'text-background-color': bg,
          'text-background-opacity': 0.85,
          'text-background-padding': '2px',
          width: 'data(width)',
          'line-color': (e: cytoscape.EdgeSingular) => color[e.data('health') as Health],
          'target-arrow-color': (e: cytoscape.EdgeSingular) => color[e.data('health') as Health],
          'target-arrow-shape': 'triangle',
          'arrow-scale': 0.9,
          'curve-style': 'bezier',
        },
      },
      { selector: 'edge[!mtls]', style: { 'line-style': 'dashed' } },
      // the selection is a halo: a selected edge keeps the color of its health
      { selector: 'node:selected', style: { 'border-color': accent, 'border-width': 3 } },
      {
        selector: 'edge:selected',
        style: { 'underlay-color': accent, 'underlay-opacity': 0.35, 'underlay-padding': 4 },
      },
    ],
  })

  let shape = ''
  const layout = () => {
    cy.layout({
      name: 'dagre',
      rankDir: 'LR',
      nodeSep: 30,
      rankSep: 180,
      edgeSep: 20,
      padding: 30,
      fit: true,
      animate: false,
    } as cytoscape.LayoutOptions).run()
    // a small graph is not blown up to fill the page
    if (cy.zoom() > 1.6) {
      cy.zoom(1.6)
      cy.center()
    }
  }

  cy.on('tap', (ev) => {
    if (ev.target === cy) opts.onSelect(null)
    else opts.onSelect({ group: ev.target.isNode() ? 'nodes' : 'edges', id: ev.target.id() })
  })
  let pending = false
  cy.on('layoutstop viewport position resize add remove', () => {
    if (pending) return
    pending = true
    requestAnimationFrame(() => {
      pending = false
      opts.onMove()
    })
  })

  return {
    update(nodes, edges) {
      const next = [
        ...nodes.map((n) => `n\u0000${n.id}\u0000${n.parent ?? ''}`),
        ...edges.map((e) => `e\u0000${e.id}\u0000${e.source}\u0000${e.target}`),
      ]
        .sort()
        .join('\u0001')
      if (next !== shape) {
        // the elements changed: rebuilt, then laid out (a node's parent cannot change in place)
        const selected = cy.$(':selected').map((el) => el.id())
        cy.batch(() => {
          cy.elements().remove()
          const els: ElementDefinition[] = [
            ...nodes.map((n) => ({ group: 'nodes' as const, data: { ...n } })),
            ...edges.map((e) => ({ group: 'edges' as const, data: { ...e } })),
          ]
          cy.add(els)
          for (const id of selected) cy.$id(id).select()
        })
        shape = next
        layout()
        return
      }
      cy.batch(() => {
        for (const n of nodes) cy.$id(n.id).data({ label: n.label, health: n.health, kind: n.kind })
        for (const e of edges) cy.$id(e.id).data({ label: e.label, health: e.health, width: e.width, mtls: e.mtls })
      })
    },
    renderedPosition(id) {
      const el = cy.$id(id)
      if (el.empty()) return null
      const p = el.renderedPosition()
      return { x: p.x, y: p.y }
    },
    select(id) {
      cy.$(':selected').unselect()
      cy.$id(id).select()
    },
    relayout: layout,
    destroy() {
      cy.destroy()
    },
  }
}
