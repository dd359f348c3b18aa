/**
 * A header list kept flat: `[name0, value0, name1, value1, ...]`, names lower-cased, in wire order.
 * Flat arrays avoid an object per header on the hot path; lookups are linear, which wins for the usual
 * 5 to 20 headers of a request.
 */
export class Headers {
  list: string[]
  /**
   * True when the codec knows the list has no `x-forwarded-client-cert` (the HTTP/1.1 parser, from its name hash),
   * so the connection manager's XFCC step need not look; false when unknown. Read only by that step, before any
   * filter runs.
   */
  xfccAbsent = false

  constructor(list: string[] = []) {
    this.list = list
  }

  get size(): number {
    return this.list.length >> 1
  }

  /** The first value of `name` (lower case), or undefined. */
  get(name: string): string | undefined {
    const l = this.list
    for (let i = 0; i < l.length; i += 2) if (l[i] === name) return l[i + 1]
    return undefined
  }

  getAll(name: string): string[] {
    const out: string[] = []
    const l = this.list
    for (let i = 0; i < l.length; i += 2) if (l[i] === name) out.push(l[i + 1]!)
    return out
  }

  has(name: string): boolean {
    const l = this.list
    for (let i = 0; i < l.length; i += 2) if (l[i] === name) return true
    return false
  }

  add(name: string, value: string): void {
    this.list.push(name, value)
  }

  /** Replaces every value of `name` with one. */
  set(name: string, value: string): void {
    const l = this.list
    let i = 0
    while (i < l.length && l[i] !== name) i += 2
    if (i === l.length) {
      l.push(name, value)
      return
    }
    l[i + 1] = value
    this.removeFrom(name, i + 2)
  }

  /** Removes every value of `name`; returns whether any was there. */
  remove(name: string): boolean {
    return this.removeFrom(name, 0)
  }

  /** Removes the fields named `name` at or after index `from`, keeping the order of the rest. */
  private removeFrom(name: string, from: number): boolean {
    const l = this.list
    let w = from
    for (let i = from; i < l.length; i += 2) {
      const n = l[i]!
      if (n === name) continue
      if (w !== i) {
        l[w] = n
        l[w + 1] = l[i + 1]!
      }
      w += 2
    }
    if (w === l.length) return false
    l.length = w
    return true
  }

  toObject(): Record<string, string | string[]> {
    const out: Record<string, string | string[]> = {}
    const l = this.list
    for (let i = 0; i < l.length; i += 2) {
      const k = l[i]!
      const v = l[i + 1]!
      const prev = out[k]
      if (prev === undefined) out[k] = v
      else if (Array.isArray(prev)) prev.push(v)
      else out[k] = [prev, v]
    }
    return out
  }
}
