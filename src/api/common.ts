/**
 * Building blocks shared by the Istio resource schemas: durations as Istio writes them, ports, host names, string
 * matches, selectors, and the rule helpers the semantic checks use. Field names and ranges follow Istio's API
 * reference; the checks mirror what Istio's admission webhook rejects.
 */
import { isIP } from 'node:net'
import type { ConfigIssue } from '../core/errors.js'
import { compileFullMatch } from '../proxy/route/regex.js'
import { oneOf, v } from '../config/schema.js'

export const opt = v.optional
export const str = v.string()
export const bool = v.boolean()

/** A string that must satisfy `rule`, which returns an error message or null. */
export function rule(check: (s: string) => string | null) {
  return v.pipe(
    v.string(),
    v.check(
      (s) => check(s) === null,
      (issue) => check(issue.input as string) ?? 'invalid value',
    ),
  )
}

/** One of Istio's enum values, spelled as Istio spells them. */
export function enumOf<const T extends readonly [string, ...string[]]>(values: T) {
  return v.picklist(
    values,
    (issue) => `invalid value ${JSON.stringify(issue.input)}; expected one of ${values.join(', ')}`,
  )
}

/** A non-empty string. */
export const nonEmpty = rule((s) => (s === '' ? 'must not be empty' : null))

// === numbers ===

/** An integer in [min, max], with a message that says so. */
export function intRange(min: number, max: number, what = 'value') {
  return v.pipe(
    v.number(),
    v.check((n: number) => Number.isInteger(n), `${what} must be an integer`),
    v.check((n: number) => n >= min && n <= max, `${what} must be between ${min} and ${max}`),
  )
}

export const uint32 = intRange(0, 0xffffffff)
export const int32 = intRange(-0x80000000, 0x7fffffff)
export const nonNegInt32 = intRange(0, 0x7fffffff, 'value (int32)')
/** A port number; Istio rejects 0 wherever a port is given. */
export const port = intRange(1, 65535, 'port number')
/** A percentage as an integer 0..100 (deprecated `percent` style fields). */
export const percentInt = intRange(0, 100, 'percent')

/** Istio's `Percent` message: a double in 0..100, where values below 0.0001 (other than 0) cannot be honoured. */
export const Percent = v.strictObject({
  value: opt(
    v.pipe(
      v.number(),
      v.check(
        (n) => n === 0 || (n >= 0.0001 && n <= 100),
        (issue) => `percentage ${String(issue.input)} is neither 0.0, nor in range [0.0001, 100.0]`,
      ),
    ),
  ),
})
export type Percent = v.InferOutput<typeof Percent>

// === durations ===

const UNIT_NS: Record<string, bigint> = {
  ns: 1n,
  us: 1_000n,
  µs: 1_000n,
  μs: 1_000n,
  ms: 1_000_000n,
  s: 1_000_000_000n,
  m: 60_000_000_000n,
  h: 3_600_000_000_000n,
}
const MS = 1_000_000n
const DURATION_RE = /^([-+]?)((?:(?:\d+(?:\.\d*)?|\.\d+)(?:ns|us|µs|μs|ms|s|m|h))+)$/
const DURATION_PART_RE = /(\d*)(?:\.(\d*))?(ns|us|µs|μs|ms|s|m|h)/g

/**
 * Parses a duration as Istio accepts it (the Go/Kubernetes syntax, which includes proto3's `"1.5s"`):
 * `"1s"`, `"0.5s"`, `"500ms"`, `"3m"`, `"1h30m"`, `"0"`. Returns nanoseconds, or null if the text is not a duration.
 */
export function parseDurationNs(text: string): bigint | null {
  if (text === '0') return 0n
  const m = DURATION_RE.exec(text)
  if (m === null) return null
  let total = 0n
  for (const part of m[2]!.matchAll(DURATION_PART_RE)) {
    const unit = UNIT_NS[part[3]!]!
    const frac = part[2] ?? ''
    total += BigInt(part[1] === '' ? '0' : part[1]!) * unit
    if (frac !== '') total += (BigInt(frac) * unit) / 10n ** BigInt(frac.length)
  }
  return m[1] === '-' ? -total : total
}

