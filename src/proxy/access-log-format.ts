/**
 * Envoy's access log formats (`log_format`, a SubstitutionFormatString): `text_format_source` / `text_format`
 * strings and `json_format` objects with `%COMMAND%` operators, compiled once into functions of an access log
 * entry (the object hcm.ts and tcp-proxy.ts build at the end of a stream or connection).
 *
 * The operators read the entry's fields (`%RESPONSE_CODE%` is `response_code`), the request headers (`%REQ(X)%`) and
 * the dynamic metadata (`%DYNAMIC_METADATA(ns:key)%`); see OPERATORS for the list. An operator Loom does not know is
 * a config error naming it. Text formats write `-` for a missing value, JSON formats `null` (or leave the key out
 * with `omit_empty_values`); a JSON value that is one operator alone keeps its type (numbers stay numbers).
 */
import { hostname } from 'node:os'

/** What an operator reads: the entry, and for HTTP the request headers and the dynamic metadata. */
export interface FormatInput {
  readonly entry: Readonly<Record<string, unknown>>
  /** a request header (lower-case name), undefined without one (and on TCP) */
  header(name: string): string | undefined
  metadata(namespace: string): Readonly<Record<string, unknown>> | undefined
}

type Value = string | number | boolean | null
type Getter = (i: FormatInput) => unknown

/** `%NAME%` → the entry field it reads. */
const FIELDS: Record<string, string> = {
  START_TIME: 'start_time',
  PROTOCOL: 'protocol',
  RESPONSE_CODE: 'response_code',
  RESPONSE_FLAGS: 'response_flags',
  RESPONSE_CODE_DETAILS: 'response_code_details',
  CONNECTION_TERMINATION_DETAILS: 'connection_termination_details',
  UPSTREAM_TRANSPORT_FAILURE_REASON: 'upstream_transport_failure_reason',
  BYTES_RECEIVED: 'bytes_received',
  BYTES_SENT: 'bytes_sent',
  UPSTREAM_HOST: 'upstream_host',
  UPSTREAM_CLUSTER: 'upstream_cluster',
  UPSTREAM_CLUSTER_RAW: 'upstream_cluster',
  UPSTREAM_LOCAL_ADDRESS: 'upstream_local_address',
  DOWNSTREAM_LOCAL_ADDRESS: 'downstream_local_address',
  DOWNSTREAM_REMOTE_ADDRESS: 'downstream_remote_address',
  DOWNSTREAM_DIRECT_REMOTE_ADDRESS: 'downstream_direct_remote_address',
  REQUESTED_SERVER_NAME: 'requested_server_name',
  ROUTE_NAME: 'route_name',
  DOWNSTREAM_PEER_URI_SAN: 'downstream_peer_principal',
  UPSTREAM_PEER_URI_SAN: 'upstream_peer_principal',
  TRACE_ID: 'trace_id',
  UPSTREAM_REQUEST_ATTEMPT_COUNT: 'upstream_request_attempt_count',
}

const withoutPort = (a: unknown): unknown => {
  if (typeof a !== 'string') return a
  if (a.startsWith('[')) return a.slice(1, a.indexOf(']'))
  const i = a.lastIndexOf(':')
  return i > 0 && a.indexOf(':') === i ? a.slice(0, i) : a
}

const field =
  (name: string): Getter =>
  (i) =>
    i.entry[name]

/** Request pseudo-headers as the entry has them (the original path: Loom keeps it, not a header). */
const PSEUDO: Record<string, string> = {
  ':method': 'method',
  ':authority': 'authority',
  host: 'authority',
  ':path': 'path',
  'x-envoy-original-path': 'path',
  'user-agent': 'user_agent',
  'x-request-id': 'request_id',
  'x-forwarded-for': 'x_forwarded_for',
}

function requestHeader(name: string): Getter {
  const f = PSEUDO[name]
  if (f !== undefined) return field(f)
  if (name === ':scheme') return (i) => i.header(':scheme') ?? null
  return (i) => i.header(name) ?? null
}

/** The operators with arguments, and those with none that are not plain fields. */
function operator(op: string, arg: string | null): Getter | string {
  if (arg === null) {
    const f = FIELDS[op]
    if (f !== undefined) return field(f)
    if (op.endsWith('_WITHOUT_PORT')) {
      const g = FIELDS[op.slice(0, -'_WITHOUT_PORT'.length)]
      if (g !== undefined) return (i) => withoutPort(i.entry[g])
    }
    if (op === 'DURATION') return (i) => (typeof i.entry.duration === 'number' ? Math.floor(i.entry.duration) : null)
    if (op === 'HOSTNAME') {
      const h = hostname()
      return () => h
    }
    return `unknown command operator %${op}%`
  }
  switch (op) {
    case 'START_TIME':
      // a strftime format is not applied: the time is always ISO 8601 (UTC, milliseconds)
      return field('start_time')
    case 'REQ': {
      const alt = arg.toLowerCase().split('?')
      if (alt.length > 2 || alt.some((a) => a === '')) return `%REQ(${arg})%: one header or two separated by "?"`
      const first = requestHeader(alt[0]!)
      if (alt.length === 1) return first
      const second = requestHeader(alt[1]!)
      return (i) => first(i) ?? second(i)
    }
    case 'RESP':
      if (arg.toLowerCase() === 'x-envoy-upstream-service-time') return field('upstream_service_time')
      return `%RESP(${arg})%: response headers are not kept for the access log (only X-ENVOY-UPSTREAM-SERVICE-TIME)`
    case 'DYNAMIC_METADATA': {
      const [ns, ...path] = arg.split(':')
      if (ns === undefined || ns === '') return `%DYNAMIC_METADATA(${arg})%: a namespace is required`
      return (i) => {
        let v: unknown = i.metadata(ns)
        for (const k of path) v = v !== null && typeof v === 'object' ? (v as Record<string, unknown>)[k] : undefined
        return v ?? null
      }
    }
    default:
      return `unknown command operator %${op}(...)%`
  }
}

