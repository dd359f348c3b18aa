/**
 * The dashboard's files, served by the API port under /dashboard/, and the checks every request from a browser
 * passes before the API answers it.
 *
 * The dashboard is the same origin as the API it reads, so it needs no CORS and no second port. A browser is told
 * apart from the CLI by the headers only browsers send (`origin`, `sec-fetch-site`); for those:
 * - the Host header must name this machine's loopback, an IP address, or a name in `allowedHosts` (a page on another
 *   site whose name an attacker points at 127.0.0.1 — DNS rebinding — is refused);
 * - a call that changes state must come from the dashboard's own origin (`origin` equal to the API's, and
 *   `sec-fetch-site` same-origin when sent): another site's page cannot post to the API (CSRF);
 * - and it must carry an API token that allows writes (api-tokens.ts `writeAccess`, checked after these): without
 *   `--api-token-file` the dashboard is read-only.
 */
import { readFileSync } from 'node:fs'
import type * as http from 'node:http'
import { isIP } from 'node:net'

/** Headers on every dashboard file: no framing, no sniffing, scripts and styles from this origin only. */
export const DASHBOARD_HEADERS: Readonly<Record<string, string>> = {
  'content-security-policy':
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; " +
    "font-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
  'x-content-type-options': 'nosniff',
  'x-frame-options': 'DENY',
  'referrer-policy': 'no-referrer',
  'cross-origin-opener-policy': 'same-origin',
  'cross-origin-resource-policy': 'same-origin',
  'permissions-policy': 'camera=(), microphone=(), geolocation=()',
  'cache-control': 'no-cache',
}

const TYPES: Record<string, string> = {
  html: 'text/html; charset=utf-8',
  js: 'text/javascript; charset=utf-8',
  css: 'text/css; charset=utf-8',
  txt: 'text/plain; charset=utf-8',
  png: 'image/png',
  svg: 'image/svg+xml',
}

interface File {
  body: Buffer
  type: string
}

/**
 * The built dashboard (dist/web, made by `npm run build`), read once. The module runs from the bundle
 * (dist/bundle) or from tsc's output (dist/src/control), so both relative places are tried.
 */
export class DashboardFiles {
  private files: Map<string, File> | null = null
  private readonly dirs: URL[]

  constructor(dirs: URL[] = [new URL('../web/', import.meta.url), new URL('../../web/', import.meta.url)]) {
    this.dirs = dirs
  }

  private load(): Map<string, File> {
    if (this.files !== null) return this.files
    const files = new Map<string, File>()
    for (const dir of this.dirs) {
      let index: Buffer
      try {
        index = readFileSync(new URL('index.html', dir))
      } catch {
        continue
      }
      files.set('index.html', { body: index, type: TYPES.html! })
      for (const name of ['app.js', 'app.css', 'uplot.css', 'app.js.LEGAL.txt']) {
        try {
          files.set(name, { body: readFileSync(new URL(name, dir)), type: TYPES[name.split('.').pop()!]! })
        } catch {
          // optional files (the legal notices exist only when a library has some)
        }
      }
      break
    }
    this.files = files
    return files
  }

  /** Answers GET /dashboard/...; false when the path is not the dashboard's. */
  serve(pathname: string, res: http.ServerResponse): boolean {
    if (pathname === '/' || pathname === '/dashboard') {
      res.writeHead(302, { location: '/dashboard/', ...DASHBOARD_HEADERS })
      res.end()
      return true
    }
    if (!pathname.startsWith('/dashboard/')) return false
    const files = this.load()
    if (files.size === 0) {
      res.writeHead(503, { 'content-type': TYPES.txt!, ...DASHBOARD_HEADERS })
      res.end('the dashboard is not built: run `npm run build`\n')
      return true
    }
    const name = pathname === '/dashboard/' ? 'index.html' : pathname.slice('/dashboard/'.length)
    const f = files.get(name)
    if (f === undefined) {
      res.writeHead(404, { 'content-type': TYPES.txt!, ...DASHBOARD_HEADERS })
      res.end(`no dashboard file ${name}\n`)
      return true
    }
    res.writeHead(200, { 'content-type': f.type, 'content-length': f.body.length, ...DASHBOARD_HEADERS })
    res.end(f.body)
    return true
  }
}

/** A request the browser checks refuse: its status and why. */
export interface Refusal {
  status: number
  message: string
}

/** Whether the request comes from a browser page (only browsers send these). */
export function fromBrowser(req: http.IncomingMessage): boolean {
  return req.headers.origin !== undefined || req.headers['sec-fetch-site'] !== undefined
}

/** The host name of a Host header (`[::1]:15080` → `::1`, `localhost:15080` → `localhost`). */
function hostName(host: string): string {
  if (host.startsWith('[')) return host.slice(1, host.indexOf(']'))
  const i = host.lastIndexOf(':')
  return i < 0 ? host : host.slice(0, i)
}

/** Loopback names, IP addresses and the names the operator allowed are this control plane's. */
export function hostAllowed(host: string | undefined, allowedHosts: ReadonlySet<string>): boolean {
  if (host === undefined || host === '') return false
  const name = hostName(host).toLowerCase()
  return name === 'localhost' || name.endsWith('.localhost') || isIP(name) !== 0 || allowedHosts.has(name)
}

/**
 * The checks for a browser's request (null: go on). `changesState` says whether the call writes anything (explain,
 * analyze and a dry-run apply only read).
 */
export function checkBrowserRequest(
  req: http.IncomingMessage,
  changesState: boolean,
  allowedHosts: ReadonlySet<string>,
): Refusal | null {
  if (!fromBrowser(req)) return null
  const host = req.headers.host
  if (!hostAllowed(host, allowedHosts))
    return {
      status: 403,
      message:
        `Host "${host ?? ''}" is not this control plane's name: open the dashboard at its IP address or localhost ` +
        '(or start loom control with --api-allowed-hosts to name it)',
    }
  if (!changesState) return null
  const origin = req.headers.origin
  const site = req.headers['sec-fetch-site']
  if (
    origin === undefined ||
    (origin !== `http://${host}` && origin !== `https://${host}`) ||
    (site !== undefined && site !== 'same-origin')
  )
    return { status: 403, message: `a change from another origin (${origin ?? 'none'}) is refused` }
  return null
}
