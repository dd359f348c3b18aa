/**
 * The HTTP side of the RBAC engine (src/proxy/rbac/matcher.ts): the rules only a request can answer, and the
 * engine with them.
 *
 * - `header`: Envoy's HeaderMatcher (several values joined with `,`; `:authority`, `:path`, `:method`).
 * - `url_path`: the path without its query.
 *
 * Without a head (a connection-level check) header and path tests do not match.
 */
import type { RbacPermission, RbacPrincipal, RbacRules } from '../../../../config/envoy.js'
import type { ConfigIssue } from '../../../../core/errors.js'
import {
  type ConnectionInput,
  compilePermission as compileCorePermission,
  compilePrincipal as compileCorePrincipal,
  RbacRulesEngine,
  type RuleExtension,
  type Test,
} from '../../../rbac/matcher.js'
import { compileHeaderMatcher, compileStringMatcher } from '../../../route/matchers.js'
import { pathEnd } from '../../../route/strings.js'
import type { RequestHead } from '../../types.js'

export { ALLOW, DENY, LOG, parseSubjectAltName } from '../../../rbac/matcher.js'

/**
 * What the tests read: the request, its connection and its dynamic metadata (the filter callbacks have this shape,
 * so the filter passes them as they are).
 */
export interface RbacInput extends ConnectionInput {
  readonly head: RequestHead | null
}

function headerTest(m: Parameters<typeof compileHeaderMatcher>[0], path: string, issues: ConfigIssue[]) {
  const h = compileHeaderMatcher(m, path, issues)
  // the matcher reads the request through a MatchContext-shaped object: the head is one (authority, path, ...)
  const ctx = { req: null as unknown as RequestHead }
  return (r: RbacInput) => {
    if (r.head === null) return false
    ctx.req = r.head
    return h.matches(ctx as never)
  }
}

function urlPathTest(m: { path: Parameters<typeof compileStringMatcher>[0] }, path: string, issues: ConfigIssue[]) {
  const t = compileStringMatcher(m.path, `${path}.path`, issues)
  return (r: RbacInput) => {
    if (r.head === null) return false
    const p = r.head.path
    const end = pathEnd(p)
    return t(end === p.length ? p : p.slice(0, end))
  }
}

function requestRule(p: RbacPermission | RbacPrincipal, path: string, issues: ConfigIssue[]): Test<RbacInput> | null {
  if (p.header !== undefined) return headerTest(p.header, `${path}.header`, issues)
  if (p.url_path !== undefined) return urlPathTest(p.url_path, `${path}.url_path`, issues)
  return null
}

export const HTTP_RULES: RuleExtension<RbacInput> = { permission: requestRule, principal: requestRule }

export function compilePermission(p: RbacPermission, path: string, issues: ConfigIssue[]): Test<RbacInput> {
  return compileCorePermission(p, path, issues, HTTP_RULES)
}

export function compilePrincipal(p: RbacPrincipal, path: string, issues: ConfigIssue[]): Test<RbacInput> {
  return compileCorePrincipal(p, path, issues, HTTP_RULES)
}

/** One `rules` (or `shadow_rules`) object of the HTTP filter, compiled. */
export class RbacEngine extends RbacRulesEngine<RbacInput> {
  constructor(rules: RbacRules, path: string, issues: ConfigIssue[]) {
    super(rules, path, issues, HTTP_RULES)
  }
}
