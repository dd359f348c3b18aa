/**
 * Hash routes (`#/services/default/reviews`): the dashboard is one page, so a link or a reload lands on the same view
 * and the server serves one file. Each page renders into the main element and gets an AbortSignal that fires when the
 * user leaves it: timers and streams stop with it.
 */

export interface PageContext {
  /** fires when the page is left */
  signal: AbortSignal
  /** runs `fn` now and every `ms` until the page is left (a failing round shows its error and the next one retries) */
  every(ms: number, fn: () => Promise<void>): void
}

export type Page = (el: HTMLElement, params: Record<string, string>, ctx: PageContext) => void | Promise<void>

interface Route {
  parts: string[]
  page: Page
}

const routes: Route[] = []

/** `pattern` like `/services/:namespace/:name`. */
export function route(pattern: string, page: Page): void {
  routes.push({ parts: pattern.split('/').filter((p) => p !== ''), page })
}

export function match(path: string): { page: Page; params: Record<string, string> } | null {
  const parts = path
    .split('?')[0]!
    .split('/')
    .filter((p) => p !== '')
  for (const r of routes) {
    if (r.parts.length !== parts.length) continue
    const params: Record<string, string> = {}
    let ok = true
    r.parts.forEach((p, i) => {
      const v = decodeURIComponent(parts[i]!)
      if (p.startsWith(':')) params[p.slice(1)] = v
      else if (p !== v) ok = false
    })
    if (ok) return { page: r.page, params }
  }
  return null
}

/** The query of the hash (`#/live?workload=x`). */
export function hashQuery(): URLSearchParams {
  const i = location.hash.indexOf('?')
  return new URLSearchParams(i < 0 ? '' : location.hash.slice(i + 1))
}

/** `#/a/b` from path segments, each encoded. */
export function link(...segments: string[]): string {
  return `#/${segments.map(encodeURIComponent).join('/')}`
}
