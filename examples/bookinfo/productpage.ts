/**
 * Bookinfo `productpage`: the web front end. Calls details (3 s, one attempt) and then reviews (3 s, up to two
 * attempts) and renders the book's page, which is always a 200 even when a backend fails.
 *
 *   GET  /, /index.html                 landing page with links for a normal and a test user
 *   GET  /productpage                   the book page (title "Simple Bookstore App")
 *   POST /login  (form: username)       signed session cookie, 302 back to the Referer
 *   GET  /logout                        clears the session, 302 back to the Referer
 *   GET  /api/v1/products               the product list
 *   GET  /api/v1/products/<id>          details' answer for <id>
 *   GET  /api/v1/products/<id>/reviews  reviews' answer for <id>
 *   GET  /api/v1/products/<id>/ratings  ratings' answer for <id>
 *   GET  /health                        "Product page is healthy"
 *   GET  /metrics                       Prometheus counters
 *   GET  /static/...                    stylesheet
 *
 * Every outbound call carries the propagated trace headers and, when someone is signed in, `end-user: <name>`
 * from the session (an inbound `end-user` is never passed on).
 *
 * Env: PORT (9080), POD_NAME/HOSTNAME, HTTP_PROXY, SESSION_SECRET (a random key per process when unset; set it
 * when replicas must accept each other's cookies), DETAILS_HOSTNAME, DETAILS_SERVICE_PORT, REVIEWS_HOSTNAME,
 * REVIEWS_SERVICE_PORT, RATINGS_HOSTNAME, RATINGS_SERVICE_PORT, SERVICES_DOMAIN.
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto'
import type * as http from 'node:http'
import {
  Counter,
  callUpstream,
  type Endpoint,
  forwardHeaders,
  PROMETHEUS_CONTENT_TYPE,
  readBody,
  redirect,
  sendJson,
  sendText,
  serviceEndpoint,
  startService,
} from './common.js'

const version = process.env.SERVICE_VERSION?.trim() || 'v1'

const PRODUCTS = [
  {
    id: 0,
    title: 'The Comedy of Errors',
    descriptionHtml:
      '<a href="https://en.wikipedia.org/wiki/The_Comedy_of_Errors">Wikipedia Summary</a>: ' +
      "The Comedy of Errors is one of <b>William Shakespeare's</b> early plays. " +
      'It is the shortest of his comedies and one of the most farcical: two pairs of identical twins, ' +
      'separated at birth, end up in the same town on the same day, and much of the fun comes from slapstick, ' +
      'mistaken identity, puns and word play.',
  },
] as const

const UNAVAILABLE = {
  details: 'Sorry, product details are currently unavailable for this book.',
  reviews: 'Sorry, product reviews are currently unavailable for this book.',
  ratings: 'Sorry, product ratings are currently unavailable for this book.',
} as const
type Backend = keyof typeof UNAVAILABLE

/** Per backend: where it is, how long one attempt may take and how many attempts a call makes. */
const BACKENDS: Record<Backend, { ep: Endpoint; timeoutMs: number; attempts: number }> = {
  details: { ep: serviceEndpoint('details'), timeoutMs: 3000, attempts: 1 },
  reviews: { ep: serviceEndpoint('reviews'), timeoutMs: 3000, attempts: 2 },
  ratings: { ep: serviceEndpoint('ratings'), timeoutMs: 3000, attempts: 1 },
}

// ---------------------------------------------------------------------------------------------------------------
// Metrics

const requestsTotal = new Counter('productpage_requests_total', 'Requests served by productpage.', [
  'method',
  'route',
  'code',
])
const upstreamTotal = new Counter('productpage_upstream_requests_total', 'Calls from productpage to its backends.', [
  'destination_app',
  'response_code',
])
const loginsTotal = new Counter('productpage_logins_total', 'Successful sign-ins.')
const pageRendersTotal = new Counter('productpage_page_renders_total', 'Product pages rendered, by backend outcome.', [
  'details',
  'reviews',
])

function routeOf(pathname: string): string {
  if (/^\/api\/v1\/products\/[^/]+\/(reviews|ratings)$/.test(pathname)) {
    return pathname.replace(/^\/api\/v1\/products\/[^/]+/, '/api/v1/products/:id')
  }
  if (/^\/api\/v1\/products\/[^/]+$/.test(pathname)) return '/api/v1/products/:id'
  if (pathname.startsWith('/static/')) return '/static'
  const known = ['/', '/index.html', '/productpage', '/login', '/logout', '/health', '/metrics', '/api/v1/products']
  return known.includes(pathname) ? pathname : 'other'
}

// ---------------------------------------------------------------------------------------------------------------
// Backend calls