/** Milliseconds of an Istio duration string, or null. */
export function parseDurationMs(text: string): number | null {
  const ns = parseDurationNs(text)
  return ns === null ? null : Number(ns) / 1e6
}

function durationError(s: string, allowZero: boolean): string | null {
  const ns = parseDurationNs(s)
  if (ns === null) return `invalid duration ${JSON.stringify(s)} (use a number and a unit: "1s", "500ms", "1m", "1h")`
  if (allowZero && ns === 0n) return null
  if (ns < MS) return allowZero ? 'duration must not be negative' : 'duration must be at least 1ms'
  if (ns % MS !== 0n) return 'only durations to ms precision are supported'
  return null
}

/** A duration of at least 1ms, in whole milliseconds (Istio's rule for timeouts, intervals and the like). */
export const duration = rule((s) => durationError(s, false))
/** A duration that may also be zero (where zero has a meaning: "disabled", a session cookie). */
export const durationOrZero = rule((s) => durationError(s, true))

// === names and addresses ===

const LABEL_RE = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/
const ISTIO_LABEL_RE = /^[a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?$/
const WILDCARD_LABEL_RE = /^(?:\*|\*-)?[a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?$/

/** Kubernetes DNS-1123 label: lowercase alphanumerics and '-', at most 63 characters. */
export function isDns1123Label(s: string): boolean {
  return s.length <= 63 && LABEL_RE.test(s)
}

/** Kubernetes DNS-1123 subdomain: dot-separated labels, at most 253 characters. */
export function isDns1123Subdomain(s: string): boolean {
  return s.length > 0 && s.length <= 253 && s.split('.').every((l) => l.length <= 63 && LABEL_RE.test(l))
}

/** Istio's (case-insensitive) DNS label, used for subset names, port names and host labels. */
export function isIstioLabel(s: string): boolean {
  return s.length <= 63 && ISTIO_LABEL_RE.test(s)
}

export function isIpAddress(s: string): boolean {
  return isIP(s) !== 0
}

/** An IP address, or a CIDR block (`10.0.0.0/8`, `2001:db8::/32`). */
export function ipOrCidrError(s: string): string | null {
  const slash = s.indexOf('/')
  if (slash < 0) return isIpAddress(s) ? null : `${JSON.stringify(s)} is not a valid IP address`
  const addr = s.slice(0, slash)
  const bits = s.slice(slash + 1)
  const family = isIP(addr)
  const max = family === 4 ? 32 : 128
  if (family === 0 || !/^\d{1,3}$/.test(bits) || Number(bits) > max) {
    return `${JSON.stringify(s)} is not a valid CIDR block`
  }
  return null
}

function labelsError(domain: string, labels: string[]): string | null {
  const tld = labels.at(-1) ?? ''
  if (/^[+-]?\d+$/.test(tld)) {
    const d = JSON.stringify(domain)
    return `domain name ${d} invalid (top level domain ${JSON.stringify(tld)} cannot be all-numeric)`
  }
  for (let i = 0; i < labels.length; i++) {
    const l = labels[i]!
    if (i === labels.length - 1 && l === '' && i > 0) return null // a trailing dot: `istio.io.`
    if (!isIstioLabel(l)) return `domain name ${JSON.stringify(domain)} invalid (label ${JSON.stringify(l)} invalid)`
  }
  return null
}

function domainPreconditions(name: string): string | null {
  if (name.length === 0) return 'empty domain name not allowed'
  if (name.length > 255) return `domain name ${JSON.stringify(name)} too long (max 255)`
  return null
}

/** A fully qualified domain name (no wildcard). */
export function fqdnError(name: string): string | null {
  return domainPreconditions(name) ?? labelsError(name, name.split('.'))
}

/** A domain name that may start with a wildcard label: `*`, `*.example.com`, `reviews`. */
export function wildcardDomainError(name: string): string | null {
  const pre = domainPreconditions(name)
  if (pre !== null) return pre
  const dot = name.indexOf('.')
  const first = dot < 0 ? name : name.slice(0, dot)
  if (first.length > 63 || (first !== '*' && !WILDCARD_LABEL_RE.test(first))) {
    return `domain name ${JSON.stringify(name)} invalid (label ${JSON.stringify(first)} invalid)`
  }
  return dot < 0 ? null : labelsError(name, name.slice(dot + 1).split('.'))
}

/** A service host a route or rule points at: a (possibly wildcard) domain, never `*` alone. */
export function destinationHostError(host: string): string | null {
  if (host === '*') return 'invalid destination host * (a destination must name a service)'
  return wildcardDomainError(host)
}

/** A gateway reference: `name`, `namespace/name`, or the reserved `mesh`. */
export function gatewayNameError(name: string): string | null {
  const slash = name.indexOf('/')
  if (slash < 0) return fqdnError(name)
  const ns = name.slice(0, slash)
  const gw = name.slice(slash + 1)
  if (ns === '' || gw === '') return 'config namespace and gateway name cannot be empty'
  if (!isDns1123Label(ns)) return `invalid value for namespace: ${JSON.stringify(ns)}`
  if (!isDns1123Label(gw)) return `invalid value for gateway name: ${JSON.stringify(gw)}`
  return null
}

const NAME_RULE = "at most 63 alphanumerics, '-', '_' or '.', starting and ending with an alphanumeric"

/** Kubernetes qualified name (label and annotation keys): `[prefix/]name`. */
export function qualifiedNameError(key: string): string | null {
  const slash = key.lastIndexOf('/')
  const name = slash < 0 ? key : key.slice(slash + 1)
  if (slash >= 0 && !isDns1123Subdomain(key.slice(0, slash))) {
    return `key ${JSON.stringify(key)}: the prefix must be a DNS-1123 subdomain`
  }
  if (name.length === 0 || name.length > 63 || !/^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$/.test(name)) {
    return `key ${JSON.stringify(key)}: ${NAME_RULE}`
  }
  return null
}

/** Kubernetes label value: empty, or at most 63 alphanumerics, '-', '_' or '.', starting and ending alphanumeric. */
export function labelValueError(value: string): string | null {
  if (value === '') return null
  if (value.length > 63 || !/^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$/.test(value)) {
    return `label value ${JSON.stringify(value)}: ${NAME_RULE}`
  }
  return null
}

/** A label map as workloads carry it (Kubernetes rules for keys and values). */
export const Labels = v.record(rule(qualifiedNameError), rule(labelValueError))

/** A label map used to select workloads: no wildcards, no empty keys. */
export const SelectorLabels = v.record(
  rule((k) =>
    k === '' ? 'key must not be empty' : k.includes('*') ? 'wildcard not allowed in label key match' : null,
  ),
  rule((val) =>
    val.includes('*') ? 'wildcard not allowed in label value match' : val.length > 63 ? 'at most 63 characters' : null,
  ),
)

/** `networking.istio.io` workload selector: `{labels}`. */
export const WorkloadSelector = v.strictObject({ labels: opt(SelectorLabels) })
/** `security.istio.io` / `type.istio.io` workload selector: `{matchLabels}`. */
export const MatchLabelsSelector = v.strictObject({ matchLabels: opt(SelectorLabels) })

/** A reference to the resource a policy attaches to (Gateway API style). */
export const PolicyTargetReference = v.strictObject({
  group: opt(
    rule((s) =>
      s === '' || (s.length <= 253 && isDns1123Subdomain(s)) ? null : 'group must be empty or a DNS-1123 subdomain',
    ),
  ),
  kind: rule((s) => (/^[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?$/.test(s) && s.length <= 63 ? null : 'invalid kind')),
  name: rule((s) => (s.length >= 1 && s.length <= 253 ? null : 'name must be 1 to 253 characters')),
  namespace: opt(rule((s) => (s === '' ? null : 'cross namespace referencing is not currently supported'))),
})

// === HTTP ===

const TOKEN_RE = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/

/** An HTTP header name (a token; pseudo-headers such as `:authority` are allowed where Envoy can match them). */
export function headerNameError(name: string): string | null {
  if (name === '') return 'header name cannot be empty'
  const bare = name.startsWith(':') ? name.slice(1) : name
  return TOKEN_RE.test(bare) ? null : `${JSON.stringify(name)} is not a valid HTTP header name`
}

export function headerValueError(value: string): string | null {
  return /[\r\n\0]/.test(value) ? 'header value must not contain CR, LF or NUL' : null
}

export const HTTP_METHODS = new Set(['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'CONNECT', 'OPTIONS', 'TRACE'])

/** A regex as Istio takes it: RE2 syntax, compiled here so a bad pattern is rejected at load time. */
export const regex = rule((s) => {
  const r = compileFullMatch(s)
  return r.ok ? null : r.error
})

/** Istio's `StringMatch`: at most one of exact, prefix, regex (none set matches presence, for headers). */
export const StringMatch = v.pipe(
  v.strictObject({ exact: opt(str), prefix: opt(str), regex: opt(regex) }),
  oneOf(['exact', 'prefix', 'regex'], false),
)
export type StringMatch = v.InferOutput<typeof StringMatch>

// === protocols ===

const PROTOCOLS = new Set([
  'http',
  'http2',
  'https',
  'http_proxy',
  'grpc',
  'grpc-web',
  'tcp',
  'tls',
  'udp',
  'mongo',
  'redis',
  'mysql',
])

/** Istio port protocols, case-insensitive: HTTP, HTTPS, HTTP2, GRPC, GRPC-WEB, TCP, TLS, UDP, MONGO, REDIS, MYSQL... */
export function protocolError(p: string): string | null {
  return PROTOCOLS.has(p.toLowerCase())
    ? null
    : `unsupported protocol ${JSON.stringify(p)}; supported: ${[...PROTOCOLS].map((x) => x.toUpperCase()).join(', ')}`
}

export function isHttpProtocol(p: string): boolean {
  return ['http', 'http2', 'grpc', 'grpc-web', 'http_proxy'].includes(p.toLowerCase())
}

export function isTlsProtocol(p: string): boolean {
  return ['https', 'tls'].includes(p.toLowerCase())
}

// === semantic-check helpers ===

/** Collects semantic issues with their full field paths. */
export class Issues {
  readonly list: ConfigIssue[] = []
  add(path: string, message: string | null | undefined): void {
    if (message !== null && message !== undefined) this.list.push({ path, message })
  }
}

/** `base.key`, or `base["key"]` when the key is not a plain identifier (the same form as `formatPath`). */
export function field(base: string, key: string | number): string {
  if (typeof key === 'number') return `${base}[${key}]`
  if (/^[A-Za-z_][\w-]*$/.test(key)) return base === '' ? key : `${base}.${key}`
  return `${base}["${key}"]`
}

/** Istio's `exportTo` rules: `.`, `*`, a namespace (and `~` for ServiceEntry), no duplicates, `*` alone. */
export function checkExportTo(
  issues: Issues,
  path: string,
  exportTo: readonly string[] | undefined,
  namespace: string,
  serviceEntry = false,
): void {
  if (exportTo === undefined || exportTo.length === 0) return
  const seen = new Set<string>()
  exportTo.forEach((e, i) => {
    const p = field(path, i)
    const key = e === '.' ? namespace : e
    if (seen.has(key)) {
      issues.add(
        p,
        key !== e
          ? `duplicate entries in exportTo: . and current namespace ${namespace}`
          : `duplicate entries in exportTo for entry ${e}`,
      )
      return
    }
    seen.add(key)
    if (e === '~' && !serviceEntry) issues.add(p, '~ is only allowed in a ServiceEntry exportTo')
    else if (e !== '.' && e !== '*' && e !== '~' && !isDns1123Label(e)) {
      issues.add(p, `${JSON.stringify(e)} is not ".", "*" or a namespace name`)
    }
  })
  if (seen.has('*') && exportTo.length > 1) {
    issues.add(path, 'cannot have both public (*) and non-public exportTo values for a resource')
  }
  if (seen.has('~') && exportTo.length > 1) issues.add(path, 'cannot export service entry to no one (~) and someone')
}
