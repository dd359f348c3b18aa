/**
 * Building blocks for config schemas (valibot: small, typed, and cheap to load, which matters in a sidecar).
 * Every config object is strict: an unknown field is an error that names it. Types come from the schemas
 * (`v.InferOutput`), so validation and types have one source.
 */
import * as v from 'valibot'
import { parseDurationMs } from '../core/duration.js'
import type { ConfigIssue } from '../core/errors.js'

export { v }

/** A proto3 JSON duration such as `"1.5s"`. */
export const duration = v.pipe(
  v.string(),
  v.check((s) => parseDurationMs(s) !== null, 'must be a duration such as "1s" or "0.250s"'),
)

export const int = (min: number, max: number) => v.pipe(v.number(), v.integer(), v.minValue(min), v.maxValue(max))
export const port = int(0, 65535)
export const uint32 = int(0, 0xffffffff)
export const nonEmpty = v.pipe(v.string(), v.minLength(1, 'must not be empty'))

/** Exactly one of `keys` must be set (a proto `oneof`); with `required` false, at most one. */
export function oneOf<T extends Record<string, unknown>>(keys: readonly string[], required = true) {
  return v.check<T, v.ErrorMessage<v.CheckIssue<T>>>(
    (value) => {
      const n = keys.filter((k) => value[k] !== undefined).length
      return n === 1 || (n === 0 && !required)
    },
    (issue: v.CheckIssue<T>) => {
      const value = issue.input as Record<string, unknown>
      const set = keys.filter((k) => value[k] !== undefined)
      return set.length > 1
        ? `only one of ${keys.join(', ')} may be set (found ${set.join(', ')})`
        : `one of ${keys.join(', ')} is required`
    },
  )
}

/** `a.b[2].c` from a path of keys. */
export function formatPath(path: readonly PropertyKey[]): string {
  let out = ''
  for (const p of path) {
    if (typeof p === 'number') out += `[${p}]`
    else {
      const s = String(p)
      out += /^[A-Za-z_][\w-]*$/.test(s) ? (out === '' ? s : `.${s}`) : `["${s}"]`
    }
  }
  return out
}

type Issue = v.BaseIssue<unknown>

/** Turns valibot issues into Loom config issues, with readable messages and full paths. */
export function toConfigIssues(issues: readonly Issue[], prefix: readonly PropertyKey[] = []): ConfigIssue[] {
  const out: ConfigIssue[] = []
  for (const issue of issues) {
    const path = [...prefix, ...(issue.path ?? []).map((p) => p.key as PropertyKey)]
    if (issue.type === 'strict_object' && issue.expected === 'never') {
      out.push({ path: formatPath(path), message: 'unknown field (not supported by Loom, or misspelt)' })
    } else if (
      (issue.type === 'union' || issue.type === 'variant') &&
      issue.issues !== undefined &&
      issue.issues.length > 0
    ) {
      out.push(...toConfigIssues(issue.issues, prefix))
    } else if (issue.type === 'variant' || (issue.type === 'literal' && path.at(-1) === '@type')) {
      out.push({
        path: formatPath(path),
        message: `unsupported extension ${JSON.stringify(issue.input)}; supported: ${issue.expected}`,
      })
    } else if (issue.kind === 'schema' && issue.input === undefined) {
      out.push({ path: formatPath(path), message: 'required field is missing' })
    } else {
      out.push({ path: formatPath(path), message: cleanMessage(issue.message) })
    }
  }
  return out
}

function cleanMessage(m: string): string {
  return m.replace(/^Invalid type: /, 'wrong type: ').replace(/^Invalid /, 'invalid ')
}
