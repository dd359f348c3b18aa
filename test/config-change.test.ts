/**
 * Config changes under load: `loom control`, two `loom proxy` sidecars (one on state-of-the-world ADS, one on delta)
 * and real backends for several versions of two services, a steady stream of keep-alive requests through the
 * sidecars while DestinationRule + VirtualService pairs
 * are applied and deleted 50 times (new subsets, removed subsets, weight shifts, a VirtualService moving to another
 * host). Not one request may fail, and every response must come from a backend that the config allowed at some
 * moment while the request was in flight.
 */
import assert from 'node:assert/strict'
import * as http from 'node:http'
import { after, before, describe, test } from 'node:test'
import { type Control, eventually, type Proc, startControl, startSidecar } from './helpers/control.js'
import { type Backend, freePort, startBackend } from './helpers/servers.js'

const CYCLES = 50
/** requests per second, spread over a few keep-alive connections */
const RATE = 300
const CONNECTIONS = 6
const HOSTS = ['reviews', 'ratings'] as const
type Host = (typeof HOSTS)[number]
const VERSIONS: Record<Host, string[]> = { reviews: ['v1', 'v2', 'v3'], ratings: ['v1', 'v2'] }

/** What a config allows: per host, the backends (`<host>-<version>`) that may answer. */
type Allowed = Record<Host, Set<string>>

interface Step {
  /** YAML to apply, or the resources to delete */
  apply?: string
  remove?: [kind: string, name: string][]
  allowed: Allowed
}

const all = (h: Host) => new Set(VERSIONS[h].map((v) => `${h}-${v}`))
const only = (h: Host, versions: string[]) => new Set(versions.map((v) => `${h}-${v}`))
const DEFAULT: Allowed = { reviews: all('reviews'), ratings: all('ratings') }

function dr(host: Host, subsets: string[]): string {
  return `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: ${host}
spec:
  host: ${host}
  subsets:
${subsets.map((s) => `  - name: ${s}\n    labels:\n      version: ${s}`).join('\n')}
`
}

/** The VirtualService `rule`, for one host, splitting by weight over subsets. */
function vs(host: Host, split: [string, number][]): string {
  return `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: rule
spec:
  hosts:
  - ${host}
  http:
  - route:
${split.map(([s, w]) => `    - destination:\n        host: ${host}\n        subset: ${s}\n      weight: ${w}`).join('\n')}
`
}

const doc = (...parts: string[]) => parts.join('---\n')
const DELETE_ALL: [string, string][] = [
  ['VirtualService', 'rule'],
  ['DestinationRule', 'reviews'],
  ['DestinationRule', 'ratings'],
]

/** One apply/delete cycle of each kind; the test runs them in turn. */
const CYCLE_KINDS: Step[][] = [
  // new subsets (v1, v3) and a VirtualService to one of them, then both removed
  [
    {
      apply: doc(dr('reviews', ['v1', 'v3']), vs('reviews', [['v3', 100]])),
      allowed: { ...DEFAULT, reviews: only('reviews', ['v3']) },
    },
    { remove: DELETE_ALL, allowed: DEFAULT },
  ],
  // a weight shift between subsets, then a subset removed from the DestinationRule along with the route to it
  [
    {
      apply: doc(
        dr('reviews', ['v1', 'v2']),
        vs('reviews', [
          ['v1', 50],
          ['v2', 50],
        ]),
      ),
      allowed: { ...DEFAULT, reviews: only('reviews', ['v1', 'v2']) },
    },
    {
      apply: doc(
        dr('reviews', ['v1', 'v2']),
        vs('reviews', [
          ['v1', 0],
          ['v2', 100],
        ]),
      ),
      allowed: { ...DEFAULT, reviews: only('reviews', ['v2']) },
    },
    {
      apply: doc(dr('reviews', ['v2', 'v3']), vs('reviews', [['v3', 100]])),
      allowed: { ...DEFAULT, reviews: only('reviews', ['v3']) },
    },
    { remove: DELETE_ALL, allowed: DEFAULT },
  ],
  // the VirtualService moves to another host (whose subsets are new)
  [
    {
      apply: doc(dr('reviews', ['v2']), vs('reviews', [['v2', 100]])),
      allowed: { ...DEFAULT, reviews: only('reviews', ['v2']) },
    },
    {
      apply: doc(dr('reviews', ['v2']), dr('ratings', ['v1', 'v2']), vs('ratings', [['v2', 100]])),
      allowed: { ...DEFAULT, ratings: only('ratings', ['v2']) },
    },
    { remove: DELETE_ALL, allowed: DEFAULT },
  ],
]

