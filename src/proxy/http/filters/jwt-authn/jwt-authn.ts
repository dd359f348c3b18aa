/**
 * Envoy's JWT authentication filter (envoy.filters.http.jwt_authn), the subset Istio's RequestAuthentication emits.
 *
 * `providers` name the issuers: each with its keys (`local_jwks` inline, or `remote_jwks` fetched and cached, see
 * jwks.ts), its `audiences`, where its tokens are (`from_headers` with a `value_prefix`, `from_params`,
 * `from_cookies`; default `Authorization: Bearer <token>` and the `access_token` query parameter) and what a
 * verified token leaves behind. `rules` (first match by path `prefix` or `path`) say what a request needs: a
 * provider, any of several (`requires_any`), and with `allow_missing` a request without a token passes (Istio's
 * shape: a request with no token passes, one with a bad token does not). `requirement_name` refers to
 * `requirement_map`. A request no rule matches is not checked.
 *
 * The first token found in the requirement's locations is the one verified, by the provider whose `issuer` is the
 * token's `iss` (a provider without `issuer` takes any). Checks, in Envoy's order and with Envoy's reply bodies:
 * format, `alg` (asymmetric only, bound to the key type), issuer (401 `Jwt issuer is not configured`), `exp` and
 * `nbf` with `clock_skew_seconds` (default 60; `Jwt is expired`, `Jwt not yet valid`), audiences (403 `Audiences in
 * Jwt are not allowed`), then the signature (`Jwks doesn't have key to match kid or alg from Jwt`, `Jwt
 * verification fails`, `Jwks remote fetch is failed`). A missing token where one is required: 401 `Jwt is missing`.
 * Replies carry `www-authenticate: Bearer realm="<url>"` (with `error="invalid_token"` for a bad token) and the
 * reason `jwt_authn_access_denied{<body with underscores>}`.
 *
 * On success: dynamic metadata `istio_authn` (`request.auth.principal` = `<iss>/<sub>`, `request.auth.audiences`,
 * `request.auth.presenter` (azp), `request.auth.claims` = the payload), the payload under `payload_in_metadata` in
 * namespace `envoy.filters.http.jwt_authn`, the token's header removed unless `forward`, the payload (base64url)
 * in `forward_payload_header`, string / number / boolean claims (dotted paths for nested ones) in
 * `claim_to_headers`. Stats: `<stat_prefix>.jwt_authn.allowed`, `.denied`.
 */
import { readFileSync } from 'node:fs'
import type { JwtAuthentication, JwtProvider, JwtRequirement } from '../../../../config/envoy.js'
import { parseDurationMs } from '../../../../core/duration.js'
import type { ConfigIssue } from '../../../../core/errors.js'
import type { HttpConnManagerStats } from '../../../stats/stats.js'
import { Headers } from '../../headers.js'
import type { RequestHead } from '../../types.js'
import {
  CONTINUE,
  type FilterCallbacks,
  type FilterStatus,
  type HttpFilterFactory,
  STOP,
  type StreamFilter,
} from '../filter.js'
import { isAsymmetricAlg, isKnownAlg, KeySet, type KeySource, LocalKeys, loadJose, remoteKeys } from './jwks.js'

export const ISTIO_AUTHN = 'istio_authn'
export const JWT_AUTHN_METADATA = 'envoy.filters.http.jwt_authn'

export class JwtAuthnStats {
  allowed = 0
  denied = 0
}

/** Where a token may be. */
interface Location {
  readonly id: string
  readonly kind: 'header' | 'param' | 'cookie'
  readonly name: string
  /** lower case, '' for none */
  readonly prefix: string
}

class CompiledProvider {
  readonly name: string
  readonly issuer: string
  readonly audiences: readonly string[]
  readonly keys: KeySource
  readonly locations: readonly Location[]
  readonly forward: boolean
  readonly payloadHeader: string
  readonly padPayload: boolean
  readonly payloadInMetadata: string
  readonly claimHeaders: readonly { header: string; path: readonly string[] }[]
  readonly skewS: number

