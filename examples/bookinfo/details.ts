/**
 * Bookinfo `details`: the book's facts.
 *
 *   GET /details/<id>  → 200 {"id":0,"author":"William Shakespeare",...}; 400 for a non-numeric id
 *   GET /health        → {"status":"Details is healthy"}
 *
 * v2 (`ENABLE_EXTERNAL_BOOK_SERVICE=true`) looks the book up in the Google Books API instead. With
 * `DO_NOT_ENCRYPT=true` it asks over plain HTTP on port 80 (through the sidecar when `HTTP_PROXY` is set), leaving
 * the mesh to originate TLS; otherwise it calls HTTPS on port 443 itself. Needs the internet.
 *
 * Env: PORT (9080), SERVICE_VERSION (v1, or v2 when the external service is on), POD_NAME/HOSTNAME.
 */
import type * as http from 'node:http'
import { callUpstream, type Endpoint, envFlag, parseProductId, pathParam, sendJson, startService } from './common.js'

interface BookDetails {
  id: number
  author: string
  year: number
  type: string
  pages: number
  publisher: string
  language: string
  'ISBN-10': string
  'ISBN-13': string
}

const external = envFlag('ENABLE_EXTERNAL_BOOK_SERVICE')
const plainHttp = envFlag('DO_NOT_ENCRYPT')
const version = process.env.SERVICE_VERSION?.trim() || (external ? 'v2' : 'v1')

/** The ISBN the external lookup asks for, whatever the product id. */
const EXTERNAL_ISBN = '0486424618'
const EXTERNAL_TIMEOUT_MS = 5000

function localDetails(id: number): BookDetails {
  return {
    id,
    author: 'William Shakespeare',
    year: 1595,
    type: 'paperback',
    pages: 200,
    publisher: 'PublisherA',
    language: 'English',
    'ISBN-10': '1234567890',
    'ISBN-13': '123-1234567890',
  }
}

function record(value: unknown): Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value) ? (value as Record<string, unknown>) : {}
}

function str(value: unknown, fallback: string): string {
  return typeof value === 'string' ? value : fallback
}

/** Maps a Google Books `volumes` answer onto the details shape. */
function detailsFromVolumes(id: number, volumes: unknown): BookDetails | undefined {
  const items = record(volumes).items
  if (!Array.isArray(items) || items.length === 0) return undefined
  const info = record(record(items[0]).volumeInfo)
  const identifiers = Array.isArray(info.industryIdentifiers) ? info.industryIdentifiers.map(record) : []
  const isbn = (kind: string): string => str(identifiers.find((i) => i.type === kind)?.identifier, 'unknown')
  const authors = Array.isArray(info.authors) ? info.authors : []
  const year = Number.parseInt(str(info.publishedDate, ''), 10)
  return {
    id,
    author: str(authors[0], 'unknown'),
    year: Number.isNaN(year) ? 0 : year,
    type: info.printType === 'BOOK' ? 'paperback' : 'unknown',
    pages: typeof info.pageCount === 'number' ? info.pageCount : 0,
    publisher: str(info.publisher, 'unknown'),
    language: info.language === 'en' ? 'English' : str(info.language, 'unknown'),
    'ISBN-10': isbn('ISBN_10'),
    'ISBN-13': isbn('ISBN_13'),
  }
}

async function externalDetails(id: number): Promise<BookDetails | undefined> {
  const ep: Endpoint = plainHttp
    ? { scheme: 'http', host: 'www.googleapis.com', port: 80 }
    : { scheme: 'https', host: 'www.googleapis.com', port: 443 }
  const res = await callUpstream(ep, `/books/v1/volumes?q=isbn:${EXTERNAL_ISBN}`, { timeoutMs: EXTERNAL_TIMEOUT_MS })
  if (res.status !== 200) throw new Error(`book service answered ${res.status}`)
  return detailsFromVolumes(id, JSON.parse(res.body))
}

async function handle(req: http.IncomingMessage, res: http.ServerResponse, url: URL): Promise<void> {
  if (req.method !== 'GET' && req.method !== 'HEAD') return sendJson(res, 405, { error: 'method not allowed' })
  if (url.pathname === '/health') return sendJson(res, 200, { status: 'Details is healthy' })
  const raw = pathParam(url.pathname, '/details/')
  if (raw === undefined) return sendJson(res, 404, { error: 'not found' })
  const id = parseProductId(raw)
  if (id === undefined) return sendJson(res, 400, { error: 'please provide numeric product id' })
  if (!external) return sendJson(res, 200, localDetails(id))
  try {
    const details = await externalDetails(id)
    if (details === undefined) return sendJson(res, 404, { error: `no book found for isbn ${EXTERNAL_ISBN}` })
    return sendJson(res, 200, details)
  } catch (err) {
    console.error(`details: external book service: ${err instanceof Error ? err.message : err}`)
    return sendJson(res, 503, { error: 'the external book service is unavailable' })
  }
}

startService({ app: 'details', version, handler: handle })
