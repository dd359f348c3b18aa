/**
 * `*_headers_to_add` / `*_headers_to_remove` at one level (weighted cluster, route, virtual host or route
 * configuration), applied as Envoy's HeaderParser does: removals first, then every add is decided against the
 * headers as they are after the removals, then overwrites are applied, then appends.
 */
import type { HeaderValueOption } from '../../config/envoy.js'
import type { ConfigIssue } from '../../core/errors.js'
import type { Headers } from '../http/headers.js'
import { asciiLower } from './strings.js'

const APPEND = 0
const ADD_IF_ABSENT = 1
const OVERWRITE_OR_ADD = 2
const OVERWRITE_IF_EXISTS = 3

const actions = {
  APPEND_IF_EXISTS_OR_ADD: APPEND,
  ADD_IF_ABSENT,
  OVERWRITE_IF_EXISTS_OR_ADD: OVERWRITE_OR_ADD,
  OVERWRITE_IF_EXISTS,
} as const

/** Envoy refuses to let header mutations touch pseudo-headers or Host. */
function isProtected(lowerName: string): boolean {
  return lowerName.charCodeAt(0) === 58 /* : */ || lowerName === 'host'
}

/**
 * Header values are Envoy substitution formats: `%%` is a literal `%` and `%VAR%` a command. Loom has no
 * commands, so any other `%` is an error rather than a value sent as typed. Returns the literal value or null.
 */
function literalValue(value: string, path: string, issues: ConfigIssue[]): string | null {
  if (value.indexOf('%') < 0) return value
  let out = ''
  for (let i = 0; i < value.length; i++) {
    const c = value[i]!
    if (c !== '%') {
      out += c
      continue
    }
    if (value[i + 1] === '%') {
      out += '%'
      i++
      continue
    }
    const close = value.indexOf('%', i + 1)
    const what = close > i ? `the substitution ${value.slice(i, close + 1)}` : `a '%' with no closing '%'`
    issues.push({
      path,
      message: `${what} is not supported: Loom header values are literal; write '%%' for a '%' character`,
    })
    return null
  }
  return out
}

interface AddEntry {
  name: string
  value: string
  action: number
}

export class HeaderMutations {
  static readonly empty = new HeaderMutations([], [])

  private readonly remove: string[]
  private readonly add: AddEntry[]
  /** whether any add depends on the current headers (so decisions must precede changes) */
  private readonly conditional: boolean
  /** per-entry decisions, reused across calls */
  private readonly decide: Uint8Array

  constructor(remove: string[], add: AddEntry[]) {
    this.remove = remove
    this.add = add
    this.conditional = add.some((e) => e.action === ADD_IF_ABSENT || e.action === OVERWRITE_IF_EXISTS)
    this.decide = new Uint8Array(add.length)
  }

  get isEmpty(): boolean {
    return this.remove.length === 0 && this.add.length === 0
  }

  apply(headers: Headers): void {
    for (const name of this.remove) headers.remove(name)
    const add = this.add
    if (add.length === 0) return
    if (!this.conditional) {
      for (const e of add) if (e.action === OVERWRITE_OR_ADD) headers.set(e.name, e.value)
      for (const e of add) if (e.action === APPEND) headers.add(e.name, e.value)
      return
    }
    // 0: skip, 1: overwrite, 2: append; decided against the headers before any add of this level
    const d = this.decide
    for (let i = 0; i < add.length; i++) {
      const e = add[i]!
      if (e.action === APPEND) d[i] = 2
      else if (e.action === OVERWRITE_OR_ADD) d[i] = 1
      else if (e.action === ADD_IF_ABSENT) d[i] = headers.has(e.name) ? 0 : 2
      else d[i] = headers.has(e.name) ? 1 : 0
    }
    for (let i = 0; i < add.length; i++) if (d[i] === 1) headers.set(add[i]!.name, add[i]!.value)
    for (let i = 0; i < add.length; i++) if (d[i] === 2) headers.add(add[i]!.name, add[i]!.value)
  }
}

/**
 * `prefix` is the path of the object holding the two fields, e.g. `virtual_hosts[0]`; `dir` picks the
 * request_ or response_ pair.
 */
export function compileMutations(
  holder: { [k: string]: unknown },
  dir: 'request' | 'response',
  prefix: string,
  issues: ConfigIssue[],
): HeaderMutations {
  const addKey = `${dir}_headers_to_add`
  const removeKey = `${dir}_headers_to_remove`
  const adds = (holder[addKey] as HeaderValueOption[] | undefined) ?? []
  const removes = (holder[removeKey] as string[] | undefined) ?? []
  if (adds.length === 0 && removes.length === 0) return HeaderMutations.empty
  const at = (k: string) => (prefix === '' ? k : `${prefix}.${k}`)

  const remove: string[] = []
  removes.forEach((raw, i) => {
    const name = asciiLower(raw)
    if (isProtected(name)) {
      issues.push({ path: `${at(removeKey)}[${i}]`, message: `':'-prefixed or host headers may not be removed` })
    } else remove.push(name)
  })

  const add: AddEntry[] = []
  adds.forEach((opt, i) => {
    const path = `${at(addKey)}[${i}]`
    const name = asciiLower(opt.header.key)
    if (isProtected(name)) {
      issues.push({ path: `${path}.header.key`, message: `':'-prefixed or host headers may not be modified` })
      return
    }
    let action: number = actions[opt.append_action ?? 'APPEND_IF_EXISTS_OR_ADD']
    if (opt.append !== undefined) {
      if (opt.append_action !== undefined && opt.append_action !== 'APPEND_IF_EXISTS_OR_ADD') {
        issues.push({ path: `${path}.append`, message: 'append and append_action may not both be set' })
        return
      }
      action = opt.append ? APPEND : OVERWRITE_OR_ADD
    }
    const value = literalValue(opt.header.value, `${path}.header.value`, issues)
    if (value === null) return
    // An empty value is dropped unless keep_empty_value is set.
    if (value === '' && opt.keep_empty_value !== true) return
    add.push({ name, value, action })
  })
  return new HeaderMutations(remove, add)
}
