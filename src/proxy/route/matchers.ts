/**
 * Compiled request matchers: Envoy's StringMatcher, HeaderMatcher and QueryParameterMatcher.
 * Compilation reports problems as ConfigIssues; matching allocates nothing in the common cases.
 */
import type { HeaderMatcher, QueryParameterMatcher, RegexMatcher, StringMatcher } from '../../config/envoy.js'
import type { ConfigIssue } from '../../core/errors.js'
import { compileFullMatch } from './regex.js'
import {
  asciiLower,
  containsIgnoreCase,
  endsWithIgnoreCase,
  equalsIgnoreCase,
  startsWithIgnoreCase,
} from './strings.js'
import { headerValue, type MatchContext } from './view.js'

export type StringTest = (value: string) => boolean

const never: StringTest = () => false

/** Compiles a regex for full matching; on error records an issue at `path` and returns a matcher that never matches. */
export function compileRegexTest(m: RegexMatcher, path: string, issues: ConfigIssue[]): StringTest {
  const r = compileFullMatch(m.regex)
  if (!r.ok) {
    issues.push({ path: `${path}.regex`, message: r.error })
    return never
  }
  const re = r.value
  return (v) => re.test(v)
}

export function compileStringMatcher(m: StringMatcher, path: string, issues: ConfigIssue[]): StringTest {
  const ic = m.ignore_case === true
  if (m.exact !== undefined) {
    const want = m.exact
    if (!ic) return (v) => v === want
    const lower = asciiLower(want)
    return (v) => equalsIgnoreCase(v, lower)
  }
  if (m.prefix !== undefined) {
    const want = m.prefix
    if (!ic) return (v) => v.startsWith(want)
    const lower = asciiLower(want)
    return (v) => startsWithIgnoreCase(v, lower)
  }
  if (m.suffix !== undefined) {
    const want = m.suffix
    if (!ic) return (v) => v.endsWith(want)
    const lower = asciiLower(want)
    return (v) => endsWithIgnoreCase(v, lower)
  }
  if (m.contains !== undefined) {
    const want = m.contains
    if (!ic) return (v) => v.includes(want)
    const lower = asciiLower(want)
    return (v) => containsIgnoreCase(v, lower)
  }
  if (m.safe_regex !== undefined) return compileRegexTest(m.safe_regex, `${path}.safe_regex`, issues)
  // The schema requires one of the above.
  issues.push({ path, message: 'one of exact, prefix, suffix, contains, safe_regex is required' })
  return never
}

const INT64_MIN = -(2n ** 63n)
const INT64_MAX = 2n ** 63n - 1n

/**
 * Parses a header value as a base-10 int64 (optional sign, digits, nothing else): a number when exact as a
 * double, a bigint when longer, null when not an integer or out of int64 range.
 */
export function parseInt64(v: string): number | bigint | null {
  let i = 0
  const c0 = v.charCodeAt(0)
  if (c0 === 43 /* + */ || c0 === 45 /* - */) i = 1
  if (i >= v.length) return null
  for (let j = i; j < v.length; j++) {
    const c = v.charCodeAt(j)
    if (c < 48 || c > 57) return null
  }
  if (v.length - i <= 15) return Number(v)
  const big = BigInt(v.charCodeAt(0) === 43 ? v.slice(1) : v)
  return big < INT64_MIN || big > INT64_MAX ? null : big
}

function rangeTest(start: number, end: number): StringTest {
  const bigStart = BigInt(Math.trunc(start))
  const bigEnd = BigInt(Math.trunc(end))
  return (v) => {
    const n = parseInt64(v)
    if (n === null) return false
    if (typeof n === 'number') return n >= start && n < end
    return n >= bigStart && n < bigEnd
  }
}

export class CompiledHeaderMatcher {
  /** lower case */
  readonly name: string
  private readonly presence: boolean | null
  private readonly test: StringTest
  private readonly invert: boolean
  private readonly missingAsEmpty: boolean

  constructor(name: string, presence: boolean | null, test: StringTest, invert: boolean, missingAsEmpty: boolean) {
    this.name = name
    this.presence = presence
    this.test = test
    this.invert = invert
    this.missingAsEmpty = missingAsEmpty
  }

  matches(ctx: MatchContext): boolean {
    const v = headerValue(ctx.req, this.name)
    if (this.presence !== null) return ((v !== undefined) === this.presence) !== this.invert
    // A missing header fails a value matcher whether or not it is inverted, unless it counts as empty.
    if (v === undefined) return this.missingAsEmpty ? this.test('') !== this.invert : false
    return this.test(v) !== this.invert
  }
}

export function compileHeaderMatcher(m: HeaderMatcher, path: string, issues: ConfigIssue[]): CompiledHeaderMatcher {
  const name = asciiLower(m.name)
  const invert = m.invert_match === true
  const empty = m.treat_missing_header_as_empty === true
  const make = (test: StringTest) => new CompiledHeaderMatcher(name, null, test, invert, empty)
  if (m.present_match !== undefined) return new CompiledHeaderMatcher(name, m.present_match, never, invert, empty)
  if (m.exact_match !== undefined) {
    const want = m.exact_match
    // Envoy: an empty exact_match matches any value (the header only has to be there).
    return make(want === '' ? () => true : (v) => v === want)
  }
  if (m.prefix_match !== undefined) {
    const want = m.prefix_match
    return make((v) => v.startsWith(want))
  }
  if (m.suffix_match !== undefined) {
    const want = m.suffix_match
    return make((v) => v.endsWith(want))
  }
  if (m.contains_match !== undefined) {
    const want = m.contains_match
    return make((v) => v.includes(want))
  }
  if (m.safe_regex_match !== undefined) {
    return make(compileRegexTest(m.safe_regex_match, `${path}.safe_regex_match`, issues))
  }
  if (m.range_match !== undefined) {
    const { start, end } = m.range_match
    if (start > end)
      issues.push({ path: `${path}.range_match`, message: `start (${start}) must not exceed end (${end})` })
    return make(rangeTest(start, end))
  }
  if (m.string_match !== undefined) {
    return make(compileStringMatcher(m.string_match, `${path}.string_match`, issues))
  }
  // No specifier: Envoy matches on presence.
  return new CompiledHeaderMatcher(name, true, never, invert, empty)
}

export class CompiledQueryMatcher {
  readonly name: string
  private readonly presence: boolean | null
  private readonly test: StringTest

  constructor(name: string, presence: boolean | null, test: StringTest) {
    this.name = name
    this.presence = presence
    this.test = test
  }

  /** Envoy looks at the first value of the parameter only. */
  matches(ctx: MatchContext): boolean {
    const v = ctx.queryParams().get(this.name)
    if (this.presence !== null) return (v !== undefined) === this.presence
    return v !== undefined && this.test(v)
  }
}

export function compileQueryMatcher(
  m: QueryParameterMatcher,
  path: string,
  issues: ConfigIssue[],
): CompiledQueryMatcher {
  if (m.string_match !== undefined) {
    return new CompiledQueryMatcher(m.name, null, compileStringMatcher(m.string_match, `${path}.string_match`, issues))
  }
  // present_match, or no specifier (which Envoy treats as a presence check)
  return new CompiledQueryMatcher(m.name, m.present_match ?? true, never)
}
