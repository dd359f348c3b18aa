/**
 * The live decision record (Loom's own filter, `loom.filters.http.explain.v1alpha1.Explain`): a request that carries
 * `x-loom-explain` from a caller the filter's `principals` allow is recorded by this proxy: the route it matched, the
 * cluster and host, the attempts, the RBAC decision and policy, the fault applied, a route timeout that fired, the
 * local reply's reason. The record goes into the access log entry (`loom_decisions`) and onto the response, as one
 * `x-loom-explain-record` header per proxy on the path (the innermost first). The header goes on upstream, so the
 * next proxy records too if its own config allows the caller it sees.
 *
 * - A caller the principals do not allow (or any caller, without principals) has the header removed, so neither
 *   this proxy nor any later one acts on it.
 * - The cost for a request without the header is one header lookup in `create`; nothing is allocated. A recorded
 *   request gets one filter object; the record is built from what the stream already keeps (its route, cluster,
 *   host, flags, reason, the RBAC filters' metadata), when the response starts and when the access log is written.
 */
import type { Explain } from '../../../../config/envoy.js'
import type { ConfigIssue } from '../../../../core/errors.js'
import type { Test } from '../../../rbac/matcher.js'
import type { Headers } from '../../headers.js'
import { FaultPolicy } from '../fault/fault.js'
import type { FilterCallbacks, HttpFilterFactory, StreamFilter } from '../filter.js'
import { compilePrincipal, type RbacInput } from '../rbac/matcher.js'

export const EXPLAIN_HEADER = 'x-loom-explain'
export const RECORD_HEADER = 'x-loom-explain-record'
/** the dynamic metadata namespace the access log reads the recording filter from */
export const EXPLAIN_METADATA = 'loom.explain'
const RBAC_METADATA = 'envoy.filters.http.rbac'

/** What the record reads of its stream (ActiveStream has all of it; the filter callbacks carry the rest). */
interface StreamState extends FilterCallbacks {
  readonly status?: number
  readonly flag?: string
  readonly reason?: string
  readonly cluster?: { readonly name: string } | null
  readonly host?: { readonly key: string } | null
  attemptHosts?(): string[]
}

/** One proxy's decisions for one request (snake_case: an access log field). */
export interface DecisionRecord {
  proxy: string
  route: string | null
  virtual_host: string | null
  cluster: string | null
  upstream_host: string | null
  /** the hosts of every attempt, first to last (more than one: retries) */
  attempts: string[]
  /** each enforced RBAC filter's result and effective policy */
  rbac: { result: string; policy: string | null }[]
  /** `abort 500`, `delay 7000ms` */
  fault: string | null
  /** the route timeout, ms (0: none) */
  timeout_ms: number | null
  timed_out: boolean
  response_code: number
  response_flags: string
  /** the local reply's reason (x-loom-reason), when the proxy answered itself */
  reason: string | null
}

export class ExplainFilterFactory implements HttpFilterFactory {
  readonly name: string
  readonly label: string
  private readonly permitted: Test<RbacInput> | null

  constructor(name: string, cfg: Explain, path: string, issues: ConfigIssue[], nodeId = '') {
    this.name = name
    // the proxy by its node id's workload part (`reviews-v1.default`), then the config's label (`inbound`)
    const pod = nodeId.split('~')[2] ?? nodeId
    const label = cfg.label ?? ''
    this.label = pod === '' ? label : label === '' ? pod : `${pod}:${label}`
    const tests = (cfg.principals ?? []).map((p, i) => compilePrincipal(p, `${path}.principals[${i}]`, issues))
    this.permitted =
      tests.length === 0
        ? null
        : (r) => {
            for (const t of tests) if (t(r)) return true
            return false
          }
  }

