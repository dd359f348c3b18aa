/**
 * Semantic checks on a spec the schema rejected, so that `loom apply` and `loom validate` list schema errors and
 * the kind's cross-field rules (weights summing to 100, duplicate names, ...) in one pass instead of the second kind
 * appearing only once the first is fixed.
 *
 * The values the schema rejects are left out (an unknown field; a value of the wrong type or out of range; an
 * object missing a required field; a list element that is any of these), the rest is validated again (until it
 * passes), and the checks run on what remains. Their paths are mapped back to the document as written (a list
 * with an element left out shifts the indices after it). A check's finding is dropped when it is about a value
 * that was left out, or about something that holds one (a route list with an invalid destination may well sum
 * to the wrong weight only because of it): what is reported is never an artefact of the pruning. Unknown fields
 * are not values the checks read, so leaving them out drops nothing.
 */
import { formatPath, v } from '../config/schema.js'
import type { ConfigIssue } from '../core/errors.js'

type Key = string | number

const id = (keys: readonly Key[]) => JSON.stringify(keys)

function isPlainObject(x: unknown): x is Record<string, unknown> {
  return x !== null && typeof x === 'object' && !Array.isArray(x)
}

/** `spec.http[0].headers["x-a"]` → ['spec', 'http', 0, 'headers', 'x-a']; null if it is not in that form. */
export function parsePath(path: string): Key[] | null {
  const out: Key[] = []
  const re = /\.?([A-Za-z_][\w-]*)|\[(\d+)\]|\["([^"]*)"\]/y
  let i = 0
  while (i < path.length) {
    re.lastIndex = i
    const m = re.exec(path)
    if (m === null) return null
    out.push(m[2] !== undefined ? Number(m[2]) : (m[1] ?? m[3])!)
    i = re.lastIndex
  }
  return out
}

/** A copy of `value` without the paths in `removed`; `kept` gets, per list, the original indices that remain. */
function without(value: unknown, path: Key[], removed: ReadonlySet<string>, kept: Map<string, number[]>): unknown {
  if (Array.isArray(value)) {
    const out: unknown[] = []
    const indices: number[] = []
    value.forEach((item, i) => {
      const p = [...path, i]
      if (removed.has(id(p))) return
      indices.push(i)
      out.push(without(item, p, removed, kept))
    })
    kept.set(id(path), indices)
    return out
  }
  if (isPlainObject(value)) {
    const out: Record<string, unknown> = {}
    for (const [k, item] of Object.entries(value)) {
      const p = [...path, k]
      if (!removed.has(id(p))) out[k] = without(item, p, removed, kept)
    }
    return out
  }
  return value
}

/** A path in the pruned copy → the same place in the original. */
function original(keys: readonly Key[], kept: ReadonlyMap<string, number[]>): Key[] {
  const out: Key[] = []
  for (const k of keys) out.push(typeof k === 'number' ? (kept.get(id(out))?.[k] ?? k) : k)
  return out
}

const related = (a: readonly Key[], b: readonly Key[]) => {
  const n = Math.min(a.length, b.length)
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return false
  return true
}

/**
 * Runs `check` on `raw` (which `schema` rejects) with the rejected values left out, as described above. `prefix` is
 * where `raw` sits in the resource (`spec`); the issues `check` returns carry paths from the resource root.
 * Returns the findings that stand, with paths into `raw` as written.
 */
export function checkWithoutInvalid<T>(
  schema: v.GenericSchema<unknown, T>,
  raw: unknown,
  prefix: string,
  check: (value: T) => ConfigIssue[],
): ConfigIssue[] {
  const removed = new Set<string>()
  const left: { keys: Key[]; unknownField: boolean }[] = []
  for (let round = 0; round < 16; round++) {
    const kept = new Map<string, number[]>()
    const copy = without(raw, [], removed, kept)
    const parsed = v.safeParse(schema, copy)
    if (parsed.success) return standing(check(parsed.output), prefix, kept, left)
    let progress = false
    for (const issue of parsed.issues) {
      const keys = original(
        (issue.path ?? []).map((p) => p.key as Key),
        kept,
      )
      const unknownField = issue.type === 'strict_object' && issue.expected === 'never'
      // a missing field: the object that lacks it goes
      const target = issue.input === undefined && !unknownField ? keys.slice(0, -1) : keys
      if (target.length === 0) return [] // the whole value is invalid: nothing to check
      if (removed.has(id(target))) continue
      removed.add(id(target))
      left.push({ keys: target, unknownField })
      progress = true
    }
    if (!progress) return []
  }
  return []
}

function standing(
  issues: ConfigIssue[],
  prefix: string,
  kept: ReadonlyMap<string, number[]>,
  left: readonly { keys: Key[]; unknownField: boolean }[],
): ConfigIssue[] {
  const base = prefix === '' ? [] : (parsePath(prefix) ?? [])
  const gone = left.filter((l) => !l.unknownField).map((l) => l.keys)
  const out: ConfigIssue[] = []
  for (const issue of issues) {
    const keys = parsePath(issue.path)
    if (keys === null) {
      if (gone.length === 0) out.push(issue)
      continue
    }
    if (!related(base, keys) || keys.length < base.length) {
      out.push(issue) // outside the pruned value
      continue
    }
    const at = original(keys.slice(base.length), kept)
    if (gone.some((g) => related(g, at))) continue
    out.push({ ...issue, path: formatPath([...base, ...at]) })
  }
  return out
}
