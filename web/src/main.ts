/** The dashboard's shell: the top bar, the router, and the pages. */
import { h, replace } from './dom.js'
import { graphPage } from './pages/graph.js'
import { servicesPage, servicePage, workloadPage } from './pages/services.js'
import { configPage, resourcePage } from './pages/config.js'
import { proxiesPage } from './pages/proxies.js'
import { livePage } from './pages/live.js'
import { match, type PageContext, route } from './router.js'

route('/graph', graphPage)
route('/services', servicesPage)
route('/services/:namespace/:name', servicePage)
route('/workloads/:namespace/:name', workloadPage)
route('/config', configPage)
route('/config/:kind/:namespace/:name', resourcePage)
route('/proxies', proxiesPage)
route('/live', livePage)

const NAV: [string, string][] = [
  ['#/graph', 'Graph'],
  ['#/services', 'Services'],
  ['#/config', 'Config'],
  ['#/proxies', 'Proxies'],
  ['#/live', 'Live'],
]

const main = h('main', { id: 'page' })
const nav = h('nav', null, ...NAV.map(([href, text]) => h('a', { href, 'data-nav': href.slice(2) }, text)))
const status = h('span', { class: 'status', 'data-testid': 'status' })
const banner = h('div', { class: 'banner', role: 'alert', hidden: true })

let leave: AbortController | null = null

/** Shows a failure of the page's own loading above it (cleared by the next success). */
export function showError(err: unknown): void {
  banner.hidden = false
  replace(banner, err instanceof Error ? err.message : String(err))
}

function clearError(): void {
  banner.hidden = true
}

async function render(): Promise<void> {
  leave?.abort()
  const ac = new AbortController()
  leave = ac
  const path = location.hash.replace(/^#/, '') || '/graph'
  const found = match(path)
  for (const a of nav.querySelectorAll('a')) {
    const section = path.split('?')[0]!.split('/')[1] ?? ''
    a.classList.toggle('active', a.getAttribute('data-nav') === section)
  }
  clearError()
  main.replaceChildren()
  if (found === null) {
    replace(main, h('h1', null, 'Not found'), h('p', null, 'No page at ', h('code', null, path), '.'))
    return
  }
  const ctx: PageContext = {
    signal: ac.signal,
    every(ms, fn) {
      const round = () => {
        if (ac.signal.aborted) return
        fn()
          .then(clearError, (err: unknown) => {
            if (!ac.signal.aborted) showError(err)
          })
          .finally(() => {
            if (!ac.signal.aborted) setTimeout(round, ms)
          })
      }
      round()
    },
  }
  try {
    await found.page(main, found.params, ctx)
  } catch (err) {
    if (!ac.signal.aborted) showError(err)
  }
}

async function pollHealth(): Promise<void> {
  try {
    const r = await fetch('/healthz')
    const b = (await r.json()) as { revision?: number }
    replace(status, `control plane up · revision ${b.revision ?? '?'}`)
    status.className = 'status ok'
  } catch {
    replace(status, 'control plane unreachable')
    status.className = 'status bad'
  }
  setTimeout(pollHealth, 5000)
}

document.body.append(h('header', null, h('a', { class: 'brand', href: '#/graph' }, 'Loom'), nav, status), banner, main)
window.addEventListener('hashchange', () => void render())
void render()
void pollHealth()