  constructor(name: string, p: JwtProvider, path: string, issues: ConfigIssue[]) {
    this.name = name
    this.issuer = p.issuer ?? ''
    this.audiences = p.audiences ?? []
    this.keys = compileKeys(p, path, issues)
    const locs: Location[] = []
    for (const h of p.from_headers ?? [])
      locs.push(location('header', h.name.toLowerCase(), (h.value_prefix ?? '').toLowerCase()))
    for (const q of p.from_params ?? []) locs.push(location('param', q, ''))
    for (const c of p.from_cookies ?? []) locs.push(location('cookie', c, ''))
    if (locs.length === 0)
      locs.push(location('header', 'authorization', 'bearer '), location('param', 'access_token', ''))
    this.locations = locs
    this.forward = p.forward === true
    this.payloadHeader = p.forward_payload_header ?? ''
    this.padPayload = p.pad_forward_payload_header === true
    this.payloadInMetadata = p.payload_in_metadata ?? ''
    this.claimHeaders = (p.claim_to_headers ?? []).map((c) => ({
      header: c.header_name.toLowerCase(),
      path: c.claim_name.split('.'),
    }))
    this.skewS = p.clock_skew_seconds ?? 60
  }
}

function location(kind: Location['kind'], name: string, prefix: string): Location {
  return { id: `${kind}:${name}:${prefix}`, kind, name, prefix }
}

function compileKeys(p: JwtProvider, path: string, issues: ConfigIssue[]): KeySource {
  if (p.remote_jwks !== undefined) {
    const r = p.remote_jwks
    const timeout = parseDurationMs(r.http_uri.timeout ?? '1s') ?? 1000
    const cache = parseDurationMs(r.cache_duration ?? '300s') ?? 300_000
    const keys = remoteKeys(r.http_uri.uri, timeout > 0 ? timeout : 1000, cache, r.async_fetch !== undefined)
    if (r.async_fetch !== undefined) keys.fetch().catch(() => {})
    return keys
  }
  const src = p.local_jwks!
  let text = src.inline_string ?? ''
  try {
    if (src.filename !== undefined) text = readFileSync(src.filename, 'utf8')
    else if (src.inline_bytes !== undefined) text = Buffer.from(src.inline_bytes, 'base64').toString('utf8')
    return new LocalKeys(KeySet.parse(text))
  } catch (err) {
    issues.push({ path: `${path}.local_jwks`, message: `not a JSON Web Key Set: ${(err as Error).message}` })
    return new LocalKeys(new KeySet([]))
  }
}

/** A compiled requirement: the providers any of which may verify the token, and whether no token is fine. */
class Requirement {
  readonly allowMissing: boolean
  /** every location of the providers, once, with the providers that read it (in config order) */
  readonly locations: readonly { loc: Location; providers: CompiledProvider[] }[]

  constructor(providers: CompiledProvider[], allowMissing: boolean) {
    this.allowMissing = allowMissing
    const byId = new Map<string, { loc: Location; providers: CompiledProvider[] }>()
    for (const p of providers) {
      for (const loc of p.locations) {
        let e = byId.get(loc.id)
        if (e === undefined) byId.set(loc.id, (e = { loc, providers: [] }))
        e.providers.push(p)
      }
    }
    this.locations = [...byId.values()]
  }
}

function compileRequirement(
  r: JwtRequirement,
  providers: Map<string, CompiledProvider>,
  path: string,
  issues: ConfigIssue[],
): Requirement {
  const list: CompiledProvider[] = []
  let allowMissing = r.allow_missing !== undefined
  const named = (name: string, p: string) => {
    const found = providers.get(name)
    if (found === undefined) issues.push({ path: p, message: `no provider is called "${name}"` })
    else list.push(found)
  }
  if (r.provider_name !== undefined) named(r.provider_name, `${path}.provider_name`)
  r.requires_any?.requirements.forEach((x, i) => {
    if (x.provider_name !== undefined) named(x.provider_name, `${path}.requires_any.requirements[${i}].provider_name`)
    if (x.allow_missing !== undefined) allowMissing = true
  })
  return new Requirement(list, allowMissing)
}