  create(cb: FilterCallbacks, _perRoute: unknown): StreamFilter | null {
    const head = cb.head
    if (head === null) return null
    const h = head.headers
    if (h.get(EXPLAIN_HEADER) === undefined) return null
    if (this.permitted === null || !this.permitted(cb as RbacInput)) {
      h.remove(EXPLAIN_HEADER)
      return null
    }
    const f = new ExplainFilter(this.label, cb as StreamState)
    cb.setMetadata(EXPLAIN_METADATA, 'recorder', f)
    return f
  }
}

export class ExplainFilter implements StreamFilter {
  private readonly label: string
  private readonly s: StreamState

  constructor(label: string, s: StreamState) {
    this.label = label
    this.s = s
  }

  /** as dynamic metadata serialized (an access log that writes metadata): the record, not the stream */
  toJSON(): DecisionRecord {
    return this.record()
  }

  encodeHeaders(status: number, headers: Headers): void {
    headers.add(RECORD_HEADER, compact(this.record(status)))
  }

  record(status = this.s.status ?? 0): DecisionRecord {
    const s = this.s
    const route = s.route
    const flags = s.flag ?? ''
    const rbac: DecisionRecord['rbac'] = []
    const md = s.metadata(RBAC_METADATA)
    if (md !== undefined) {
      for (const [k, v] of Object.entries(md)) {
        if (!k.endsWith('enforced_engine_result')) continue
        const policy = md[`${k.slice(0, -'enforced_engine_result'.length)}enforced_effective_policy_id`]
        rbac.push({ result: String(v), policy: typeof policy === 'string' ? policy : null })
      }
    }
    let fault: string | null = null
    if (hasFlag(flags, 'FI')) fault = `abort ${status}`
    else if (hasFlag(flags, 'DI')) {
      let delay: number | null = null
      for (const c of route?.filterConfigs?.values() ?? []) if (c instanceof FaultPolicy) delay = c.delayMs
      fault = delay !== null && delay > 0 ? `delay ${delay}ms` : 'delay'
    }
    return {
      proxy: this.label,
      route: route?.name ?? null,
      virtual_host: route?.vhostName ?? null,
      cluster: s.cluster?.name ?? null,
      upstream_host: s.host?.key ?? null,
      attempts: s.attemptHosts?.() ?? [],
      rbac,
      fault,
      timeout_ms: route === null ? null : route.timeoutMs,
      timed_out: hasFlag(flags, 'UT'),
      response_code: status,
      response_flags: flags === '' ? '-' : flags,
      reason: s.reason === undefined || s.reason === '' ? null : s.reason,
    }
  }
}

function hasFlag(flags: string, f: string): boolean {
  return flags === f || flags.split(',').includes(f)
}

/** The record as one header value: `proxy=… route=… cluster=… …` (values have no spaces). */
export function compact(r: DecisionRecord): string {
  const parts = [`proxy=${r.proxy || '-'}`]
  if (r.route !== null) parts.push(`route=${r.route}`)
  if (r.cluster !== null) parts.push(`cluster=${r.cluster}`)
  if (r.upstream_host !== null) parts.push(`host=${r.upstream_host}`)
  if (r.attempts.length > 1) parts.push(`attempts=${r.attempts.length}`)
  for (const x of r.rbac) parts.push(`rbac=${x.result}${x.policy === null ? '' : `:${x.policy}`}`)
  if (r.fault !== null) parts.push(`fault=${r.fault.replace(' ', ':')}`)
  if (r.timed_out) parts.push(`timeout=${r.timeout_ms}ms:fired`)
  parts.push(`status=${r.response_code}`)
  if (r.response_flags !== '-') parts.push(`flags=${r.response_flags}`)
  if (r.reason !== null) parts.push(`reason=${r.reason.replace(/\s+/g, '_')}`)
  return parts.join(' ')
}

/** The access log's `loom_decisions`: the record of a stream this proxy recorded, or undefined. */
export function decisionsOf(s: Pick<FilterCallbacks, 'metadata'>): DecisionRecord | undefined {
  const f = s.metadata(EXPLAIN_METADATA)?.recorder
  return f instanceof ExplainFilter ? f.record() : undefined
}
