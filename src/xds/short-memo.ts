/**
 * A memo of a function of a few objects, compared by identity: under the first (held weakly), the last `per`
 * results with the other objects they were computed from (held strongly while the first lives, so `per` stays
 * small). Alike xDS streams share their state objects, so the stream after another in the same state finds the
 * result; a stream in a state of its own (an on-demand proxy's) costs one small list, not a weak map per object
 * read, which the collector pays dearly for when thousands are made per push round.
 */
export class ShortMemo<K extends object, R> {
  private readonly lists = new WeakMap<K, { b: unknown; c: unknown; d: unknown; r: R }[]>()

  constructor(private readonly per = 2) {}

  get(a: K, b: unknown, c: unknown, d: unknown, make: () => R): R {
    let list = this.lists.get(a)
    if (list === undefined) this.lists.set(a, (list = []))
    else for (const e of list) if (e.b === b && e.c === c && e.d === d) return e.r
    const r = make()
    if (list.length >= this.per) list.shift()
    list.push({ b, c, d, r })
    return r
  }
}
