/**
 * The Bookinfo demo services as real processes (dist/examples/bookinfo/*.js), wired straight to each other through
 * *_HOSTNAME / *_SERVICE_PORT, plus fakes for hanging or failing backends and a small HTTP proxy standing in for
 * the sidecar (HTTP_PROXY).
 */
import assert from 'node:assert/strict'
import { type ChildProcess, spawn } from 'node:child_process'
import { existsSync } from 'node:fs'
import * as http from 'node:http'
import * as net from 'node:net'
import { after, before, describe, test } from 'node:test'
import { fileURLToPath } from 'node:url'
import { type Backend, startBackend } from './helpers/servers.js'

const DIR = fileURLToPath(new URL('../examples/bookinfo/', import.meta.url))

interface Reply {
  status: number
  headers: http.IncomingHttpHeaders
  body: string
}

function get(
  port: number,
  path: string,
  headers: Record<string, string> = {},
  method = 'GET',
  body?: string,
): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path, method, headers, agent: false }, (res) => {
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('end', () =>
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString() }),
      )
      res.on('error', reject)
    })
    req.on('error', reject)
    req.end(body)
  })
}

async function timed(p: Promise<Reply>): Promise<Reply & { ms: number }> {
  const t0 = Date.now()
  const r = await p
  return { ...r, ms: Date.now() - t0 }
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer()
    s.on('error', reject)
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as net.AddressInfo
      s.close(() => resolve(port))
    })
  })
}

async function waitFor(what: string, check: () => boolean, ms = 3000): Promise<void> {
  const deadline = Date.now() + ms
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 20))
  }
}

interface Service {
  name: string
  port: number
  proc: ChildProcess
  exited: Promise<number | null>
  log(): string
  /** The request log line that carries `x-request-id="<id>"`. */
  line(requestId: string): Promise<string>
}

const running: Service[] = []
process.on('exit', () => {
  for (const s of running) s.proc.kill('SIGKILL')
})