/** One compiled piece of a format: literal text, or an operator with its length limit. */
type Piece = string | { get: Getter; max: number }

const OP = /%([A-Z_]+)(?:\(([^)]*)\))?(?::(\d+))?%/g

/** Parses a format string into pieces; errors are pushed to `errors`. `%%` is a literal `%`. */
function parse(format: string, errors: string[]): Piece[] {
  const out: Piece[] = []
  let last = 0
  let lit = ''
  for (let i = 0; i < format.length; ) {
    if (format[i] !== '%') {
      i++
      continue
    }
    if (format[i + 1] === '%') {
      lit += `${format.slice(last, i)}%`
      i += 2
      last = i
      continue
    }
    OP.lastIndex = i
    const m = OP.exec(format)
    if (m === null || m.index !== i) {
      errors.push(`a "%" at offset ${i} does not start a command operator (write %% for a literal %)`)
      break
    }
    lit += format.slice(last, i)
    if (lit !== '') out.push(lit)
    lit = ''
    const g = operator(m[1]!, m[2] ?? null)
    if (typeof g === 'string') errors.push(g)
    else out.push({ get: g, max: m[3] === undefined ? 0 : Number(m[3]) })
    i += m[0].length
    last = i
  }
  lit += format.slice(last)
  if (lit !== '') out.push(lit)
  return out
}

function text(v: unknown, max: number): string {
  let s: string
  if (v === null || v === undefined || v === '') return '-'
  if (typeof v === 'string') s = v
  else if (typeof v === 'object') s = JSON.stringify(v)
  else s = String(v)
  return max > 0 && s.length > max ? s.slice(0, max) : s
}

function truncate(v: unknown, max: number): unknown {
  return max > 0 && typeof v === 'string' && v.length > max ? v.slice(0, max) : v
}

/** A compiled format: the whole line (newline included) for one entry. */
export type AccessLogFormatter = (i: FormatInput) => string

export interface LogFormatConfig {
  text_format?: string | undefined
  text_format_source?: { inline_string?: string | undefined } | undefined
  json_format?: Record<string, unknown> | undefined
  omit_empty_values?: boolean | undefined
}

function compileText(format: string, errors: string[]): AccessLogFormatter {
  const pieces = parse(format, errors)
  return (i) => {
    let s = ''
    for (const p of pieces) s += typeof p === 'string' ? p : text(p.get(i), p.max)
    return s
  }
}

type JsonNode = (i: FormatInput) => unknown

function compileJsonValue(v: unknown, omitEmpty: boolean, errors: string[], path: string): JsonNode {
  if (typeof v === 'string') {
    const pieces = parse(v, errors)
    if (pieces.length === 1 && typeof pieces[0] !== 'string') {
      const { get, max } = pieces[0]!
      return (i) => {
        const x = truncate(get(i), max)
        return x === undefined || x === '' ? null : x
      }
    }
    if (pieces.every((p) => typeof p === 'string')) return () => v.replace(/%%/g, '%')
    return (i) => {
      let s = ''
      for (const p of pieces) s += typeof p === 'string' ? p : text(p.get(i), p.max)
      return s
    }
  }
  if (v !== null && typeof v === 'object' && !Array.isArray(v)) {
    const keys = Object.entries(v as Record<string, unknown>).map(
      ([k, x]) => [k, compileJsonValue(x, omitEmpty, errors, `${path}.${k}`)] as const,
    )
    return (i) => {
      const out: Record<string, unknown> = {}
      for (const [k, f] of keys) {
        const x = f(i)
        if (omitEmpty && (x === null || x === '')) continue
        out[k] = x
      }
      return out
    }
  }
  if (Array.isArray(v)) {
    errors.push(`${path}: lists are not supported in json_format (Envoy's neither)`)
    return () => null
  }
  const constant = v as Value
  return () => constant
}

/**
 * Compiles a `log_format`; null when there is none (the proxy's own JSON entry is written). Errors (unknown
 * operators, malformed ones) are returned for the config's validation.
 */
export function compileLogFormat(cfg: LogFormatConfig | undefined): {
  formatter: AccessLogFormatter | null
  errors: string[]
} {
  const errors: string[] = []
  if (cfg === undefined) return { formatter: null, errors }
  const textFormat = cfg.text_format_source?.inline_string ?? cfg.text_format
  if (textFormat !== undefined) return { formatter: compileText(textFormat, errors), errors }
  if (cfg.json_format !== undefined) {
    const node = compileJsonValue(cfg.json_format, cfg.omit_empty_values === true, errors, 'json_format')
    return { formatter: (i) => `${JSON.stringify(node(i))}\n`, errors }
  }
  return { formatter: null, errors }
}

/** Every operator Loom supports, for docs and error messages. */
export const SUPPORTED_OPERATORS = [
  ...Object.keys(FIELDS),
  'DURATION',
  'HOSTNAME',
  'REQ(X?Y):Z',
  'RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)',
  'DYNAMIC_METADATA(NS:KEY...)',
  'START_TIME(format)',
  '<NAME>_WITHOUT_PORT',
]