interface Rule {
  readonly prefix: string | undefined
  readonly path: string | undefined
  readonly req: Requirement
}

export class JwtAuthnFilterFactory implements HttpFilterFactory {
  readonly name: string
  readonly stats: JwtAuthnStats
  private readonly rules: readonly Rule[]
  private readonly bypassCors: boolean

  constructor(name: string, cfg: JwtAuthentication, path: string, issues: ConfigIssue[], hcm: HttpConnManagerStats) {
    this.name = name
    this.stats = hcm.filterStats('jwt_authn', JwtAuthnStats)
    const providers = new Map<string, CompiledProvider>()
    for (const [n, p] of Object.entries(cfg.providers ?? {}))
      providers.set(n, new CompiledProvider(n, p, `${path}.providers.${n}`, issues))
    const named = new Map<string, Requirement>()
    for (const [n, r] of Object.entries(cfg.requirement_map ?? {}))
      named.set(n, compileRequirement(r, providers, `${path}.requirement_map.${n}`, issues))
    const rules: Rule[] = []
    ;(cfg.rules ?? []).forEach((r, i) => {
      const p = `${path}.rules[${i}]`
      let req: Requirement | undefined
      if (r.requires !== undefined) req = compileRequirement(r.requires, providers, `${p}.requires`, issues)
      else {
        req = named.get(r.requirement_name!)
        if (req === undefined)
          issues.push({ path: `${p}.requirement_name`, message: `requirement_map has no "${r.requirement_name}"` })
      }
      if (req !== undefined) rules.push({ prefix: r.match.prefix, path: r.match.path, req })
    })
    this.rules = rules
    this.bypassCors = cfg.bypass_cors_preflight === true
    if (providers.size > 0) loadJose().catch(() => {})
  }

  create(cb: FilterCallbacks, _perRoute: unknown): StreamFilter | null {
    const head = cb.head
    if (head === null) return null
    const req = this.requirementFor(head)
    if (req === null) return null
    return new JwtAuthnFilter(this.stats, req, cb)
  }

  private requirementFor(head: RequestHead): Requirement | null {
    if (
      this.bypassCors &&
      head.method === 'OPTIONS' &&
      head.headers.has('origin') &&
      head.headers.has('access-control-request-method')
    )
      return null
    const q = head.path.indexOf('?')
    const path = q < 0 ? head.path : head.path.slice(0, q)
    for (const r of this.rules) {
      if (r.prefix !== undefined ? path.startsWith(r.prefix) : path === r.path) return r.req
    }
    return null
  }
}

/** A token and where it was found. */
interface Found {
  token: string
  entry: { loc: Location; providers: CompiledProvider[] }
}

function findToken(req: Requirement, head: RequestHead): Found | null {
  for (const entry of req.locations) {
    const loc = entry.loc
    let token: string | null = null
    if (loc.kind === 'header') {
      const value = head.headers.get(loc.name)
      if (value !== undefined) {
        if (loc.prefix === '') token = value.trim()
        else if (value.length > loc.prefix.length && value.slice(0, loc.prefix.length).toLowerCase() === loc.prefix)
          token = value.slice(loc.prefix.length).trim()
      }
    } else if (loc.kind === 'param') token = queryParam(head.path, loc.name)
    else token = cookie(head.headers.get('cookie'), loc.name)
    if (token !== null && token !== '') return { token, entry }
  }
  return null
}

function queryParam(path: string, name: string): string | null {
  const q = path.indexOf('?')
  if (q < 0) return null
  for (const part of path.slice(q + 1).split('&')) {
    const eq = part.indexOf('=')
    const k = eq < 0 ? part : part.slice(0, eq)
    if (k !== name) continue
    try {
      return decodeURIComponent(eq < 0 ? '' : part.slice(eq + 1).replace(/\+/g, ' '))
    } catch {
      return null
    }
  }
  return null
}

