/**
 * Istio's security on the Bookinfo demo (`loom up` of examples/bookinfo/mesh, as `loom demo` runs it), end to end:
 *
 * - Istio's "Authorization for HTTP traffic" task, step by step with `loom apply -f`: allow-nothing, then the
 *   productpage, details, reviews and ratings viewers; the product page through the ingress gateway shows what
 *   Istio's docs show at each step, and deleting the policies restores it.
 * - The traffic between two sidecars is mutual TLS on the wire: a recording relay put between productpage's sidecar
 *   and details' sidecar sees TLS records only, never plain-text HTTP, and the page still renders through it.
 */
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { readState, type UpState } from '../src/runtime/up.js'
import { eventually } from './helpers/control.js'
import { ROOT, runLoom, writeTemp } from './helpers/proxy.js'
import { type RunningUp, startUp } from './helpers/up.js'
import { type Relay, startRelay, tlsRecords } from './helpers/wire.js'

const BOOKINFO = join(ROOT, 'examples', 'bookinfo', 'mesh')
const FIXTURES = join(ROOT, 'test', 'fixtures', 'istio')
const STEPS = ['allow-nothing', 'productpage-viewer', 'details-viewer', 'reviews-viewer', 'ratings-viewer'] as const
const policyFile = (step: (typeof STEPS)[number]) => join(FIXTURES, `authz-${step}.yaml`)

/** What the product page shows, section by section. */
interface View {
  status: number
  body: string
  details: 'shown' | 'error' | 'absent'
  reviews: 'shown' | 'error' | 'absent'
  /** the reviews' ratings: black or red stars (v2, v3), none (v1), or ratings' failure as reviews reports it */
  ratings: 'black' | 'red' | 'none' | 'unavailable'
}

function viewOf(status: number, body: string): View {
  const section = (name: string, title: string): View['details'] =>
    body.includes(`<h4>${title}</h4>`) ? 'shown' : body.includes(`Error fetching product ${name}`) ? 'error' : 'absent'
  const star = /class="star text-(black|red)-500"/.exec(body)?.[1] as 'black' | 'red' | undefined
  return {
    status,
    body,
    details: section('details', 'Book Details'),
    reviews: section('reviews', 'Book Reviews'),
    ratings: star ?? (body.includes('Ratings service is currently unavailable') ? 'unavailable' : 'none'),
  }
}

const show = (v: View) => `${v.status} details=${v.details} reviews=${v.reviews} ratings=${v.ratings}`

