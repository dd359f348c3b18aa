/**
 * A header list kept flat: `[name0, value0, name1, value1, ...]`, names lower-cased, in wire order.
 * Flat arrays avoid an object per header on the hot path; lookups are linear, which wins for the usual
 * 5 to 20 headers of a request.
 */
export class Headers {
  list: string[]

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
    let found = false
    for (let i = 0; i < l.length; i += 2) {
      if (l[i] !== name) continue
      if (!found) {
        l[i + 1] = value
        found = true
      } else {
        l.splice(i, 2)
        i -= 2
      }
    }
    if (!found) l.push(name, value)
  }

  /** Removes every value of `name`; returns whether any was there. */
  remove(name: string): boolean {
    const l = this.list
    let removed = false
    for (let i = 0; i < l.length; i += 2) {
      if (l[i] === name) {
        l.splice(i, 2)
        i -= 2
        removed = true
      }
    }
    return removed
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
