import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { OnDemandHosts } from './on-demand.js'

describe('OnDemandHosts', () => {
  it('concurrent requests for one host share one subscription and one wait, ended by the answer', async () => {
    const subs: string[][] = []
    const od = new OnDemandHosts({ subscribe: (a) => subs.push([...a]), idleMs: 0 })
    let done = 0
    const waits = [od.request('outbound', 'Reviews:9080'), od.request('outbound', 'reviews:9080')].map((p) =>
      p.then(() => done++),
    )
    assert.deepEqual(subs, [['outbound/reviews:9080']])
    await new Promise((r) => setImmediate(r))
    assert.equal(done, 0, 'still waiting')
    od.answered(['outbound/other:80'])
    await new Promise((r) => setImmediate(r))
    assert.equal(done, 0, 'another alias does not end the wait')
    od.answered(['outbound/reviews:9080'])
    await Promise.all(waits)
    assert.equal(done, 2)
    assert.deepEqual(od.stats, { requested: 2, answered: 1, timed_out: 0 })
    // asked again later: no new subscription (the alias is held)
    const again = od.request('outbound', 'reviews:9080')
    assert.equal(subs.length, 1)
    od.answered(['outbound/reviews:9080'])
    await again
    od.close()
  })

  it('a wait ends after the bound when no answer comes', async () => {
    const od = new OnDemandHosts({ subscribe: () => {}, timeoutMs: 30, idleMs: 0 })
    const t0 = performance.now()
    // the bound's timer does not keep a process alive: this one does, for the test
    const alive = setTimeout(() => {}, 5000)
    await od.request('outbound', 'slow:80')
    clearTimeout(alive)
    assert.ok(performance.now() - t0 >= 25)
    assert.equal(od.stats.timed_out, 1)
    od.close()
  })

  it('an alias idle for idleMs is unsubscribed; one still waited for is kept', () => {
    const subs: string[][] = []
    const od = new OnDemandHosts({ subscribe: (a) => subs.push([...a]), idleMs: 1000 })
    void od.request('outbound', 'a:80')
    void od.request('outbound', 'b:80')
    od.answered(['outbound/a:80'])
    assert.deepEqual(od.sweep(performance.now() + 500), [])
    assert.deepEqual(od.sweep(performance.now() + 2000), ['outbound/a:80'])
    assert.deepEqual(subs.at(-1), ['outbound/b:80'])
    assert.deepEqual(od.aliases(), ['outbound/b:80'])
    od.close()
  })
})
