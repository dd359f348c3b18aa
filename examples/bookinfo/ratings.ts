/**
 * Bookinfo `ratings`: star ratings per reviewer.
 *
 *   GET  /ratings/<id>  → 200 {"id":0,"ratings":{"Reviewer1":5,"Reviewer2":4}}; 400 for a non-numeric id
 *   POST /ratings/<id>  → v1 keeps the JSON body in memory and answers {"id":<id>,"ratings":<body>}
 *   GET  /health        → {"status":"Ratings is healthy"}
 *
 * SERVICE_VERSION picks the behaviour:
 *   v1 (default)    as above
 *   v-faulty        GET /ratings answers 503 {"error":"Service unavailable"} half of the time
 *   v-delayed       GET /ratings waits 7 s before answering half of the time
 *   v-unavailable   GET /ratings flips between available and 503 every 60 s
 *   v2              would read MongoDB/MySQL; neither exists in the demo, so /ratings answers 501
 *
 * Env: PORT (9080), SERVICE_VERSION, POD_NAME/HOSTNAME.
 */
import type * as http from 'node:http'
import { parseProductId, pathParam, readBody, sendJson, startService } from './common.js'

const version = process.env.SERVICE_VERSION?.trim() || 'v1'
const KNOWN = ['v1', 'v2', 'v-faulty', 'v-delayed', 'v-unavailable']
if (!KNOWN.includes(version)) console.warn(`ratings: unknown SERVICE_VERSION ${version}, behaving like v1`)

const DELAY_MS = 7000
const FLIP_MS = 60_000

/** Ratings posted to v1, by product id. */
const posted = new Map<number, unknown>()

function ratingsFor(id: number): { id: number; ratings: unknown } {
  return { id, ratings: posted.get(id) ?? { Reviewer1: 5, Reviewer2: 4 } }
}

/** v-unavailable: available for the first 60 s, then unavailable for 60 s, and so on. */
const startedAt = Date.now()
function unavailableNow(): boolean {
  return Math.floor((Date.now() - startedAt) / FLIP_MS) % 2 === 1
}

function later(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms))
}

async function getRatings(res: http.ServerResponse, id: number): Promise<void> {
  if (version === 'v-faulty' && Math.random() < 0.5) return sendJson(res, 503, { error: 'Service unavailable' })
  if (version === 'v-unavailable' && unavailableNow()) return sendJson(res, 503, { error: 'Service unavailable' })
  if (version === 'v-delayed' && Math.random() < 0.5) {
    await later(DELAY_MS)
    if (res.destroyed) return
  }
  sendJson(res, 200, ratingsFor(id))
}

async function postRatings(req: http.IncomingMessage, res: http.ServerResponse, id: number): Promise<void> {
  const body = await readBody(req)
  let ratings: unknown
  try {
    ratings = JSON.parse(body.toString())
  } catch {
    return sendJson(res, 400, { error: 'please provide valid ratings JSON' })
  }
  if (typeof ratings !== 'object' || ratings === null) {
    return sendJson(res, 400, { error: 'please provide valid ratings JSON' })
  }
  posted.set(id, ratings)
  sendJson(res, 200, { id, ratings })
}

async function handle(req: http.IncomingMessage, res: http.ServerResponse, url: URL): Promise<void> {
  if (url.pathname === '/health') return sendJson(res, 200, { status: 'Ratings is healthy' })
  const raw = pathParam(url.pathname, '/ratings/')
  if (raw === undefined) return sendJson(res, 404, { error: 'not found' })
  const id = parseProductId(raw)
  if (id === undefined) return sendJson(res, 400, { error: 'please provide numeric product ID' })
  if (version === 'v2') {
    return sendJson(res, 501, { error: 'ratings v2 reads MongoDB or MySQL, which this demo does not provide' })
  }
  if (req.method === 'GET' || req.method === 'HEAD') return getRatings(res, id)
  if (req.method === 'POST') return postRatings(req, res, id)
  sendJson(res, 405, { error: 'method not allowed' })
}

startService({ app: 'ratings', version, handler: handle })
