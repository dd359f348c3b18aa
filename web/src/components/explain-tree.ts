/**
 * An explanation (`POST /api/v1/explain`) as the tree `loom explain` prints: the same head lines, steps and outcome
 * (src/control/explain/render.ts makes both), each step a line with its mark (✓ holds, ✗ does not, • a setting
 * that applies) and its children nested under it.
 */
import {
  type Explained,
  type ExplainedStep,
  explanationHead,
  explanationOutcome,
  mark,
} from '../../../src/control/explain/render.js'
import { h } from '../dom.js'

export type { Explained }

function steps(list: ExplainedStep[], depth: number): HTMLElement {
  return h(
    'ul',
    { class: 'explain-steps' },
    ...list.map((s) =>
      h(
        'li',
        null,
        h(
          'div',
          { class: 'explain-line', 'data-testid': 'explain-line', 'data-depth': depth },
          h('span', { class: `mark ${s.ok === true ? 'ok' : s.ok === false ? 'bad' : 'muted'}` }, mark(s.ok)),
          ' ',
          s.text,
        ),
        s.children === undefined || s.children.length === 0 ? null : steps(s.children, depth + 1),
      ),
    ),
  )
}

export function explainTree(e: Explained): HTMLElement {
  const outcome = explanationOutcome(e)
  const cls =
    e.localReply !== null ? (e.localReply.status >= 400 ? 'bad' : 'warn') : e.faults.length > 0 ? 'warn' : 'ok'
  return h(
    'div',
    { class: 'explain panel', 'data-testid': 'explain-tree' },
    h('pre', { class: 'explain-head' }, explanationHead(e).join('\n')),
    steps(e.steps, 0),
    h('p', { class: `explain-outcome ${cls}`, 'data-testid': 'explain-outcome' }, `outcome: ${outcome}`),
  )
}
