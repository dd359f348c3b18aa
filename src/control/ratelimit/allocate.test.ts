/** The share allocator, table-driven: expected shares worked out by hand from the rules in allocate.ts. */
import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { allocate } from './allocate.js'

const cases: { name: string; budget: number; demand: number[]; floor?: number; want: number[] }[] = [
  { name: 'one proxy gets everything', budget: 60, demand: [100], want: [60] },
  { name: 'one idle proxy still gets everything', budget: 60, demand: [0], want: [60] },
  { name: 'all over the limit: equal split', budget: 60, demand: [50, 50, 100], want: [20, 20, 20] },
  // floor 2 each; 54 left: the idle one wants 0, the other two split 54
  { name: 'one caller stops', budget: 60, demand: [50, 50, 0], want: [29, 29, 2] },
  // floor 2 each; wants 8, 48, 98: 8 is under 54/3, then 46 split 23/23
  { name: 'a small demand is met in full', budget: 60, demand: [10, 50, 100], want: [10, 25, 25] },
  // everyone is under: demands met, the 30 left over split equally
  { name: 'unused budget returned as headroom', budget: 60, demand: [10, 10, 10], want: [20, 20, 20] },
  { name: 'uneven demand under the budget', budget: 100, demand: [10, 40], want: [35, 65] },
  { name: 'no floor', budget: 60, demand: [0, 90], floor: 0, want: [0, 60] },
  { name: 'floor of the whole fair share', budget: 60, demand: [0, 90], floor: 1, want: [30, 30] },
  { name: 'fractional budgets', budget: 1, demand: [5, 5, 5, 5], want: [0.25, 0.25, 0.25, 0.25] },
  { name: 'bad demand counts as none', budget: 10, demand: [Number.NaN, 20], want: [0.5, 9.5] },
]

describe('allocate', () => {
  for (const c of cases) {
    test(c.name, () => {
      const proxies = c.demand.map((demand, i) => ({ id: `p${i}`, demand }))
      const got = allocate(c.budget, proxies, c.floor)
      const shares = proxies.map((p) => got.get(p.id)!)
      shares.forEach((s, i) => {
        assert.ok(Math.abs(s - c.want[i]!) < 1e-9, `p${i}: ${s} != ${c.want[i]}`)
      })
      const sum = shares.reduce((a, b) => a + b, 0)
      assert.ok(Math.abs(sum - c.budget) < 1e-9, `shares add up to ${sum}, not ${c.budget}`)
    })
  }

  test('no proxies, no shares', () => {
    assert.equal(allocate(60, []).size, 0)
  })

  test('the result does not depend on the order of the proxies', () => {
    const a = allocate(60, [
      { id: 'a', demand: 5 },
      { id: 'b', demand: 80 },
      { id: 'c', demand: 30 },
    ])
    const b = allocate(60, [
      { id: 'c', demand: 30 },
      { id: 'a', demand: 5 },
      { id: 'b', demand: 80 },
    ])
    assert.deepEqual([...a].sort(), [...b].sort())
  })
})
