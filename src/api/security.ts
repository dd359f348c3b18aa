/**
 * security.istio.io resources, with Istio's field names: PeerAuthentication, AuthorizationPolicy,
 * RequestAuthentication. The same spec serves v1 and v1beta1. As in networking.ts, each kind has a schema and a
 * semantic check mirroring Istio's admission webhook.
 */
import { v } from '../config/schema.js'
import type { ConfigIssue } from '../core/errors.js'
import {
  bool,
  enumOf,
  duration,
  field,
  Issues,
  ipOrCidrError,
  MatchLabelsSelector,
  nonEmpty,
  opt,
  PolicyTargetReference,
  rule,
  str,
} from './common.js'
import type { SpecContext } from './networking.js'

const strings = v.array(str)

const targeting = {
  selector: opt(MatchLabelsSelector),
  targetRef: opt(PolicyTargetReference),
  targetRefs: opt(v.pipe(v.array(PolicyTargetReference), v.maxLength(16, 'at most 16 targetRefs'))),
}

function checkTargeting(issues: Issues, spec: { selector?: unknown; targetRef?: unknown; targetRefs?: unknown }): void {
  const set = (['selector', 'targetRef', 'targetRefs'] as const).filter((k) => spec[k] !== undefined)
  if (set.length > 1)
    issues.add('spec', `only one of selector, targetRef or targetRefs can be set (found ${set.join(', ')})`)
}

// === PeerAuthentication ===

const mtlsMode = enumOf(['UNSET', 'DISABLE', 'PERMISSIVE', 'STRICT'])
const MutualTls = v.strictObject({ mode: opt(mtlsMode) })

const portKey = rule((k) => {
  const n = /^\d{1,5}$/.test(k) ? Number(k) : 0
  return n >= 1 && n <= 65535 ? null : `port ${JSON.stringify(k)} must be between 1 and 65535`
})

export const PeerAuthenticationSpec = v.strictObject({
  selector: opt(MatchLabelsSelector),
  mtls: opt(MutualTls),
  portLevelMtls: opt(v.record(portKey, MutualTls)),
})
export type PeerAuthenticationSpec = v.InferOutput<typeof PeerAuthenticationSpec>

export function checkPeerAuthentication(spec: PeerAuthenticationSpec, _ctx: SpecContext): ConfigIssue[] {
  const issues = new Issues()
  if (spec.portLevelMtls !== undefined) {
    if (Object.keys(spec.selector?.matchLabels ?? {}).length === 0) {
      issues.add(
        'spec.portLevelMtls',
        'portLevelMtls requires a selector (mesh/namespace-wide policies cannot have port level mTLS)',
      )
    }
    if (Object.keys(spec.portLevelMtls).length === 0) {
      issues.add('spec.portLevelMtls', 'port level mTLS, if defined, must have at least one element')
    }
  }
  return issues.list
}

// === AuthorizationPolicy ===

const serviceAccounts = v.pipe(
  v.array(v.pipe(v.string(), v.maxLength(320, 'at most 320 characters'))),
  v.maxLength(16, 'at most 16 service accounts'),
)

export const Source = v.strictObject({
  principals: opt(strings),
  notPrincipals: opt(strings),
  requestPrincipals: opt(strings),
  notRequestPrincipals: opt(strings),
  namespaces: opt(strings),
  notNamespaces: opt(strings),
  serviceAccounts: opt(serviceAccounts),
  notServiceAccounts: opt(serviceAccounts),
  ipBlocks: opt(v.array(rule(ipOrCidrError))),
  notIpBlocks: opt(v.array(rule(ipOrCidrError))),
  remoteIpBlocks: opt(v.array(rule(ipOrCidrError))),
  notRemoteIpBlocks: opt(v.array(rule(ipOrCidrError))),
})
export type Source = v.InferOutput<typeof Source>

const portString = rule((s) => {
  const n = /^\d{1,5}$/.test(s) ? Number(s) : 0
  return n >= 1 && n <= 65535 ? null : `port ${JSON.stringify(s)} must be a number between 1 and 65535`
})

export const Operation = v.strictObject({
  hosts: opt(strings),
  notHosts: opt(strings),
  ports: opt(v.array(portString)),
  notPorts: opt(v.array(portString)),
  methods: opt(strings),
  notMethods: opt(strings),
  paths: opt(strings),
  notPaths: opt(strings),
})
export type Operation = v.InferOutput<typeof Operation>

export const Condition = v.strictObject({ key: v.string(), values: opt(strings), notValues: opt(strings) })
export type Condition = v.InferOutput<typeof Condition>

export const Rule = v.strictObject({
  from: opt(v.pipe(v.array(v.strictObject({ source: opt(Source) })), v.maxLength(512, 'at most 512 entries'))),
  to: opt(v.array(v.strictObject({ operation: opt(Operation) }))),
  when: opt(v.array(Condition)),
})