interface Outcome {
  /** the sidecar: 0 SotW, 1 delta */
  via: number
  host: Host
  start: number
  end: number
  status: number
  body: string
  error?: string
}

/** A config in effect from some moment in [from, to0] (its apply was sent; it was synced) until its successor's. */
interface Epoch {
  allowed: Allowed
  sent: number
  synced: number
}

describe('config changes under load', () => {
  let cp: Control
  const sidecars: (Proc & { admin: string })[] = []
  const backends: Backend[] = []
  /** outbound ports of the sidecars: SotW, delta */
  const outs: number[] = []

  before(async () => {
    cp = await startControl()
    for (const host of HOSTS) {
      for (const v of VERSIONS[host]) {
        const b = await startBackend((_q, r) => r.end(`${host}-${v}`))
        backends.push(b)
        const res = await fetch(`http://${cp.api}/api/v1/workloads`, {
          method: 'POST',
          body: JSON.stringify({
            name: `${host}-${v}`,
            namespace: 'default',
            address: '127.0.0.1',
            ports: [{ name: 'http', number: b.port, servicePort: 9080 }],
            labels: { app: host, version: v },
            ttlSeconds: 600,
          }),
        })
        assert.equal(res.status, 200, await res.text())
      }
    }
    for (const protocol of ['sotw', 'delta']) {
      const out = await freePort()
      outs.push(out)
      sidecars.push(
        await startSidecar(cp.xds, { app: 'productpage', version: 'v1' }, out, ['--xds-protocol', protocol]),
      )
    }
  })
  after(async () => {
    await Promise.all(sidecars.map((s) => s.stop()))
    await cp?.stop()
    await Promise.all(backends.map((b) => b.close()))
  })

  async function api(method: string, path: string, body?: string): Promise<unknown> {
    const res = await fetch(`http://${cp.api}${path}`, { method, ...(body === undefined ? {} : { body }) })
    const text = await res.text()
    if (res.status !== 200 && res.status !== 404) throw new Error(`${method} ${path}: ${res.status} ${text}`)
    return JSON.parse(text)
  }

  /** Waits until the control plane has rebuilt from `revision` and the sidecars have ACKed everything they were sent. */
  async function synced(revision: number): Promise<void> {
    await eventually(
      async () => {
        const rebuilt = (await api('GET', '/debug/rebuild')) as { revision: number }
        if (rebuilt.revision < revision) return false
        const nodes = (await api('GET', '/api/v1/proxy-status')) as {
          protocol: string
          perType: { state: string }[]
        }[]
        return (
          nodes.length === 2 &&
          nodes
            .map((n) => n.protocol)
            .sort()
            .join() === 'delta,sotw' &&
          nodes.every((n) => n.perType.length >= 4 && n.perType.every((t) => t.state === 'SYNCED'))
        )
      },
      10_000,
      'the sidecars to sync',
    )
  }

  async function revision(): Promise<number> {
    return ((await api('GET', '/healthz')) as { revision: number }).revision
  }

  test(`${CYCLES} apply/delete cycles under ${RATE} req/s: no request fails, each reaches an allowed backend`, async () => {
    await eventually(
      async () => {
        for (const out of outs) for (const h of HOSTS) if ((await request(out, h)).status !== 200) return false
        return true
      },
      15_000,
      'the sidecars to route both services',
    )
    await synced(await revision())

    const agents = outs.map(() => new http.Agent({ keepAlive: true, maxSockets: CONNECTIONS }))
    const outcomes: Outcome[] = []
    let running = true
    function request(out: number, host: Host, ag: http.Agent | false = false): Promise<Outcome> {
      const start = performance.now()
      const via = outs.indexOf(out)
      return new Promise((resolve) => {
        const req = http.get(
          { host: '127.0.0.1', port: out, path: `/${host}/1`, headers: { host: `${host}:9080` }, agent: ag },
          (res) => {
            let body = ''
            res.setEncoding('latin1')
            res.on('data', (c: string) => (body += c))
            res.on('end', () =>
              resolve({ via, host, start, end: performance.now(), status: res.statusCode ?? 0, body }),
            )
            res.on('error', (e) =>
              resolve({ via, host, start, end: performance.now(), status: 0, body, error: e.message }),
            )
          },
        )
        req.setTimeout(5000, () => req.destroy(new Error('timeout')))
        req.on('error', (e) =>
          resolve({ via, host, start, end: performance.now(), status: 0, body: '', error: e.message }),
        )
      })
    }
    // CONNECTIONS loops in all, alternating between the sidecars; each loop alternates between the hosts
    const interval = (1000 * CONNECTIONS) / RATE
    const loops = Array.from({ length: CONNECTIONS }, async (_, i) => {
      const s = i % outs.length
      let n = Math.floor(i / outs.length)
      let next = performance.now()
      while (running) {
        outcomes.push(await request(outs[s]!, HOSTS[n++ % HOSTS.length]!, agents[s]!))
        next += interval
        const wait = next - performance.now()
        if (wait > 0) await new Promise((r) => setTimeout(r, wait))
        else next = performance.now()
      }
    })

    const epochs: Epoch[] = [{ allowed: DEFAULT, sent: 0, synced: 0 }]
    const syncMs: number[] = []
    const t0 = performance.now()
    try {
      for (let c = 0; c < CYCLES; c++) {
        for (const step of CYCLE_KINDS[c % CYCLE_KINDS.length]!) {
          const sent = performance.now()
          if (step.apply !== undefined) await api('POST', '/api/v1/apply', step.apply)
          // references first: the VirtualService goes before the DestinationRules that define its subsets
          for (const [kind, name] of step.remove ?? []) await api('DELETE', `/api/v1/resources/${kind}/default/${name}`)
          await synced(await revision())
          const done = performance.now()
          syncMs.push(done - sent)
          epochs.push({ allowed: step.allowed, sent, synced: done })
          // let traffic run on the settled config for a moment
          await new Promise((r) => setTimeout(r, 20))
        }
      }
    } finally {
      running = false
      await Promise.all(loops)
      for (const a of agents) a.destroy()
    }
    const elapsed = (performance.now() - t0) / 1000

    // a request may see any config in effect at some moment between its start and its end: config k is in effect
    // from (at the latest) its sync until (at the earliest) the next one's apply
    const allowedFor = (o: Outcome): Set<string> => {
      const s = new Set<string>()
      for (let k = 0; k < epochs.length; k++) {
        const from = epochs[k]!.sent
        const to = k + 1 < epochs.length ? epochs[k + 1]!.synced : Number.POSITIVE_INFINITY
        if (from <= o.end && to >= o.start) for (const b of epochs[k]!.allowed[o.host]) s.add(b)
      }
      return s
    }
    const failed = outcomes.filter((o) => o.status !== 200)
    const wrong = outcomes.filter((o) => o.status === 200 && !allowedFor(o).has(o.body))
    const sorted = [...syncMs].sort((a, b) => a - b)
    const summary = {
      requests: outcomes.length,
      rate: Math.round(outcomes.length / elapsed),
      failed: failed.length,
      wrong: wrong.length,
      changes: syncMs.length,
      syncP50Ms: Math.round(sorted[Math.floor(sorted.length / 2)] ?? 0),
      syncMaxMs: Math.round(sorted.at(-1) ?? 0),
      seconds: Math.round(elapsed * 10) / 10,
    }
    console.log(JSON.stringify(summary))
    const sample = (list: Outcome[]) =>
      list
        .slice(0, 5)
        .map(
          (o) => `${o.via === 0 ? 'sotw' : 'delta'} sidecar, ${o.host}: ${o.status} ${o.error ?? o.body.slice(0, 80)}`,
        )
        .join('\n')
    assert.ok(outcomes.length > CYCLES * 20, `only ${outcomes.length} requests`)
    assert.equal(failed.length, 0, `${failed.length} of ${outcomes.length} requests failed:\n${sample(failed)}`)
    assert.equal(wrong.length, 0, `${wrong.length} responses from a backend no config allowed:\n${sample(wrong)}`)
    // the sidecar took every request on its keep-alive connections, none was reset
    assert.equal(outcomes.filter((o) => o.error !== undefined).length, 0)
  })
})