async function start(program: string, name: string, env: Record<string, string> = {}): Promise<Service> {
  const file = `${DIR}${program}.js`
  assert.ok(existsSync(file), `${file} is missing: build first`)
  const port = await freePort()
  // a clean environment: no HTTP_PROXY, HOSTNAME or *_HOSTNAME from the outside
  const proc = spawn(process.execPath, [file], {
    env: { PATH: process.env.PATH ?? '', PORT: String(port), POD_NAME: name, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let out = ''
  proc.stdout!.on('data', (d: Buffer) => (out += d.toString()))
  proc.stderr!.on('data', (d: Buffer) => (out += d.toString()))
  const exited = new Promise<number | null>((resolve) => proc.on('exit', (code) => resolve(code)))
  const svc: Service = {
    name,
    port,
    proc,
    exited,
    log: () => out,
    async line(id) {
      const needle = `x-request-id="${id}"`
      await waitFor(`${name} to log ${needle}`, () => out.includes(needle))
      return out.split('\n').find((l) => l.includes(needle))!
    },
  }
  running.push(svc)
  let dead = false
  void exited.then(() => (dead = true))
  await waitFor(`${name} to listen`, () => dead || out.includes(`listening on 127.0.0.1:${port}`), 5000)
  assert.ok(!dead, `${name} exited at start:\n${out}`)
  return svc
}

async function stop(s: Service): Promise<number | null> {
  if (s.proc.exitCode === null && s.proc.signalCode === null) s.proc.kill('SIGTERM')
  const timer = setTimeout(() => s.proc.kill('SIGKILL'), 3000)
  const code = await s.exited
  clearTimeout(timer)
  return code
}

const to = (prefix: string, s: Service | Backend | number) => ({
  [`${prefix}_HOSTNAME`]: '127.0.0.1',
  [`${prefix}_SERVICE_PORT`]: String(typeof s === 'number' ? s : s.port),
})

const DETAILS_JSON =
  '{"id":0,"author":"William Shakespeare","year":1595,"type":"paperback","pages":200,"publisher":"PublisherA",' +
  '"language":"English","ISBN-10":"1234567890","ISBN-13":"123-1234567890"}'
const TEXT1 = 'An extremely entertaining play by Shakespeare. The slapstick humour is refreshing!'
const TEXT2 =
  'Absolutely fun and entertaining. The play lacks thematic depth when compared to other plays by Shakespeare.'
const DETAILS_DOWN = 'Sorry, product details are currently unavailable for this book.'
const REVIEWS_DOWN = 'Sorry, product reviews are currently unavailable for this book.'
const RATINGS_DOWN = 'Ratings service is currently unavailable'

const VOLUMES = {
  items: [
    {
      volumeInfo: {
        title: 'The Comedy of Errors',
        authors: ['William Shakespeare'],
        publisher: 'Dover Publications',
        publishedDate: '2002-07-01',
        industryIdentifiers: [
          { type: 'ISBN_13', identifier: '9780486424613' },
          { type: 'ISBN_10', identifier: '0486424618' },
        ],
        pageCount: 80,
        printType: 'BOOK',
        language: 'en',
      },
    },
  ],
}

const fullStars = (html: string, color: string) => html.split(`class="star text-${color}-500"`).length - 1
const emptyStars = (html: string, color: string) => html.split(`class="star star-empty text-${color}-500"`).length - 1

describe('bookinfo services', () => {
  let ratings: Service
  let ratingsFaulty: Service
  let ratingsV2: Service
  let details: Service
  let detailsV2: Service
  let reviewsV1: Service
  let reviewsV2: Service
  let reviewsV3: Service
  let reviewsDb: Service
  let reviewsSlow: Service
  let pp1: Service
  let pp2: Service
  let pp3: Service
  let ppDown: Service
  let ppHang: Service
  let ppSlowReviews: Service
  let ppProxy: Service
  /** ratings that never answers /ratings/0 and answers /ratings/1 at once */
  let fakeRatings: Backend
  /** never answers */
  let hanging: Backend
  /** always 503 */
  let failing: Backend
  let proxy: Backend
  let closedPort: number
  // slow exchanges, started early so they run alongside the other tests
  let hangPage: Promise<Reply & { ms: number }>
  let slowReviewsPage: Promise<Reply & { ms: number }>
  let slowRatings: Promise<Reply & { ms: number }>

  before(async () => {
    closedPort = await freePort()
    fakeRatings = await startBackend((req, res) => {
      if (req.url === '/ratings/0') return // hang
      res.setHeader('content-type', 'application/json')
      res.end(JSON.stringify({ id: 1, ratings: { Reviewer1: 3, Reviewer2: 1 } }))
    })
    hanging = await startBackend(() => {})
    failing = await startBackend((_req, res) => {
      res.statusCode = 503
      res.end('no healthy upstream')
    })
    ;[ratings, ratingsFaulty, ratingsV2, details] = await Promise.all([
      start('ratings', 'ratings-v1-test'),
      start('ratings', 'ratings-faulty-test', { SERVICE_VERSION: 'v-faulty' }),
      start('ratings', 'ratings-v2-test', { SERVICE_VERSION: 'v2' }),
      start('details', 'details-v1-test'),
    ])
    proxy = await startBackend((req, res, body) => {
      let target: URL
      try {
        target = new URL(req.url ?? '')
      } catch {
        res.statusCode = 400
        res.end('origin-form request sent to the proxy')
        return
      }
      if (target.hostname === 'www.googleapis.com') {
        res.setHeader('content-type', 'application/json')
        res.end(JSON.stringify(VOLUMES))
        return
      }
      const ports: Record<string, number> = { details: details.port, reviews: reviewsV2.port, ratings: ratings.port }
      const port = ports[target.hostname]
      if (port === undefined) {
        res.statusCode = 502
        res.end()
        return
      }
      const path = target.pathname + target.search
      const up = http.request({ host: '127.0.0.1', port, path, method: req.method, headers: req.headers }, (u) => {
        res.writeHead(u.statusCode ?? 502, u.headers)
        u.pipe(res)
      })
      up.on('error', () => {
        res.statusCode = 502
        res.end()
      })
      up.end(body)
    })
    const proxyUrl = `http://127.0.0.1:${proxy.port}`
    ;[reviewsV1, reviewsV2, reviewsV3, reviewsDb, reviewsSlow, detailsV2] = await Promise.all([
      start('reviews', 'reviews-v1-test', { ...to('RATINGS', closedPort) }),
      start('reviews', 'reviews-v2-test', { ENABLE_RATINGS: 'true', STAR_COLOR: 'black', ...to('RATINGS', ratings) }),
      start('reviews', 'reviews-v3-test', { ENABLE_RATINGS: 'true', STAR_COLOR: 'red', ...to('RATINGS', ratings) }),
      start('reviews', 'reviews-db-test', { ENABLE_RATINGS: 'true', STAR_COLOR: 'black', ...to('RATINGS', ratingsV2) }),
      start('reviews', 'reviews-slow-test', {
        ENABLE_RATINGS: 'true',
        STAR_COLOR: 'red',
        ...to('RATINGS', fakeRatings),
      }),
      start('details', 'details-v2-test', {
        ENABLE_EXTERNAL_BOOK_SERVICE: 'true',
        DO_NOT_ENCRYPT: 'true',
        http_proxy: proxyUrl,
      }),
    ])
    ;[pp1, pp2, pp3, ppDown, ppHang, ppSlowReviews, ppProxy] = await Promise.all([
      start('productpage', 'pp-1', {
        ...to('DETAILS', details),
        ...to('REVIEWS', reviewsV1),
        ...to('RATINGS', ratings),
      }),
      start('productpage', 'pp-2', {
        ...to('DETAILS', details),
        ...to('REVIEWS', reviewsV2),
        ...to('RATINGS', ratings),
      }),
      start('productpage', 'pp-3', { ...to('DETAILS', details), ...to('REVIEWS', reviewsV3) }),
      start('productpage', 'pp-down', {
        ...to('DETAILS', closedPort),
        ...to('REVIEWS', closedPort),
        ...to('RATINGS', closedPort),
      }),
      start('productpage', 'pp-hang', { ...to('DETAILS', hanging), ...to('REVIEWS', failing) }),
      start('productpage', 'pp-slow-reviews', { ...to('DETAILS', details), ...to('REVIEWS', hanging) }),
      start('productpage', 'pp-proxy', { HTTP_PROXY: proxyUrl }),
    ])
    hangPage = timed(get(ppHang.port, '/productpage'))
    slowReviewsPage = timed(get(ppSlowReviews.port, '/productpage'))
    slowRatings = timed(get(reviewsSlow.port, '/reviews/0'))
    for (const p of [hangPage, slowReviewsPage, slowRatings]) p.catch(() => {})
  })

  after(async () => {
    await Promise.all(running.map(stop))
    await Promise.all([fakeRatings, hanging, failing, proxy].filter((b) => b !== undefined).map((b) => b.close()))
  })

  test('/health of each service', async () => {
    assert.deepEqual(await get(pp1.port, '/health').then((r) => [r.status, r.body]), [200, 'Product page is healthy'])
    assert.equal((await get(details.port, '/health')).body, '{"status":"Details is healthy"}')
    assert.equal((await get(reviewsV2.port, '/health')).body, '{"status": "Reviews is healthy"}')
    assert.equal((await get(ratings.port, '/health')).body, '{"status":"Ratings is healthy"}')
    assert.equal((await get(ratingsV2.port, '/health')).status, 200)
  })

  test('details: exact JSON, 400 for a non-numeric id', async () => {
    const r = await get(details.port, '/details/0')
    assert.equal(r.status, 200)
    assert.equal(r.headers['content-type'], 'application/json')
    assert.equal(r.body, DETAILS_JSON)
    assert.equal(JSON.parse((await get(details.port, '/details/7')).body).id, 7)
    const bad = await get(details.port, '/details/abc')
    assert.deepEqual([bad.status, JSON.parse(bad.body)], [400, { error: 'please provide numeric product id' }])
  })

  test('details v2 asks the book service over plain HTTP through the proxy', async () => {
    const r = await get(detailsV2.port, '/details/0')
    assert.equal(r.status, 200)
    assert.deepEqual(JSON.parse(r.body), {
      id: 0,
      author: 'William Shakespeare',
      year: 2002,
      type: 'paperback',
      pages: 80,
      publisher: 'Dover Publications',
      language: 'English',
      'ISBN-10': '0486424618',
      'ISBN-13': '9780486424613',
    })
    const seen = proxy.requests.find((q) => q.url.includes('googleapis'))
    assert.ok(seen)
    assert.equal(seen.url, 'http://www.googleapis.com/books/v1/volumes?q=isbn:0486424618')
    assert.equal(seen.headers.host, 'www.googleapis.com')
  })

  test('ratings: exact JSON, 400 for a non-numeric id, POST stores, variants', async () => {
    assert.equal((await get(ratings.port, '/ratings/0')).body, '{"id":0,"ratings":{"Reviewer1":5,"Reviewer2":4}}')
    const bad = await get(ratings.port, '/ratings/abc')
    assert.deepEqual([bad.status, bad.body], [400, '{"error":"please provide numeric product ID"}'])

    const body = JSON.stringify({ Reviewer1: 1, Reviewer2: 2 })
    const posted = await get(ratings.port, '/ratings/9', { 'content-type': 'application/json' }, 'POST', body)
    assert.deepEqual([posted.status, posted.body], [200, '{"id":9,"ratings":{"Reviewer1":1,"Reviewer2":2}}'])
    assert.equal((await get(ratings.port, '/ratings/9')).body, '{"id":9,"ratings":{"Reviewer1":1,"Reviewer2":2}}')
    assert.equal((await get(ratings.port, '/ratings/9', {}, 'POST', '{nope')).status, 400)

    assert.equal((await get(ratingsV2.port, '/ratings/0')).status, 501)
    assert.equal((await get(ratingsV2.port, '/ratings/0', {}, 'POST', body)).status, 501)

    const codes = new Set<number>()
    for (let i = 0; i < 30; i++) {
      const r = await get(ratingsFaulty.port, '/ratings/0')
      codes.add(r.status)
      if (r.status === 503) assert.equal(r.body, '{"error":"Service unavailable"}')
    }
    assert.deepEqual([...codes].sort(), [200, 503], 'v-faulty answers 503 about half of the time')
  })

  test('reviews v1, v2, v3: rating key, colours, string id, podname', async () => {
    const v1 = JSON.parse((await get(reviewsV1.port, '/reviews/0')).body)
    assert.deepEqual(v1, {
      id: '0',
      podname: 'reviews-v1-test',
      clustername: 'null',
      reviews: [
        { reviewer: 'Reviewer1', text: TEXT1 },
        { reviewer: 'Reviewer2', text: TEXT2 },
      ],
    })
    const v2 = JSON.parse((await get(reviewsV2.port, '/reviews/0')).body)
    assert.deepEqual(
      v2.reviews.map((r: { rating: unknown }) => r.rating),
      [
        { stars: 5, color: 'black' },
        { stars: 4, color: 'black' },
      ],
    )
    const v3 = JSON.parse((await get(reviewsV3.port, '/reviews/0')).body)
    assert.equal(v3.podname, 'reviews-v3-test')
    assert.deepEqual(
      v3.reviews.map((r: { rating: unknown }) => r.rating),
      [
        { stars: 5, color: 'red' },
        { stars: 4, color: 'red' },
      ],
    )
  })

  test('reviews: ratings answering non-200 gives the rating error, still 200', async () => {
    const r = await get(reviewsDb.port, '/reviews/0')
    assert.equal(r.status, 200)
    for (const review of JSON.parse(r.body).reviews) assert.deepEqual(review.rating, { error: RATINGS_DOWN })
  })

  test('reviews forwards trace headers and end-user to ratings', async () => {
    const headers = { 'x-request-id': 'fwd-1', 'x-b3-traceid': 'abc123', 'end-user': 'jason', 'x-other': 'no' }
    const r = await get(reviewsSlow.port, '/reviews/1', headers)
    assert.deepEqual(
      JSON.parse(r.body).reviews.map((x: { rating: unknown }) => x.rating),
      [
        { stars: 3, color: 'red' },
        { stars: 1, color: 'red' },
      ],
    )
    const seen = fakeRatings.requests.find((q) => q.url === '/ratings/1')
    assert.ok(seen)
    assert.equal(seen.headers['x-request-id'], 'fwd-1')
    assert.equal(seen.headers['x-b3-traceid'], 'abc123')
    assert.equal(seen.headers['end-user'], 'jason')
    assert.equal(seen.headers['x-other'], undefined)
  })

  test('/productpage: title, details table, stars per reviews version', async () => {
    const page1 = await get(pp1.port, '/productpage')
    assert.equal(page1.status, 200)
    assert.match(page1.headers['content-type'] ?? '', /^text\/html/)
    const html1 = page1.body
    assert.match(html1, /<title>Simple Bookstore App<\/title>/)
    assert.match(html1, /<h1>The Comedy of Errors<\/h1>/)
    for (const th of ['ISBN-10', 'Publisher', 'Pages', 'Type', 'Language']) assert.ok(html1.includes(`<th>${th}</th>`))
    assert.ok(
      html1.includes('<td>1234567890</td><td>PublisherA</td><td>200</td><td>paperback</td><td>English</td>'),
      html1,
    )
    assert.ok(html1.includes(TEXT1) && html1.includes(TEXT2) && html1.includes('Reviewer2'))
    assert.ok(html1.includes('Reviews served by: reviews-v1-test'))
    assert.ok(!html1.includes('class="star'), 'v1: no stars')

    const html2 = (await get(pp2.port, '/productpage')).body
    assert.ok(html2.includes('Reviews served by: reviews-v2-test'))
    assert.equal(fullStars(html2, 'black'), 9)
    assert.equal(emptyStars(html2, 'black'), 1)
    assert.equal(fullStars(html2, 'red'), 0)

    const html3 = (await get(pp3.port, '/productpage')).body
    assert.ok(html3.includes('Reviews served by: reviews-v3-test'))
    assert.equal(fullStars(html3, 'red'), 9)
    assert.equal(emptyStars(html3, 'red'), 1)
    assert.equal(fullStars(html3, 'black'), 0)

    assert.ok(!html1.includes('Error fetching') && !html2.includes('Error fetching'))
    const landing = await get(pp1.port, '/')
    assert.ok(landing.body.includes('/productpage?u=normal') && landing.body.includes('/productpage?u=test'))
    const css = await get(pp1.port, '/static/css/bookinfo.css')
    assert.equal(css.status, 200)
    assert.ok(css.body.includes('.text-red-500'))
  })

  test('/productpage when details and reviews are down: 200 with the error texts', async () => {
    const r = await get(ppDown.port, '/productpage')
    assert.equal(r.status, 200)
    for (const text of [
      'Error fetching product details',
      DETAILS_DOWN,
      'Error fetching product reviews',
      REVIEWS_DOWN,
    ]) {
      assert.ok(r.body.includes(text), text)
    }
    assert.ok(r.body.includes('<title>Simple Bookstore App</title>'))
  })

  test('JSON API: products, details, reviews colour per version, ratings, failures', async () => {
    const list = JSON.parse((await get(pp1.port, '/api/v1/products')).body)
    assert.equal(list.length, 1)
    assert.deepEqual([list[0].id, list[0].title], [0, 'The Comedy of Errors'])
    assert.ok(list[0].descriptionHtml.startsWith('<a href='))
    assert.ok(
      list[0].descriptionHtml.includes("The Comedy of Errors is one of <b>William Shakespeare's</b> early plays."),
    )

    assert.deepEqual(JSON.parse((await get(pp1.port, '/api/v1/products/0')).body), JSON.parse(DETAILS_JSON))
    const color = async (s: Service) =>
      JSON.parse((await get(s.port, '/api/v1/products/0/reviews')).body).reviews.map(
        (r: { rating?: { color?: string } }) => r.rating?.color,
      )
    assert.deepEqual(await color(pp1), [undefined, undefined])
    assert.deepEqual(await color(pp2), ['black', 'black'])
    assert.deepEqual(await color(pp3), ['red', 'red'])
    assert.deepEqual(JSON.parse((await get(pp1.port, '/api/v1/products/0/ratings')).body), {
      id: 0,
      ratings: { Reviewer1: 5, Reviewer2: 4 },
    })

    const notNumeric = await get(pp1.port, '/api/v1/products/abc')
    assert.deepEqual([notNumeric.status, JSON.parse(notNumeric.body)], [400, { error: DETAILS_DOWN }])
    for (const [path, what] of [
      ['/api/v1/products/0', 'details'],
      ['/api/v1/products/0/reviews', 'reviews'],
      ['/api/v1/products/0/ratings', 'ratings'],
    ] as const) {
      const r = await get(ppDown.port, path)
      assert.equal(r.status, 500)
      assert.deepEqual(JSON.parse(r.body), { error: `Sorry, product ${what} are currently unavailable for this book.` })
    }
  })

  test('login: signed cookie, end-user on every outbound call; logout', async () => {
    // not signed in: an inbound end-user is not passed on
    await get(pp2.port, '/productpage', { 'end-user': 'mallory', 'x-request-id': 'anon-1' })
    assert.ok(!(await details.line('anon-1')).includes('end-user'))
    assert.ok(!(await reviewsV2.line('anon-1')).includes('end-user'))

    const login = await get(
      pp2.port,
      '/login',
      { 'content-type': 'application/x-www-form-urlencoded', referer: '/productpage' },
      'POST',
      'username=jason&passwd=x',
    )
    assert.equal(login.status, 302)
    assert.equal(login.headers.location, '/productpage')
    const setCookie = login.headers['set-cookie']?.[0] ?? ''
    assert.match(setCookie, /^session=[^;]+; Path=\/; HttpOnly/)
    const cookie = setCookie.split(';')[0]!

    const page = await get(pp2.port, '/productpage', { cookie, 'end-user': 'mallory', 'x-request-id': 'login-1' })
    assert.ok(page.body.includes('jason'))
    assert.ok(page.body.includes('/logout'))
    assert.match(await details.line('login-1'), /end-user="jason"/)
    assert.match(await reviewsV2.line('login-1'), /end-user="jason"/)
    assert.match(await ratings.line('login-1'), /end-user="jason"/, 'reviews passes end-user on to ratings')
    assert.ok(!details.log().includes('mallory') && !reviewsV2.log().includes('mallory'))

    await get(pp2.port, '/api/v1/products/0/reviews', { cookie, 'x-request-id': 'login-2' })
    assert.match(await reviewsV2.line('login-2'), /end-user="jason"/)

    // a forged cookie is no session
    const forged = `session=${Buffer.from('{"user":"admin"}').toString('base64url')}.${cookie.split('.')[1]}`
    await get(pp2.port, '/productpage', { cookie: forged, 'x-request-id': 'forged-1' })
    assert.ok(!(await details.line('forged-1')).includes('end-user'))
    // another productpage process has another key
    await get(pp1.port, '/productpage', { cookie, 'x-request-id': 'other-key-1' })
    assert.ok(!(await details.line('other-key-1')).includes('end-user'))

    const logout = await get(pp2.port, '/logout', { cookie, referer: 'http://bookinfo.local/productpage' })
    assert.equal(logout.status, 302)
    assert.equal(logout.headers.location, 'http://bookinfo.local/productpage')
    assert.match(logout.headers['set-cookie']?.[0] ?? '', /^session=; .*Max-Age=0/)
  })

  test('HTTP_PROXY: calls go to the proxy in absolute form with the service Host', async () => {
    const before = proxy.requests.length
    const page = await get(ppProxy.port, '/productpage', { 'x-request-id': 'proxy-1', 'user-agent': 'bookinfo-test' })
    assert.equal(page.status, 200)
    assert.ok(page.body.includes('<td>1234567890</td>'))
    assert.equal(fullStars(page.body, 'black'), 9)
    const seen = proxy.requests.slice(before)
    assert.deepEqual(
      seen.map((q) => [q.url, q.headers.host]),
      [
        ['http://details:9080/details/0', 'details:9080'],
        ['http://reviews:9080/reviews/0', 'reviews:9080'],
      ],
    )
    for (const q of seen) {
      assert.equal(q.headers['x-request-id'], 'proxy-1')
      assert.equal(q.headers['user-agent'], 'bookinfo-test')
    }
    const api = await get(ppProxy.port, '/api/v1/products/0/ratings')
    assert.equal(api.status, 200)
    assert.equal(proxy.requests.at(-1)?.url, 'http://ratings:9080/ratings/0')
  })

  test('/metrics: Prometheus counters', async () => {
    const r = await get(pp2.port, '/metrics')
    assert.equal(r.status, 200)
    assert.match(r.headers['content-type'] ?? '', /^text\/plain; version=0\.0\.4/)
    assert.match(r.body, /# TYPE productpage_requests_total counter/)
    assert.match(r.body, /productpage_requests_total\{method="GET",route="\/productpage",code="200"\} \d+/)
    assert.match(r.body, /productpage_upstream_requests_total\{destination_app="details",response_code="200"\} \d+/)
    assert.match(r.body, /productpage_logins_total [1-9]/)
  })

  test('timeouts: details 3 s once, reviews 3 s twice, ratings 2.5 s from v3', async () => {
    const hang = await hangPage
    assert.equal(hang.status, 200)
    assert.ok(hang.body.includes(DETAILS_DOWN) && hang.body.includes(REVIEWS_DOWN))
    assert.ok(hang.ms >= 2900 && hang.ms < 4500, `details timeout took ${hang.ms} ms`)
    assert.equal(hanging.requests.filter((q) => q.url === '/details/0').length, 1, 'details is not retried')
    assert.equal(failing.requests.filter((q) => q.url === '/reviews/0').length, 2, 'reviews gets a second attempt')

    const ratingsSlow = await slowRatings
    assert.equal(ratingsSlow.status, 200)
    assert.ok(ratingsSlow.ms >= 2400 && ratingsSlow.ms < 4000, `ratings timeout took ${ratingsSlow.ms} ms`)
    for (const review of JSON.parse(ratingsSlow.body).reviews) assert.deepEqual(review.rating, { error: RATINGS_DOWN })

    const slow = await slowReviewsPage
    assert.equal(slow.status, 200)
    assert.ok(slow.body.includes('<td>1234567890</td>') && slow.body.includes(REVIEWS_DOWN))
    assert.ok(slow.ms >= 5900 && slow.ms < 8000, `two reviews attempts took ${slow.ms} ms`)
    assert.equal(hanging.requests.filter((q) => q.url === '/reviews/0').length, 2)
  })

  test('SIGTERM: graceful exit with code 0', async () => {
    assert.equal(await stop(ppDown), 0)
    assert.match(ppDown.log(), /received SIGTERM/)
  })
})
