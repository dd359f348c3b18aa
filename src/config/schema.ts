/**
 * Building blocks for config schemas. Every config object is strict: an unknown field is an error that names it.
 * Types come from the schemas (`z.infer`), so validation and types have one source.
 */
import { z } from 'zod'
import { parseDurationMs } from '../core/duration.js'
import type { ConfigIssue } from '../core/errors.js'

export { z }

/** A proto3 JSON duration such as `"1.5s"`. */
export const duration = z.string().refine((s) => parseDurationMs(s) !== null, {
  message: 'must be a duration such as "1s" or "0.250s"',
})

export const port = z.number().int().min(0).max(65535)
export const uint32 = z.number().int().min(0).max(0xffffffff)

/** Exactly one of `keys` must be set on the object (a proto `oneof` that is required). */
export function requireOneOf<T extends Record<string, unknown>>(keys: readonly string[], required = true) {
  return (value: T, ctx: z.RefinementCtx) => {
    const set = keys.filter((k) => value[k] !== undefined)
    if (set.length > 1) {
      ctx.addIssue({ code: 'custom', message: `only one of ${keys.join(', ')} may be set (found ${set.join(', ')})` })
    } else if (set.length === 0 && required) {
      ctx.addIssue({ code: 'custom', message: `one of ${keys.join(', ')} is required` })
    }
  }
}

/** `a.b[2].c` from zod's path array. */
export function formatPath(path: readonly PropertyKey[]): string {
  let out = ''
  for (const p of path) {
    if (typeof p === 'number') out += `[${p}]`
    else {
      const s = String(p)
      out += out === '' ? s : /^[A-Za-z_@][\w@.-]*$/.test(s) && !s.includes('.') ? `.${s}` : `["${s}"]`
    }
  }
  return out
}

/** Turns zod issues into Loom config issues, with readable messages and full paths. */
export function toConfigIssues(error: z.ZodError, prefix: readonly PropertyKey[] = []): ConfigIssue[] {
  const out: ConfigIssue[] = []
  for (const issue of error.issues) {
    const path = [...prefix, ...issue.path]
    if (issue.code === 'unrecognized_keys') {
      for (const key of issue.keys) {
        out.push({ path: formatPath([...path, key]), message: 'unknown field (not supported by Loom, or misspelt)' })
      }
    } else if (issue.code === 'invalid_union' && 'errors' in issue && Array.isArray(issue.errors)) {
      // Report the branch that got furthest: the one with the fewest issues.
      const branches = issue.errors as z.core.$ZodIssue[][]
      const best = branches.slice().sort((a, b) => a.length - b.length)[0]
      if (best !== undefined && best.length > 0) {
        out.push(...toConfigIssues(new z.ZodError(best), path))
      } else out.push({ path: formatPath(path), message: issue.message })
    } else {
      out.push({ path: formatPath(path), message: issue.message })
    }
  }
  return out
}
