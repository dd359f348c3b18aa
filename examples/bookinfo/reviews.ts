/**
 * Bookinfo `reviews`: two reviews of the book, with star ratings from `ratings` in v2 and v3.
 *
 *   GET /reviews/<id>  → 200 {"id":"0","podname":...,"clustername":...,"reviews":[...]}  (id is a string here)
 *   GET /health        → {"status": "Reviews is healthy"}
 *
 * Versions are configured, as in the original, by environment:
 *   v1  ENABLE_RATINGS=false (default)       no `rating` key, ratings is never called
 *   v2  ENABLE_RATINGS=true STAR_COLOR=black calls GET http://ratings:9080/ratings/<id> with a 10 s timeout
 *   v3  ENABLE_RATINGS=true STAR_COLOR=red   the same call with a 2.5 s timeout
 * When ratings fails (non-200, error or timeout) each review gets
 * `"rating": {"error": "Ratings service is currently unavailable"}` and the answer is still 200.
 *
 * Env: PORT (9080), ENABLE_RATINGS, STAR_COLOR (black), SERVICE_VERSION (derived from the two when unset),
 * CLUSTER_NAME, POD_NAME/HOSTNAME, HTTP_PROXY, RATINGS_HOSTNAME, RATINGS_SERVICE_PORT, SERVICES_DOMAIN.
 */
import type * as http from 'node:http'
import {
  callUpstream,
  envFlag,
  forwardHeaders,
  parseProductId,
  pathParam,
  podName,
  sendJson,
  serviceEndpoint,
  startService,
} from './common.js'

const ratingsEnabled = envFlag('ENABLE_RATINGS')
const starColor = process.env.STAR_COLOR?.trim() || 'black'
const version = process.env.SERVICE_VERSION?.trim() || (!ratingsEnabled ? 'v1' : starColor === 'black' ? 'v2' : 'v3')
/** v2 (black stars) waits 10 s for ratings, v3 (any other colour) 2.5 s. */
const ratingsTimeoutMs = starColor === 'black' ? 10_000 : 2_500
const pod = podName('reviews', version)
// the original reports an unset cluster name as the string "null"
const clusterName = process.env.CLUSTER_NAME?.trim() || 'null'
const ratings = serviceEndpoint('ratings')

const REVIEWS = [
  {
    reviewer: 'Reviewer1',
    text: 'An extremely entertaining play by Shakespeare. The slapstick humour is refreshing!',
  },
  {
    reviewer: 'Reviewer2',
    text: 'Absolutely fun and entertaining. The play lacks thematic depth when compared to other plays by Shakespeare.',
  },
] as const

const UNAVAILABLE = 'Ratings service is currently unavailable'

type Rating = { stars: number; color: string } | { error: string }

/** Stars per reviewer from ratings, or undefined when ratings could not be used. */
async function fetchStars(id: string, req: http.IncomingMessage): Promise<Record<string, unknown> | undefined> {
  try {
    const res = await callUpstream(ratings, `/ratings/${encodeURIComponent(id)}`, {
      headers: forwardHeaders(req),
      timeoutMs: ratingsTimeoutMs,
    })
    if (res.status !== 200) {
      console.error(`reviews: ratings answered ${res.status}`)
      return undefined
    }
    const body: unknown = JSON.parse(res.body)
    const stars = typeof body === 'object' && body !== null ? (body as { ratings?: unknown }).ratings : undefined
    return typeof stars === 'object' && stars !== null ? (stars as Record<string, unknown>) : undefined
  } catch (err) {
    console.error(`reviews: ratings call failed: ${err instanceof Error ? err.message : err}`)
    return undefined
  }
}

async function handle(req: http.IncomingMessage, res: http.ServerResponse, url: URL): Promise<void> {
  if (req.method !== 'GET' && req.method !== 'HEAD') return sendJson(res, 405, { error: 'method not allowed' })
  if (url.pathname === '/health') return sendJson(res, 200, '{"status": "Reviews is healthy"}')
  const raw = pathParam(url.pathname, '/reviews/')
  if (raw === undefined) return sendJson(res, 404, { error: 'not found' })
  const numeric = parseProductId(raw)
  if (numeric === undefined) return sendJson(res, 400, { error: 'please provide numeric product id' })
  const id = String(numeric)

  const stars = ratingsEnabled ? await fetchStars(id, req) : undefined
  const reviews = REVIEWS.map((r) => {
    if (!ratingsEnabled) return { reviewer: r.reviewer, text: r.text }
    const n = stars?.[r.reviewer]
    const rating: Rating =
      typeof n === 'number' && Number.isFinite(n) ? { stars: n, color: starColor } : { error: UNAVAILABLE }
    return { reviewer: r.reviewer, text: r.text, rating }
  })
  sendJson(res, 200, { id, podname: pod, clustername: clusterName, reviews })
}

startService({ app: 'reviews', version, handler: handle })