type Fetched = { ok: true; status: 200; body: unknown } | { ok: false; status: number; error: string }

/** GET `path` on a backend with its timeout and attempts; any non-200, error or timeout is a failure. */
async function fetchBackend(name: Backend, path: string, headers: Record<string, string>): Promise<Fetched> {
  const { ep, timeoutMs, attempts } = BACKENDS[name]
  let status = 500
  for (let attempt = 1; attempt <= attempts; attempt++) {
    try {
      const res = await callUpstream(ep, path, { headers, timeoutMs })
      upstreamTotal.inc({ destination_app: name, response_code: String(res.status) })
      status = res.status
      if (res.status === 200) {
        try {
          return { ok: true, status: 200, body: JSON.parse(res.body) }
        } catch {
          console.error(`productpage: ${name} sent a body that is not JSON`)
          status = 500
        }
      }
    } catch (err) {
      const timedOut = err instanceof Error && 'timedOut' in err && err.timedOut === true
      upstreamTotal.inc({ destination_app: name, response_code: timedOut ? 'timeout' : 'error' })
      console.error(`productpage: ${name} attempt ${attempt}/${attempts}: ${err instanceof Error ? err.message : err}`)
      status = 500
    }
  }
  return { ok: false, status, error: UNAVAILABLE[name] }
}

// ---------------------------------------------------------------------------------------------------------------
// Session: `session=<base64url JSON>.<base64url HMAC-SHA256>`

const sessionKey = process.env.SESSION_SECRET ? Buffer.from(process.env.SESSION_SECRET) : randomBytes(32)
const COOKIE = 'session'

function sign(payload: string): string {
  return createHmac('sha256', sessionKey).update(payload).digest('base64url')
}

function sessionCookie(user: string): string {
  const payload = Buffer.from(JSON.stringify({ user })).toString('base64url')
  return `${COOKIE}=${payload}.${sign(payload)}; Path=/; HttpOnly; SameSite=Lax`
}

const CLEAR_COOKIE = `${COOKIE}=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax`

function cookies(req: http.IncomingMessage): Map<string, string> {
  const out = new Map<string, string>()
  for (const part of (req.headers.cookie ?? '').split(';')) {
    const eq = part.indexOf('=')
    if (eq <= 0) continue
    const name = part.slice(0, eq).trim()
    if (!out.has(name)) out.set(name, part.slice(eq + 1).trim())
  }
  return out
}

/** The signed-in user, or null without a valid session cookie. */
function sessionUser(req: http.IncomingMessage): string | null {
  const value = cookies(req).get(COOKIE)
  if (!value) return null
  const dot = value.indexOf('.')
  if (dot <= 0) return null
  const payload = value.slice(0, dot)
  const given = Buffer.from(value.slice(dot + 1))
  const expected = Buffer.from(sign(payload))
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) return null
  try {
    const data: unknown = JSON.parse(Buffer.from(payload, 'base64url').toString())
    const user = typeof data === 'object' && data !== null ? (data as { user?: unknown }).user : undefined
    return typeof user === 'string' && user !== '' ? user : null
  } catch {
    return null
  }
}

/** Where login and logout send the browser back to. */
function backTo(req: http.IncomingMessage): string {
  const referer = req.headers.referer
  return referer && !/[\r\n]/.test(referer) ? referer : '/productpage'
}

// ---------------------------------------------------------------------------------------------------------------
// HTML

function esc(value: unknown): string {
  return String(value)
    .replace(/&/g, '&amp;')
    .replace(/</g, '&lt;')
    .replace(/>/g, '&gt;')
    .replace(/"/g, '&quot;')
    .replace(/'/g, '&#39;')
}

function obj(value: unknown): Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value) ? (value as Record<string, unknown>) : {}
}

function layout(body: string): string {
  return `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Simple Bookstore App</title>
<link rel="stylesheet" href="/static/css/bookinfo.css">
</head>
<body>
${body}
</body>
</html>
`
}

function navbar(user: string | null): string {
  const account =
    user === null
      ? `<form class="login" method="post" action="/login">
    <input type="text" name="username" placeholder="User name" aria-label="User name" required>
    <input type="password" name="passwd" placeholder="Password" aria-label="Password">
    <button type="submit">Sign in</button>
  </form>`
      : `<span class="user">Signed in as <b>${esc(user)}</b></span> <a class="logout" href="/logout">Sign out</a>`
  return `<nav class="navbar">
  <a class="brand" href="/">BookInfo Sample</a>
  <div class="account">${account}</div>
</nav>`
}