export const AuthorizationPolicySpec = v.strictObject({
  ...targeting,
  rules: opt(v.pipe(v.array(Rule), v.maxLength(512, 'at most 512 rules'))),
  action: opt(enumOf(['ALLOW', 'DENY', 'AUDIT', 'CUSTOM'])),
  provider: opt(v.strictObject({ name: opt(str) })),
})
export type AuthorizationPolicySpec = v.InferOutput<typeof AuthorizationPolicySpec>

const EXACT_ATTRIBUTES = new Set([
  'source.ip',
  'remote.ip',
  'source.namespace',
  'source.principal',
  'source.serviceAccount',
  'request.auth.principal',
  'request.auth.audiences',
  'request.auth.presenter',
  'destination.ip',
  'destination.port',
  'connection.sni',
])
const MAP_ATTRIBUTES = ['request.headers', 'request.auth.claims', 'experimental.envoy.filters.']

/** Istio's condition keys: the fixed attributes, or `request.headers[name]`, `request.auth.claims[name]`, ... */
function conditionKeyError(key: string): string | null {
  if (key === '') return '`key` must not be empty'
  if (EXACT_ATTRIBUTES.has(key)) return null
  const prefix = MAP_ATTRIBUTES.find((p) => key.startsWith(p))
  if (prefix === undefined) return `unknown attribute: ${key}`
  const open = key.indexOf('[')
  const expected = `invalid key ${JSON.stringify(key)}: expected ${prefix.replace(/\.$/, '')}[name]`
  if (open < 0 || !key.endsWith(']') || key.length - open <= 2) return expected
  // one name in brackets, or (claims) several: request.auth.claims[a][b]
  const names = key.slice(open)
  const nested = prefix === 'request.auth.claims'
  if (!(nested ? /^(\[[^[\]]+\])+$/ : /^\[[^[\]]+\]$/).test(names)) return expected
  return null
}

function conditionValueError(key: string, value: string): string | null {
  if (value === '') return 'empty value not allowed'
  if (key === 'source.ip' || key === 'remote.ip' || key === 'destination.ip') return ipOrCidrError(value)
  if (key === 'destination.port') {
    const n = /^\d{1,5}$/.test(value) ? Number(value) : 0
    return n >= 1 && n <= 65535 ? null : `port ${JSON.stringify(value)} must be between 1 and 65535`
  }
  return null
}

/**
 * Istio's path templates: `{*}` (one segment) and `{**}` (the rest) must each be a whole path segment, `{**}` the
 * last operator, with no other `{`, `}` or `*` in the path.
 */
export function pathTemplateError(path: string): string | null {
  if (!path.includes('{') && !path.includes('}')) return null
  const segments = path.split('/')
  let globs = false
  for (let i = 0; i < segments.length; i++) {
    const seg = segments[i]!
    if (seg === '{*}' || seg === '{**}') {
      if (globs) return `${JSON.stringify(path)}: {**} must be the last operator of a path template`
      if (seg === '{**}') globs = true
      continue
    }
    if (/[{}*]/.test(seg)) {
      return `${JSON.stringify(path)}: a path template takes {*} and {**} only, each as a whole segment`
    }
  }
  return null
}

function checkNoEmpty(issues: Issues, path: string, list: readonly string[] | undefined): void {
  list?.forEach((s, i) => {
    if (s === '') issues.add(field(path, i), 'empty value not allowed')
  })
}

export function checkAuthorizationPolicy(spec: AuthorizationPolicySpec, _ctx: SpecContext): ConfigIssue[] {
  const issues = new Issues()
  checkTargeting(issues, spec)
  const action = spec.action ?? 'ALLOW'
  if (action === 'CUSTOM') {
    if ((spec.provider?.name ?? '') === '')
      issues.add('spec.provider.name', 'the CUSTOM action requires a provider name')
  } else if (spec.provider !== undefined) {
    issues.add('spec.provider', 'provider can only be used with the CUSTOM action')
  }
  if (action === 'DENY' && spec.rules === undefined) {
    issues.add('spec.rules', 'a deny policy without rules is meaningless and has no effect')
  }
  spec.rules?.forEach((r, i) => {
    const p = field('spec.rules', i)
    if (r.from !== undefined && r.from.length === 0) issues.add(`${p}.from`, '`from` must not be empty')
    r.from?.forEach((f, j) => {
      const fp = `${field(`${p}.from`, j)}.source`
      const src = f.source
      if (src === undefined) {
        issues.add(fp, '`from.source` must not be nil')
        return
      }
      const keys = Object.keys(src) as (keyof Source)[]
      if (keys.every((k) => (src[k] ?? []).length === 0)) issues.add(fp, '`from.source` must not be empty')
      if (
        (src.serviceAccounts !== undefined || src.notServiceAccounts !== undefined) &&
        (src.principals !== undefined ||
          src.notPrincipals !== undefined ||
          src.namespaces !== undefined ||
          src.notNamespaces !== undefined)
      ) {
        issues.add(fp, 'cannot set serviceAccounts with namespaces or principals')
      }
      for (const k of keys) checkNoEmpty(issues, field(fp, k), src[k])
    })
    if (r.to !== undefined && r.to.length === 0) issues.add(`${p}.to`, '`to` must not be empty')
    r.to?.forEach((t, j) => {
      const tp = `${field(`${p}.to`, j)}.operation`
      const op = t.operation
      if (op === undefined) {
        issues.add(tp, '`to.operation` must not be nil')
        return
      }
      const keys = Object.keys(op) as (keyof Operation)[]
      if (keys.every((k) => (op[k] ?? []).length === 0)) issues.add(tp, '`to.operation` must not be empty')
      for (const k of keys) checkNoEmpty(issues, field(tp, k), op[k])
      for (const k of ['paths', 'notPaths'] as const) {
        op[k]?.forEach((pth, n) => {
          issues.add(field(field(tp, k), n), pathTemplateError(pth))
        })
      }
    })
    r.when?.forEach((c, j) => {
      const cp = field(`${p}.when`, j)
      const keyErr = conditionKeyError(c.key)
      issues.add(`${cp}.key`, keyErr)
      if ((c.values ?? []).length === 0 && (c.notValues ?? []).length === 0) {
        issues.add(cp, `at least one of values or notValues must be set for key ${c.key}`)
      }
      if (keyErr !== null) return
      for (const k of ['values', 'notValues'] as const) {
        c[k]?.forEach((val, n) => {
          issues.add(field(`${cp}.${k}`, n), conditionValueError(c.key, val))
        })
      }
    })
  })
  return issues.list
}