function cookie(header: string | undefined, name: string): string | null {
  if (header === undefined) return null
  for (const part of header.split(';')) {
    const eq = part.indexOf('=')
    if (eq > 0 && part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim()
  }
  return null
}

/** A failed check: the status and Envoy's body. */
class Denied {
  readonly status: number
  readonly message: string
  constructor(message: string, status = 401) {
    this.status = status
    this.message = message
  }
}

interface Verified {
  provider: CompiledProvider
  payload: Record<string, unknown>
  payloadSegment: string
}

const B64URL = /^[A-Za-z0-9_-]*$/

function decodeSegment(seg: string): unknown {
  if (!B64URL.test(seg)) throw new SyntaxError('base64')
  return JSON.parse(Buffer.from(seg, 'base64url').toString('utf8'))
}

/** Parses and checks a token against the providers that read its location; resolves to the verdict. */
export async function verifyToken(found: Found, nowS: number): Promise<Verified | Denied> {
  const token = found.token
  const parts = token.split('.')
  if (parts.length !== 3)
    return new Denied('Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections')
  let header: Record<string, unknown>
  try {
    header = decodeSegment(parts[0]!) as Record<string, unknown>
  } catch (e) {
    return new Denied(
      (e as Error).message === 'base64'
        ? 'Jwt header is an invalid Base64url encoded'
        : 'Jwt header is an invalid JSON',
    )
  }
  if (header === null || typeof header !== 'object') return new Denied('Jwt header is an invalid JSON')
  const alg = header.alg
  if (typeof alg !== 'string') return new Denied('Jwt header [alg] field is required and must be a string')
  if (!isKnownAlg(alg)) return new Denied('Jwt header [alg] is not supported')
  const kid = header.kid
  if (kid !== undefined && typeof kid !== 'string') return new Denied('Jwt header [kid] field is not a string')
  let payload: Record<string, unknown>
  try {
    payload = decodeSegment(parts[1]!) as Record<string, unknown>
  } catch (e) {
    return new Denied(
      (e as Error).message === 'base64'
        ? 'Jwt payload is an invalid Base64url encoded'
        : 'Jwt payload is an invalid JSON',
    )
  }
  if (payload === null || typeof payload !== 'object' || Array.isArray(payload))
    return new Denied('Jwt payload is an invalid JSON')
  const iss = payload.iss
  if (iss !== undefined && typeof iss !== 'string') return new Denied('Jwt payload [iss] field is not a string')
  const provider = found.entry.providers.find((p) => p.issuer === '' || p.issuer === iss)
  if (provider === undefined) return new Denied('Jwt issuer is not configured')
  const { exp, nbf } = payload
  if (exp !== undefined && typeof exp !== 'number') return new Denied('Jwt payload [exp] field is not a number')
  if (nbf !== undefined && typeof nbf !== 'number') return new Denied('Jwt payload [nbf] field is not a number')
  if (nbf !== undefined && nowS + provider.skewS < nbf) return new Denied('Jwt not yet valid')
  if (exp !== undefined && exp !== 0 && nowS > exp + provider.skewS) return new Denied('Jwt is expired')
  if (provider.audiences.length > 0) {
    const aud = payload.aud
    const list = typeof aud === 'string' ? [aud] : Array.isArray(aud) ? aud : []
    if (!list.some((a) => provider.audiences.includes(a as string)))
      return new Denied('Audiences in Jwt are not allowed', 403)
  }
  if (!isAsymmetricAlg(alg)) return new Denied("Jwks doesn't have key to match kid or alg from Jwt")
  let set: KeySet
  try {
    set = await provider.keys.current()
  } catch {
    return new Denied('Jwks remote fetch is failed')
  }
  let keys = set.match(kid as string | undefined, alg)
  if (keys.length === 0) {
    const fresher = provider.keys.refetchForUnknownKey()
    if (fresher !== null) {
      try {
        keys = (await fresher).match(kid as string | undefined, alg)
      } catch {
        return new Denied('Jwks remote fetch is failed')
      }
    }
  }
  if (keys.length === 0) return new Denied("Jwks doesn't have key to match kid or alg from Jwt")
  const jose = await loadJose()
  for (const k of keys) {
    try {
      await jose.compactVerify(token, await k.key(jose, alg), { algorithms: [alg] })
      return { provider, payload, payloadSegment: parts[1]! }
    } catch {}
  }
  return new Denied('Jwt verification fails')
}

function claimAt(payload: Record<string, unknown>, path: readonly string[]): string | null {
  let v: unknown = payload
  for (const k of path) {
    if (v === null || typeof v !== 'object') return null
    v = (v as Record<string, unknown>)[k]
  }
  return typeof v === 'string' ? v : typeof v === 'number' || typeof v === 'boolean' ? String(v) : null
}

class JwtAuthnFilter implements StreamFilter {
  private readonly stats: JwtAuthnStats
  private readonly req: Requirement
  private readonly cb: FilterCallbacks
  private destroyed = false

  constructor(stats: JwtAuthnStats, req: Requirement, cb: FilterCallbacks) {
    this.stats = stats
    this.req = req
    this.cb = cb
  }

  decodeHeaders(head: RequestHead, _endStream: boolean): FilterStatus {
    const found = findToken(this.req, head)
    if (found === null) {
      if (this.req.allowMissing) {
        this.stats.allowed++
        return CONTINUE
      }
      this.deny(head, new Denied('Jwt is missing'), false)
      return STOP
    }
    verifyToken(found, Date.now() / 1000).then(
      (v) => this.done(head, found, v),
      () => this.done(head, found, new Denied('Jwt verification fails')),
    )
    return STOP
  }

  onDestroy(): void {
    this.destroyed = true
  }

  private done(head: RequestHead, found: Found, v: Verified | Denied): void {
    if (this.destroyed) return
    if (v instanceof Denied) return this.deny(head, v, true)
    const cb = this.cb
    const { provider, payload } = v
    const iss = typeof payload.iss === 'string' ? payload.iss : ''
    const sub = typeof payload.sub === 'string' ? payload.sub : ''
    const aud = payload.aud
    cb.setMetadata(ISTIO_AUTHN, 'request.auth.principal', `${iss}/${sub}`)
    cb.setMetadata(
      ISTIO_AUTHN,
      'request.auth.audiences',
      typeof aud === 'string' ? [aud] : Array.isArray(aud) ? aud.filter((a) => typeof a === 'string') : [],
    )
    if (typeof payload.azp === 'string') cb.setMetadata(ISTIO_AUTHN, 'request.auth.presenter', payload.azp)
    cb.setMetadata(ISTIO_AUTHN, 'request.auth.claims', payload)
    if (provider.payloadInMetadata !== '') cb.setMetadata(JWT_AUTHN_METADATA, provider.payloadInMetadata, payload)
    const h = head.headers
    if (!provider.forward && found.entry.loc.kind === 'header') h.remove(found.entry.loc.name)
    if (provider.payloadHeader !== '') {
      let seg = v.payloadSegment
      if (provider.padPayload) seg += '='.repeat((4 - (seg.length % 4)) % 4)
      h.set(provider.payloadHeader, seg)
    }
    for (const c of provider.claimHeaders) {
      const value = claimAt(payload, c.path)
      if (value !== null) h.set(c.header, value)
    }
    this.stats.allowed++
    cb.continueDecoding()
  }

  private deny(head: RequestHead, d: Denied, invalid: boolean): void {
    this.stats.denied++
    const q = head.path.indexOf('?')
    const realm = `${head.scheme}://${head.authority}${q < 0 ? head.path : head.path.slice(0, q)}`
    const h = new Headers([
      'content-type',
      'text/plain',
      'www-authenticate',
      invalid ? `Bearer realm="${realm}", error="invalid_token"` : `Bearer realm="${realm}"`,
    ])
    this.cb.sendLocalReply(d.status, '', `jwt_authn_access_denied{${d.message.replaceAll(' ', '_')}}`, d.message, h)
  }
}