const DETAILS_COLUMNS = [
  ['ISBN-10', 'ISBN-10'],
  ['Publisher', 'publisher'],
  ['Pages', 'pages'],
  ['Type', 'type'],
  ['Language', 'language'],
] as const

function detailsHtml(result: Fetched): string {
  if (!result.ok) {
    return `<h4 class="error text-red-500">Error fetching product details</h4>
<p>${esc(result.error)}</p>`
  }
  const d = obj(result.body)
  const head = DETAILS_COLUMNS.map(([label]) => `<th>${esc(label)}</th>`).join('')
  const row = DETAILS_COLUMNS.map(([, key]) => `<td>${esc(d[key] ?? '')}</td>`).join('')
  return `<h4>Book Details</h4>
<table class="details">
<thead><tr>${head}</tr></thead>
<tbody><tr>${row}</tr></tbody>
</table>`
}

function starsHtml(stars: number, color: string): string {
  const n = Math.max(0, Math.min(5, Math.round(stars)))
  const cls = `text-${color.replace(/[^A-Za-z0-9-]/g, '')}-500`
  const full = `<span class="star ${cls}" aria-hidden="true">&#9733;</span>`.repeat(n)
  const empty = `<span class="star star-empty ${cls}" aria-hidden="true">&#9734;</span>`.repeat(5 - n)
  return `<div class="rating" title="${n} of 5 stars">${full}${empty}</div>`
}

function reviewsHtml(result: Fetched): string {
  if (!result.ok) {
    return `<h4 class="error text-red-500">Error fetching product reviews</h4>
<p>${esc(result.error)}</p>`
  }
  const data = obj(result.body)
  const list = Array.isArray(data.reviews) ? data.reviews.map(obj) : []
  const items = list.map((review) => {
    const rating = obj(review.rating)
    let ratingHtml = ''
    if (typeof rating.stars === 'number') ratingHtml = starsHtml(rating.stars, String(rating.color ?? 'black'))
    else if (rating.error !== undefined) ratingHtml = `<p class="rating-error text-red-500">${esc(rating.error)}</p>`
    return `<blockquote class="review">
<p>${esc(review.text ?? '')}</p>
<small>${esc(review.reviewer ?? '')}</small>
${ratingHtml}
</blockquote>`
  })
  const cluster =
    data.clustername !== undefined && data.clustername !== null && data.clustername !== 'null'
      ? ` on cluster ${esc(data.clustername)}`
      : ''
  return `<h4>Book Reviews</h4>
${items.join('\n')}
<p class="served-by">Reviews served by: ${esc(data.podname ?? 'unknown')}${cluster}</p>`
}

function productPage(user: string | null, details: Fetched, reviews: Fetched): string {
  const product = PRODUCTS[0]
  return layout(`${navbar(user)}
<main>
<header class="product">
<h1>${esc(product.title)}</h1>
<p class="summary">${product.descriptionHtml}</p>
</header>
<div class="columns">
<section class="details-column">
${detailsHtml(details)}
</section>
<section class="reviews-column">
${reviewsHtml(reviews)}
</section>
</div>
</main>`)
}

function landingPage(): string {
  const services = [
    ['productpage', 'renders this page; calls details and reviews'],
    ['details', 'book information'],
    ['reviews', 'book reviews; v2 and v3 ask ratings for stars'],
    ['ratings', 'star ratings for each review'],
  ]
  const rows = services.map(([name, what]) => `<tr><td>${esc(name)}</td><td>${esc(what)}</td></tr>`).join('\n')
  return layout(`${navbar(null)}
<main>
<header class="product">
<h1>Hello! This is a simple bookstore application.</h1>
<p>It is made of four small services, each running next to a Loom sidecar. Open the product page as:</p>
<p class="links">
<a class="button" href="/productpage?u=normal">Normal user</a>
<a class="button" href="/productpage?u=test">Test user</a>
</p>
</header>
<table class="services">
<thead><tr><th>Service</th><th>Role</th></tr></thead>
<tbody>
${rows}
</tbody>
</table>
</main>`)
}

