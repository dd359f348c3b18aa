/**
 * Earliest-deadline-first schedule: entry i has weight w(i); each pick takes the entry with the earliest deadline
 * and schedules it again 1/w later. Picks interleave smoothly in proportion to the weights. A binary heap over
 * typed arrays: O(log n) per pick and no allocation.
 */
export class EdfScheduler {
  readonly #deadline: Float64Array
  readonly #seq: Float64Array
  readonly #heap: Int32Array
  #counter = 0

  /** With `randomStart`, a random number of picks is made up front, so proxies do not all start on one host. */
  constructor(weights: ArrayLike<number>, randomStart: boolean) {
    const n = weights.length
    this.#deadline = new Float64Array(n)
    this.#seq = new Float64Array(n)
    this.#heap = new Int32Array(n)
    for (let i = 0; i < n; i++) {
      this.#deadline[i] = 1 / weights[i]!
      this.#seq[i] = this.#counter++
      this.#heap[i] = i
    }
    for (let i = (n >> 1) - 1; i >= 0; i--) this.#siftDown(i)
    if (randomStart) {
      const skip = Math.floor(Math.random() * n)
      for (let i = 0; i < skip; i++) this.advance(weights[this.peek()]!)
    }
  }

  /** The entry with the earliest deadline. */
  peek(): number {
    return this.#heap[0]!
  }

  /** Re-schedules the entry `peek()` returned, 1/weight after its current deadline. */
  advance(weight: number): void {
    const top = this.#heap[0]!
    const now = this.#deadline[top]!
    this.#deadline[top] = now + 1 / weight
    this.#seq[top] = this.#counter++
    this.#siftDown(0)
    // Keep deadlines small so that 1/weight steps stay exact in floating point.
    if (now > 1e9) this.#rebase(now)
  }

  #rebase(now: number): void {
    const d = this.#deadline
    for (let i = 0; i < d.length; i++) d[i] = d[i]! - now
  }

  #less(a: number, b: number): boolean {
    const da = this.#deadline[a]!
    const db = this.#deadline[b]!
    return da < db || (da === db && this.#seq[a]! < this.#seq[b]!)
  }

  #siftDown(i: number): void {
    const heap = this.#heap
    const n = heap.length
    const item = heap[i]!
    for (;;) {
      const l = 2 * i + 1
      if (l >= n) break
      const r = l + 1
      const c = r < n && this.#less(heap[r]!, heap[l]!) ? r : l
      if (!this.#less(heap[c]!, item)) break
      heap[i] = heap[c]!
      i = c
    }
    heap[i] = item
  }
}
