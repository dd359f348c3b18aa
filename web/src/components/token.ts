/**
 * The API token field: what a page that changes the mesh shows. The token stays in this tab's sessionStorage
 * (api.ts) and goes with every write; the page only shows whether one is set. Whether it may write is the control
 * plane's decision (a read token, or a control plane without --api-token-file, is refused there).
 */
import { apiToken, setApiToken } from '../api.js'
import { h, replace } from '../dom.js'

/** The field, in `el`; `changed` runs after the token is set or forgotten. */
export function tokenPanel(changed: () => void): HTMLElement {
  const el = h('div', { class: 'token-panel', 'data-testid': 'token-panel' })
  const render = () => {
    if (apiToken() === null) {
      const input = h('input', {
        type: 'password',
        autocomplete: 'off',
        placeholder: 'API token',
        'aria-label': 'API token',
        'data-testid': 'token-input',
      })
      const use = () => {
        if (input.value.trim() === '') return
        setApiToken(input.value.trim())
        render()
        changed()
      }
      input.addEventListener('keydown', (ev) => {
        if ((ev as KeyboardEvent).key === 'Enter') use()
      })
      replace(
        el,
        h(
          'p',
          { class: 'read-only', 'data-testid': 'read-only' },
          'read-only: enter an API token with write access ',
          h('span', { class: 'muted' }, '(a token of the control plane’s --api-token-file; kept in this tab only)'),
        ),
        h(
          'div',
          { class: 'token-row' },
          input,
          h('button', { onclick: use, 'data-testid': 'token-save' }, 'Use token'),
        ),
      )
    } else {
      replace(
        el,
        h(
          'div',
          { class: 'token-row' },
          h('span', { class: 'muted', 'data-testid': 'token-set' }, 'An API token is set for this tab.'),
          h(
            'button',
            {
              'data-testid': 'token-forget',
              onclick: () => {
                setApiToken(null)
                render()
                changed()
              },
            },
            'Forget token',
          ),
        ),
      )
    }
  }
  render()
  return el
}