const STYLESHEET = `body { font-family: system-ui, sans-serif; margin: 0; color: #1f2937; background: #f9fafb; }
.navbar { display: flex; justify-content: space-between; align-items: center; padding: 0.75rem 1.5rem;
  background: #1f2937; color: #f9fafb; }
.navbar a { color: #f9fafb; text-decoration: none; }
.brand { font-weight: 600; font-size: 1.2rem; }
.login input { padding: 0.25rem; }
main { max-width: 64rem; margin: 0 auto; padding: 1.5rem; }
.columns { display: flex; gap: 2rem; flex-wrap: wrap; }
.columns > section { flex: 1 1 20rem; }
table { border-collapse: collapse; }
th, td { border: 1px solid #d1d5db; padding: 0.4rem 0.7rem; text-align: left; }
blockquote.review { margin: 0 0 1rem; padding: 0.5rem 1rem; border-left: 4px solid #d1d5db; background: #fff; }
blockquote.review small { color: #6b7280; }
.star { font-size: 1.25rem; }
.served-by { color: #6b7280; font-size: 0.9rem; }
.button { display: inline-block; padding: 0.5rem 1rem; margin-right: 0.5rem; background: #2563eb; color: #fff;
  border-radius: 0.25rem; text-decoration: none; }
.text-black-500 { color: #000; }
.text-red-500 { color: #ef4444; }
.text-blue-500 { color: #3b82f6; }
.text-green-500 { color: #22c55e; }
.text-yellow-500 { color: #eab308; }
.text-orange-500 { color: #f97316; }
.text-purple-500 { color: #a855f7; }
.text-gray-500 { color: #6b7280; }
`

const STATIC: Record<string, { type: string; body: string }> = {
  '/static/css/bookinfo.css': { type: 'text/css; charset=utf-8', body: STYLESHEET },
}

// ---------------------------------------------------------------------------------------------------------------
// Routes

const HTML = 'text/html; charset=utf-8'

async function showProductPage(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
  const user = sessionUser(req)
  const headers = forwardHeaders(req, user)
  const id = PRODUCTS[0].id
  const details = await fetchBackend('details', `/details/${id}`, headers)
  const reviews = await fetchBackend('reviews', `/reviews/${id}`, headers)
  pageRendersTotal.inc({ details: details.ok ? 'ok' : 'error', reviews: reviews.ok ? 'ok' : 'error' })
  sendText(res, 200, productPage(user, details, reviews), HTML, { 'cache-control': 'no-store' })
}

async function login(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
  const form = new URLSearchParams((await readBody(req, 16 * 1024)).toString())
  const user = (form.get('username') ?? '').replace(/[\x00-\x1f\x7f]/g, '').trim()
  if (user === '' || user.length > 256) return redirect(res, backTo(req))
  loginsTotal.inc()
  redirect(res, backTo(req), { 'set-cookie': sessionCookie(user) })
}

async function apiProxy(
  req: http.IncomingMessage,
  res: http.ServerResponse,
  backend: Backend,
  path: string,
): Promise<void> {
  const result = await fetchBackend(backend, path, forwardHeaders(req, sessionUser(req)))
  if (result.ok) sendJson(res, 200, result.body)
  else sendJson(res, result.status, { error: result.error })
}

async function handle(req: http.IncomingMessage, res: http.ServerResponse, url: URL): Promise<void> {
  const path = url.pathname
  const method = req.method ?? 'GET'
  if (path === '/login') {
    if (method !== 'POST') return sendText(res, 405, 'Method Not Allowed', undefined, { allow: 'POST' })
    return login(req, res)
  }
  if (method !== 'GET' && method !== 'HEAD') return sendText(res, 405, 'Method Not Allowed')

  if (path === '/' || path === '/index.html') return sendText(res, 200, landingPage(), HTML)
  if (path === '/productpage') return showProductPage(req, res)
  if (path === '/logout') return redirect(res, backTo(req), { 'set-cookie': CLEAR_COOKIE })
  if (path === '/health') return sendText(res, 200, 'Product page is healthy')
  if (path === '/metrics') {
    const text = [requestsTotal, upstreamTotal, loginsTotal, pageRendersTotal].map((c) => c.render()).join('')
    return sendText(res, 200, text, PROMETHEUS_CONTENT_TYPE)
  }
  const asset = STATIC[path]
  if (asset !== undefined) return sendText(res, 200, asset.body, asset.type, { 'cache-control': 'max-age=3600' })

  if (path === '/api/v1/products') return sendJson(res, 200, PRODUCTS)
  const m = /^\/api\/v1\/products\/([^/]+)(?:\/(reviews|ratings))?$/.exec(path)
  if (m) {
    const id = m[1]! // kept percent-encoded as it came, so it stays one path segment upstream
    const sub = m[2]
    if (sub === 'reviews') return apiProxy(req, res, 'reviews', `/reviews/${id}`)
    if (sub === 'ratings') return apiProxy(req, res, 'ratings', `/ratings/${id}`)
    return apiProxy(req, res, 'details', `/details/${id}`)
  }
  sendText(res, 404, 'Not Found')
}

startService({
  app: 'productpage',
  version,
  handler: handle,
  onRequest: (req, url, status) =>
    requestsTotal.inc({ method: req.method ?? '', route: routeOf(url.pathname), code: String(status) }),
})