// === RequestAuthentication ===

const url = rule((s) => {
  if (s.length > 2048) return 'at most 2048 characters'
  try {
    const u = new URL(s)
    return u.protocol === 'http:' || u.protocol === 'https:' ? null : 'url must have scheme http:// or https://'
  } catch {
    return `${JSON.stringify(s)} is not a valid URL (use http:// or https://)`
  }
})

export const JWTRule = v.strictObject({
  issuer: nonEmpty,
  audiences: opt(v.array(nonEmpty)),
  jwksUri: opt(url),
  jwks_uri: opt(url),
  jwks: opt(str),
  fromHeaders: opt(v.array(v.strictObject({ name: nonEmpty, prefix: opt(str) }))),
  fromParams: opt(v.array(nonEmpty)),
  fromCookies: opt(v.array(nonEmpty)),
  outputPayloadToHeader: opt(str),
  forwardOriginalToken: opt(bool),
  outputClaimToHeaders: opt(
    v.array(
      v.strictObject({
        header: rule((h) => (/^[-_A-Za-z0-9]+$/.test(h) ? null : `invalid header name ${JSON.stringify(h)}`)),
        claim: nonEmpty,
      }),
    ),
  ),
  timeout: opt(duration),
  spaceDelimitedClaims: opt(v.pipe(v.array(nonEmpty), v.maxLength(64, 'at most 64 claims'))),
})
export type JWTRule = v.InferOutput<typeof JWTRule>

export const RequestAuthenticationSpec = v.strictObject({
  ...targeting,
  jwtRules: opt(v.pipe(v.array(JWTRule), v.maxLength(4096, 'at most 4096 rules'))),
})
export type RequestAuthenticationSpec = v.InferOutput<typeof RequestAuthenticationSpec>

export function checkRequestAuthentication(spec: RequestAuthenticationSpec, _ctx: SpecContext): ConfigIssue[] {
  const issues = new Issues()
  checkTargeting(issues, spec)
  spec.jwtRules?.forEach((r, i) => {
    const p = field('spec.jwtRules', i)
    const keys = (['jwks', 'jwksUri', 'jwks_uri'] as const).filter((k) => r[k] !== undefined)
    if (keys.length > 1) issues.add(p, `only one of jwks or jwksUri can be set (found ${keys.join(', ')})`)
    if (r.outputPayloadToHeader !== undefined && !/^[-_A-Za-z0-9]+$/.test(r.outputPayloadToHeader))
      issues.add(`${p}.outputPayloadToHeader`, `invalid header name ${JSON.stringify(r.outputPayloadToHeader)}`)
    r.audiences?.forEach((a, k) => {
      if (a.trim() === '') issues.add(`${p}.audiences[${k}]`, 'audience must not be blank')
    })
    r.fromParams?.forEach((q, k) => {
      if (q.trim() === '') issues.add(`${p}.fromParams[${k}]`, 'parameter name must not be blank')
    })
    if (r.jwks !== undefined) {
      try {
        const parsed = JSON.parse(r.jwks) as { keys?: unknown }
        if (!Array.isArray(parsed.keys))
          issues.add(`${p}.jwks`, 'jwks must be a JSON Web Key Set: an object with "keys"')
      } catch {
        issues.add(`${p}.jwks`, 'jwks must be a JSON Web Key Set (JSON)')
      }
    }
  })
  return issues.list
}
