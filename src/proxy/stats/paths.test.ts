import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { MAX_PATH_LENGTH, PathStats } from './paths.js'

const C = 'outbound|9080||reviews.default.svc.cluster.local'

describe('busiest paths (Space-Saving)', () => {
  test('counts per cluster, method and path without query; failures and durations', () => {
    const p = new PathStats(10)
    p.record(C, 'GET', '/reviews/0?x=1', 200, 4)
    p.record(C, 'GET', '/reviews/0', 503, 6)
    p.record(C, 'POST', '/reviews/0', 200, 1)
    p.record('other', 'GET', '/reviews/0', 0, 1)
    const rows = p.toJson().paths.map((e) => [e.cluster, e.method, e.path, e.requests, e.failures, e.duration_ms_sum])
    assert.deepEqual(rows, [
      [C, 'GET', '/reviews/0', 2, 1, 10],
      [C, 'POST', '/reviews/0', 1, 0, 1],
      ['other', 'GET', '/reviews/0', 1, 1, 1],
    ])
  })

  test('a full table keeps the heavy keys: a new key replaces the smallest and inherits its count as error', () => {
    const p = new PathStats(4)
    // 220 requests, 4 places: every key with more than 55 stays
    for (let i = 0; i < 100; i++) p.record(C, 'GET', '/heavy', 200, 1)
    for (let i = 0; i < 60; i++) {
      p.record(C, 'GET', '/medium', 200, 1)
      p.record(C, 'GET', `/once/${i}`, 200, 1)
    }
    const t = p.toJson()
    assert.equal(t.paths.length, 4)
    assert.deepEqual(
      t.paths.slice(0, 2).map((e) => [e.path, e.requests, e.error_bound]),
      [
        ['/heavy', 100, 0],
        ['/medium', 60, 0],
      ],
    )
    // the one-off paths churn through the other two places; each counts its own request, over the inherited bound
    for (const e of t.paths.slice(2)) {
      assert.match(e.path, /^\/once\//)
      assert.equal(e.requests, 1)
    }
    assert.equal(t.evictions, 58)
    // a key that comes back gets a new id
    const once = t.paths[2]!
    p.record(C, 'GET', '/x', 200, 1)
    p.record(C, 'GET', '/y', 200, 1)
    p.record(C, 'GET', once.path, 200, 1)
    const again = p.toJson().paths.find((e) => e.path === once.path)!
    assert.notEqual(again.id, once.id)
  })

  test('long paths are cut', () => {
    const p = new PathStats(2)
    p.record(C, 'GET', `/${'a'.repeat(1000)}`, 200, 1)
    assert.equal(p.toJson().paths[0]!.path.length, MAX_PATH_LENGTH)
  })
})