describe("Istio's security tasks on the Bookinfo demo", { timeout: 300_000 }, () => {
  let up: RunningUp
  let state: UpState
  let page: string
  const loom = (args: string[]) => runLoom([...args, '--server', state.api])
  const view = async (init?: RequestInit): Promise<View> => {
    const r = await fetch(page, init)
    return viewOf(r.status, await r.text())
  }
  /** The views of `n` page loads (reviews answers round robin from v1, v2 and v3). */
  const views = async (n: number): Promise<View[]> => {
    const out: View[] = []
    for (let i = 0; i < n; i++) out.push(await view())
    return out
  }
  const apply = async (file: string) => {
    const r = await loom(['apply', '-f', file])
    assert.equal(r.code, 0, r.stderr)
  }
  /**
   * Polls the page until `first` holds (by default `want`: a load that only the new policy can give), then checks
   * that `want` keeps holding over a dozen more loads.
   */
  const settles = async (want: (v: View) => boolean, what: string, first = want) => {
    let last: View | undefined
    await eventually(async () => first((last = await view())), 20_000, what).catch((e: Error) => {
      throw new Error(`${e.message} (last: ${last && show(last)})`)
    })
    for (const v of await views(12)) assert.ok(want(v), `${what}: ${show(v)}`)
  }
  /**
   * Loads the page until every one of `wanted` has been seen (reviews' versions answer in turn, not in a fixed
   * order), at most 40 times, each load satisfying `each`; returns what was seen.
   */
  const seeAll = async (wanted: string[], key: (v: View) => string, each: (v: View) => boolean) => {
    const seen = new Set<string>()
    for (let i = 0; i < 40 && !wanted.every((w) => seen.has(w)); i++) {
      const v = await view()
      assert.ok(each(v), show(v))
      seen.add(key(v))
    }
    for (const w of wanted) assert.ok(seen.has(w), `${w} not seen, only ${[...seen].join(', ')}`)
    return seen
  }
  /** Envoy's RBAC denial, as Istio's docs show it. */
  const denied = (v: View) => v.status === 403 && v.body.trim() === 'RBAC: access denied'

  before(async () => {
    up = await startUp(BOOKINFO, 120_000, ['--gateway-port', '0'])
    state = readState(up.dataDir)!
    page = `http://127.0.0.1:${Object.values(state.gateways[0]!.ports)[0]}/productpage`
    await eventually(
      async () => {
        const v = await view()
        return v.details === 'shown' && v.reviews === 'shown'
      },
      30_000,
      'the product page',
    )
  })
  after(async () => {
    await up?.stop()
  })

  describe('Authorization for HTTP traffic', () => {
    test("the policies' principals are the identities the demo's sidecars hold", async () => {
      // what each proxy's certificate says (its admin /certs), not what was asked for
      const certs = await runLoom(['certs', '--data-dir', up.dataDir, '-o', 'json'])
      assert.equal(certs.code, 0, certs.stderr)
      const rows = (JSON.parse(certs.stdout) as { proxies: { workload: string; spiffeId: string | null }[] }).proxies
      const idOf = (app: string) => {
        const names = state.workloads.filter((w) => w.labels.app === app).map((w) => w.name)
        const ids = new Set(rows.filter((r) => names.includes(r.workload)).map((r) => r.spiffeId))
        assert.equal(ids.size, 1, `${app}: ${[...ids]}`)
        return [...ids][0]!
      }
      const principals = (step: (typeof STEPS)[number]) =>
        [...readFileSync(policyFile(step), 'utf8').matchAll(/principals: \[([^\]]+)\]/g)].map((m) => `spiffe://${m[1]}`)
      assert.equal(idOf('productpage'), 'spiffe://cluster.local/ns/default/sa/bookinfo-productpage')
      assert.equal(idOf('reviews'), 'spiffe://cluster.local/ns/default/sa/bookinfo-reviews')
      assert.deepEqual(principals('details-viewer'), [idOf('productpage')])
      assert.deepEqual(principals('reviews-viewer'), [idOf('productpage')])
      assert.deepEqual(principals('ratings-viewer'), [idOf('reviews')])
      // the gateway's, as Istio's ingress gateway's
      assert.equal(
        rows.find((r) => r.workload === 'ingressgateway')?.spiffeId,
        'spiffe://cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account',
      )
    })

    test('before any policy: details, reviews and stars', async () => {
      await seeAll(
        ['black', 'red', 'none'],
        (v) => v.ratings,
        (v) => v.status === 200 && v.details === 'shown' && v.reviews === 'shown',
      )
    })

    test('allow-nothing: every request is refused with RBAC: access denied', async () => {
      await apply(policyFile('allow-nothing'))
      await settles(denied, '403 RBAC: access denied')
      // refused by productpage's sidecar: the gateway runs in istio-system, which the policy does not cover
      const gw = await runLoom(['proxy-config', 'listeners', 'ingressgateway', '--data-dir', up.dataDir, '-o', 'json'])
      assert.equal(gw.code, 0, gw.stderr)
      assert.doesNotMatch(gw.stdout, /rbac/i)
      const pp = await runLoom(['proxy-config', 'listeners', 'productpage-v1', '--data-dir', up.dataDir, '-o', 'json'])
      assert.match(pp.stdout, /envoy\.filters\.http\.rbac/)
    })

    test('productpage-viewer: the page loads, with errors fetching details and reviews', async () => {
      await apply(policyFile('productpage-viewer'))
      await settles((v) => v.status === 200 && v.details === 'error' && v.reviews === 'error', 'both errors')
      // GET only: a sign-in (POST) is still refused
      const login = await fetch(page.replace('/productpage', '/login'), {
        method: 'POST',
        body: 'username=jason&passwd=password',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        redirect: 'manual',
      })
      assert.ok(denied(viewOf(login.status, await login.text())), `sign-in: ${login.status}`)
    })

    test("details-viewer: productpage's identity may read details; reviews still fail", async () => {
      await apply(policyFile('details-viewer'))
      await settles((v) => v.status === 200 && v.details === 'shown' && v.reviews === 'error', 'details shown')
    })

    test('reviews-viewer: reviews shown, but Ratings service is currently unavailable', async () => {
      await apply(policyFile('reviews-viewer'))
      await settles(
        (v) =>
          v.status === 200 &&
          v.details === 'shown' &&
          v.reviews === 'shown' &&
          (v.ratings === 'unavailable' || v.ratings === 'none'),
        'reviews without ratings',
      )
      // v2 and v3 ask ratings and are refused; v1 shows no stars at all
      await seeAll(
        ['unavailable', 'none'],
        (v) => v.ratings,
        (v) => v.ratings === 'unavailable' || v.ratings === 'none',
      )
    })

    test("ratings-viewer: reviews' identity may read ratings: black and red stars", async () => {
      await apply(policyFile('ratings-viewer'))
      await settles(
        (v) => v.status === 200 && v.details === 'shown' && v.reviews === 'shown' && v.ratings !== 'unavailable',
        'ratings back',
        // reviews v1 shows no stars with or without the policy: wait for stars, which only the policy gives
        (v) => v.status === 200 && (v.ratings === 'black' || v.ratings === 'red'),
      )
      // v2's black stars and v3's red ones, and never ratings' failure
      await seeAll(
        ['black', 'red'],
        (v) => v.ratings,
        (v) => v.ratings !== 'unavailable',
      )
    })

    test('deleting the policies restores the page, sign-in included', async () => {
      // allow-nothing alone again first: the viewers were what let traffic through
      for (const step of STEPS.slice(1)) assert.equal((await loom(['delete', '-f', policyFile(step)])).code, 0)
      await settles(denied, 'allow-nothing alone')
      assert.equal((await loom(['delete', '-f', policyFile('allow-nothing')])).code, 0)
      await settles((v) => v.status === 200 && v.details === 'shown' && v.reviews === 'shown', 'the page back')
      const login = await fetch(page.replace('/productpage', '/login'), {
        method: 'POST',
        body: 'username=jason&passwd=password',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        redirect: 'manual',
      })
      assert.equal(login.status, 302)
    })
  })

  describe('mutual TLS between the sidecars, on the wire', () => {
    let relay: Relay
    const RELAY_ROUTE = `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: details
spec:
  host: details
  subsets:
  - name: relay
    labels:
      version: relay
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: details
spec:
  hosts:
  - details
  http:
  - route:
    - destination:
        host: details
        subset: relay
`
    const relayed = () => relay.up.reduce((n, b) => n + b.length, 0)

    before(async () => {
      // the relay forwards to details' sidecar's inbound port; registered as a details endpoint of its own (labelled
      // as having a sidecar, with details' service account), and productpage's calls to details routed to it
      const details = state.workloads.find((w) => w.name === 'details-v1')!
      relay = await startRelay(details.inbound['9080']!)
      // the route first: until the relay is registered, details' subset has no endpoint (the page waits for it);
      // registered first, the relay would be one of details' endpoints and get some calls before the route arrives
      await apply(writeTemp('details-relay.yaml', RELAY_ROUTE))
      const r = await fetch(`http://${state.api}/api/v1/workloads`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({
          name: 'details-relay',
          namespace: 'default',
          address: '127.0.0.1',
          ports: [{ name: 'http', number: relay.port, servicePort: 9080 }],
          labels: { app: 'details', version: 'relay', 'security.istio.io/tlsMode': 'istio' },
          serviceAccount: 'bookinfo-details',
          ttlSeconds: 600,
        }),
      })
      assert.equal(r.status, 200, await r.text())
    })
    after(async () => {
      await relay?.close()
    })

    test('productpage → details crosses the relay as TLS records only, and the page renders', async (t) => {
      // every page load from now on sends details' request through the relay
      await eventually(
        async () => {
          const before = relayed()
          const v = await view()
          return v.details === 'shown' && relayed() > before
        },
        20_000,
        'details through the relay',
      )
      for (let i = 0; i < 5; i++) {
        const before = relayed()
        const v = await view()
        assert.equal(v.details, 'shown', show(v))
        assert.equal(v.reviews, 'shown', show(v))
        assert.ok(relayed() > before, 'the request to details crossed the relay')
      }
      assert.ok(relay.connections.length > 0)
      for (const [i, c] of relay.connections.entries()) {
        for (const [dir, chunks] of [
          ['productpage → details', c.up],
          ['details → productpage', c.down],
        ] as const) {
          const bytes = Buffer.concat(chunks)
          if (bytes.length === 0) continue
          assert.deepEqual([...bytes.subarray(0, 2)], [0x16, 0x03], `${dir} #${i} opens with a TLS handshake record`)
          const rec = tlsRecords(bytes)
          assert.ok(
            rec.ok && rec.appData > 0,
            `${dir} #${i}: whole TLS records with application data ${JSON.stringify(rec)}`,
          )
          const text = bytes.toString('latin1')
          for (const plain of ['HTTP/1.1', 'GET /', '/details/0', 'x-request-id', 'ISBN', 'Shakespeare'])
            assert.ok(!text.includes(plain), `${dir} #${i}: "${plain}" not in the clear`)
        }
      }
      assert.ok(Buffer.concat(relay.connections[0]!.up).length > 0)
      t.diagnostic(
        `${relay.connections.length} connection(s) relayed: ${relayed()} bytes productpage → details, ` +
          `${relay.down.reduce((n, b) => n + b.length, 0)} back, all TLS records`,
      )
    })

    test('the relay is the only path: without it, details fails; without the route, the page is whole again', async () => {
      await relay.close()
      await settles((v) => v.status === 200 && v.details === 'error' && v.reviews === 'shown', 'details down')
      assert.equal((await loom(['delete', '-f', writeTemp('details-relay.yaml', RELAY_ROUTE)])).code, 0)
      const r = await fetch(`http://${state.api}/api/v1/workloads/default/details-relay`, { method: 'DELETE' })
      assert.equal(r.status, 200)
      await settles((v) => v.status === 200 && v.details === 'shown' && v.reviews === 'shown', 'the page back')
    })
  })
})
