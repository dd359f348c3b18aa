/**
 * STRICT_DNS discovery: every endpoint's name is resolved (getaddrinfo, so /etc/hosts counts) and every address
 * becomes a host with the endpoint's port, weight, locality and priority. Resolution repeats every
 * dns_refresh_rate (or the records' TTL with respect_dns_ttl) on an unref'd timer.
 * - A name that does not exist (or has no address of the family) resolves to no hosts: its hosts are removed.
 * - Any other failure (timeout, SERVFAIL...) keeps the name's previous hosts and is retried on the next refresh.
 */
import { promises as dns, type LookupAddress } from 'node:dns'
import { log } from '../../core/log.js'
import type { HealthStatus, HostSpec, Locality } from './host.js'
import type { DnsLookupFamily } from './settings.js'

/** `dns.promises.lookup` with `all: true`; replaceable in tests. */
export type DnsLookup = (hostname: string, options: { all: true; family: 0 | 4 | 6 }) => Promise<LookupAddress[]>

/** TTL in seconds of a name's records of one family, or undefined when unknown; replaceable in tests. */
export type DnsTtlLookup = (hostname: string, family: 4 | 6) => Promise<number | undefined>

export const defaultLookup: DnsLookup = (hostname, options) => dns.lookup(hostname, options)

export const defaultTtlLookup: DnsTtlLookup = async (hostname, family) => {
  const records =
    family === 4 ? await dns.resolve4(hostname, { ttl: true }) : await dns.resolve6(hostname, { ttl: true })
  let ttl: number | undefined
  for (const r of records) ttl = ttl === undefined ? r.ttl : Math.min(ttl, r.ttl)
  return ttl
}

const notFound = new Set(['ENOTFOUND', 'ENODATA', 'EAI_NONAME', 'EAI_NODATA'])

async function lookupFamily(lookup: DnsLookup, name: string, family: 0 | 4 | 6): Promise<string[]> {
  try {
    const found = await lookup(name, { all: true, family })
    const out: string[] = []
    for (const a of found) if (!out.includes(a.address)) out.push(a.address)
    return out
  } catch (err) {
    if (notFound.has((err as NodeJS.ErrnoException).code ?? '')) return []
    throw err
  }
}

/** Addresses of `name` by Envoy's dns_lookup_family. [] when the name has none; throws on resolver failure. */
export async function resolveAddresses(lookup: DnsLookup, name: string, family: DnsLookupFamily): Promise<string[]> {
  switch (family) {
    case 'V4_ONLY':
      return lookupFamily(lookup, name, 4)
    case 'V6_ONLY':
      return lookupFamily(lookup, name, 6)
    case 'ALL':
      return lookupFamily(lookup, name, 0)
    case 'V4_PREFERRED': {
      const v4 = await lookupFamily(lookup, name, 4)
      return v4.length > 0 ? v4 : lookupFamily(lookup, name, 6)
    }
    case 'AUTO': {
      const v6 = await lookupFamily(lookup, name, 6)
      return v6.length > 0 ? v6 : lookupFamily(lookup, name, 4)
    }
  }
}

/** One endpoint of the load assignment, to be resolved. */
export interface DnsTarget {
  name: string
  port: number
  /** endpoint.hostname, else the name. */
  hostname: string
  weight: number
  priority: number
  locality?: Locality
  /** the LocalityLbEndpoints' load_balancing_weight */
  localityWeight?: number
  healthStatus?: HealthStatus
}

export interface DnsDiscoveryOptions {
  refreshRateMs: number
  family: DnsLookupFamily
  respectTtl: boolean
  lookup?: DnsLookup
  ttlLookup?: DnsTtlLookup
}

interface TargetState {
  target: DnsTarget
  /** Hosts from the last successful resolution; null until one succeeded. */
  hosts: HostSpec[] | null
  addresses: string
}

export class DnsDiscovery {
  readonly #cluster: string
  readonly #targets: TargetState[]
  readonly #options: DnsDiscoveryOptions
  readonly #apply: (hosts: HostSpec[]) => void
  #first: Promise<void> | null = null
  #timer: NodeJS.Timeout | null = null
  #stopped = false

  /** `apply` receives the hosts of every target after each round of resolution. */
  constructor(
    cluster: string,
    targets: readonly DnsTarget[],
    options: DnsDiscoveryOptions,
    apply: (hosts: HostSpec[]) => void,
  ) {
    this.#cluster = cluster
    this.#targets = targets.map((target) => ({ target, hosts: null, addresses: '' }))
    this.#options = options
    this.#apply = apply
  }

  /** Resolves every target once (each succeeding or failing), then keeps refreshing. Idempotent. */
  start(): Promise<void> {
    if (this.#first === null) {
      this.#stopped = false
      this.#first = this.#cycle()
    }
    return this.#first
  }

  stop(): void {
    this.#stopped = true
    if (this.#timer !== null) clearTimeout(this.#timer)
    this.#timer = null
  }

  async #cycle(): Promise<void> {
    const ttls = await Promise.all(this.#targets.map((t) => this.#resolve(t)))
    if (this.#stopped) return
    this.#apply(this.#targets.flatMap((t) => t.hosts ?? []))
    let delay = this.#options.refreshRateMs
    if (this.#options.respectTtl) {
      let min: number | undefined
      for (const ttl of ttls) if (ttl !== undefined && ttl > 0) min = min === undefined ? ttl : Math.min(min, ttl)
      if (min !== undefined) delay = min * 1000
    }
    this.#timer = setTimeout(() => {
      this.#timer = null
      void this.#cycle()
    }, delay)
    this.#timer.unref()
  }

  /** Resolves one target; returns the records' TTL when respect_dns_ttl asked for it. */
  async #resolve(state: TargetState): Promise<number | undefined> {
    const { target } = state
    const lookup = this.#options.lookup ?? defaultLookup
    let addresses: string[]
    try {
      addresses = await resolveAddresses(lookup, target.name, this.#options.family)
    } catch (err) {
      log('warn', 'cluster', 'DNS resolution failed; keeping the previous hosts', {
        cluster: this.#cluster,
        name: target.name,
        error: (err as Error).message,
        hosts: state.hosts?.length ?? 0,
      })
      return undefined
    }
    const joined = addresses.join(',')
    if (state.hosts === null || joined !== state.addresses) {
      log(addresses.length === 0 ? 'warn' : 'info', 'cluster', 'DNS resolved', {
        cluster: this.#cluster,
        name: target.name,
        addresses,
      })
    }
    state.addresses = joined
    state.hosts = addresses.map((address) => {
      const spec: HostSpec = {
        address,
        port: target.port,
        hostname: target.hostname,
        weight: target.weight,
        priority: target.priority,
      }
      if (target.locality !== undefined) spec.locality = target.locality
      if (target.localityWeight !== undefined) spec.localityWeight = target.localityWeight
      if (target.healthStatus !== undefined) spec.healthStatus = target.healthStatus
      return spec
    })
    if (!this.#options.respectTtl || addresses.length === 0) return undefined
    try {
      return await (this.#options.ttlLookup ?? defaultTtlLookup)(target.name, addresses[0]!.includes(':') ? 6 : 4)
    } catch {
      return undefined
    }
  }
}
