/**
 * One upstream endpoint of a cluster. A Host keeps its identity (`address:port`) across membership updates, so the
 * data path's connection pool hung on `pool` survives DNS refreshes and EDS pushes that keep the endpoint.
 */

import type { HostHealthCheck } from './health-check/checker.js'
import type { HostLatency } from './lb/peak-ewma.js'
import type { HostOutlier } from './outlier.js'
import type { UpstreamTlsOptions } from './tls.js'

/** How connections to a host are made: `tls.connect` options, or null for plain TCP (transport-socket.ts). */
export interface HostTransport {
  readonly tls: UpstreamTlsOptions | null
}

const PLAIN: HostTransport = Object.freeze({ tls: null })

/** Per-endpoint connection pool, implemented elsewhere (by the HTTP data path). */
export interface HostPool {
  /** Stop handing out connections; finish what is in flight, then close. Called when the host leaves the cluster. */
  drain(): void
  close(): void
}

export type HealthStatus = 'HEALTHY' | 'UNHEALTHY' | 'DRAINING' | 'TIMEOUT' | 'DEGRADED' | 'UNKNOWN'

export interface Locality {
  readonly region?: string
  readonly zone?: string
  readonly sub_zone?: string
}

/** What membership updates (static config, DNS, EDS) say about an endpoint. */
export interface HostSpec {
  /** An IP address. */
  address: string
  port: number
  /** Defaults to `address`. */
  hostname?: string
  /** load_balancing_weight; defaults to 1. */
  weight?: number
  /** Defaults to 0. */
  priority?: number
  locality?: Locality
  /**
   * The load_balancing_weight of the endpoint's LocalityLbEndpoints; 0 when it has none (with locality-weighted
   * load balancing such a locality gets no traffic, as in Envoy). Defaults to 0.
   */
  localityWeight?: number
  /**
   * The health the source reports. When undefined, a host that stays keeps its current status (set, say, by a
   * health checker) and a new host starts UNKNOWN.
   */
  healthStatus?: HealthStatus
  /** the endpoint's `filter_metadata["envoy.transport_socket_match"]` (transport_socket_matches) */
  transportMatch?: Readonly<Record<string, unknown>>
  /** its locality's */
  localityTransportMatch?: Readonly<Record<string, unknown>>
}

/** Told when a host's health status changes, so load balancers can be rebuilt. */
export interface HostOwner {
  hostHealthChanged(host: Host): void
}

const noLocality: Locality = Object.freeze({})

export function hostKey(address: string, port: number): string {
  return address.includes(':') ? `[${address}]:${port}` : `${address}:${port}`
}

export class Host {
  readonly address: string
  readonly port: number
  /** `address:port`, with IPv6 addresses in brackets. Identity of the host within its cluster. */
  readonly key: string

  /** Requests in flight on this host; the data path increments and decrements it. Used by LEAST_REQUEST. */
  activeRequests = 0
  activeConnections = 0
  /** Slot for the data path's connection pool. */
  pool: HostPool | null = null
  /** Ejected by outlier detection: load balancers skip it until it is returned. */
  ejected = false
  /** Outlier detection state, when the cluster has outlier_detection (else null: nothing is reported). */
  outlier: HostOutlier | null = null
  /** Failing active health checks (FAILED_ACTIVE_HC): load balancers skip it until a check passes. */
  failedActiveHc = false
  /** Active health check state, when the cluster has health_checks (else null). */
  activeHc: HostHealthCheck | null = null
  /**
   * When the host last became able to take traffic, in `performance.now()` ms: slow start counts its window from
   * here. NaN until a slow-start load balancer first sees the host (it then takes the time of that build); an
   * active health checker sets it when a host passes after failing, so the host warms up again.
   */
  healthyAt = Number.NaN
  /** The peak-EWMA latency estimate, on clusters with that policy (else null: nothing is sampled). */
  latency: HostLatency | null = null
  /**
   * The transport socket new connections to the host use, set by the cluster when the host joins or is restated
   * (its own transport_socket, or the transport_socket_matches entry the host's metadata matches).
   */
  transport: HostTransport = PLAIN
  /** what the last membership update said of the host's transport socket metadata */
  transportMatch: Readonly<Record<string, unknown>> | undefined
  localityTransportMatch: Readonly<Record<string, unknown>> | undefined

  // Counters the data path bumps; shown on /clusters.
  rqTotal = 0
  rqSuccess = 0
  rqError = 0
  cxConnectFail = 0

  #hostname: string
  #weight: number
  #priority: number
  #locality: Locality
  #localityWeight: number
  #health: HealthStatus
  readonly #owner: HostOwner | null

  constructor(spec: HostSpec, owner: HostOwner | null = null) {
    this.address = spec.address
    this.port = spec.port
    this.key = hostKey(spec.address, spec.port)
    this.#hostname = spec.hostname || spec.address
    this.#weight = spec.weight ?? 1
    this.#priority = spec.priority ?? 0
    this.#locality = spec.locality ? Object.freeze({ ...spec.locality }) : noLocality
    this.#localityWeight = spec.localityWeight ?? 0
    this.#health = spec.healthStatus ?? 'UNKNOWN'
    this.#owner = owner
    this.transportMatch = spec.transportMatch
    this.localityTransportMatch = spec.localityTransportMatch
  }

  /** The endpoint's hostname, else the DNS name it was resolved from, else the address. */
  get hostname(): string {
    return this.#hostname
  }

  get weight(): number {
    return this.#weight
  }

  get priority(): number {
    return this.#priority
  }

  get locality(): Locality {
    return this.#locality
  }

  /** The weight of the host's locality (its LocalityLbEndpoints' load_balancing_weight; 0 when unset). */
  get localityWeight(): number {
    return this.#localityWeight
  }

  get healthStatus(): HealthStatus {
    return this.#health
  }

  /** Setting it makes the owning cluster rebuild its load balancers (once, lazily, however many hosts change). */
  set healthStatus(status: HealthStatus) {
    if (status === this.#health) return
    this.#health = status
    this.#owner?.hostHealthChanged(this)
  }

  /**
   * Whether the host may take traffic: HEALTHY, UNKNOWN and DEGRADED do (Envoy semantics), unless ejected or
   * failing active health checks.
   */
  get healthy(): boolean {
    if (this.ejected || this.failedActiveHc) return false
    const s = this.#health
    return s === 'HEALTHY' || s === 'UNKNOWN' || s === 'DEGRADED'
  }

  /** Takes what a membership update says about this host. Returns whether anything the LB depends on changed. */
  update(spec: HostSpec): boolean {
    this.#hostname = spec.hostname || spec.address
    this.transportMatch = spec.transportMatch
    this.localityTransportMatch = spec.localityTransportMatch
    const weight = spec.weight ?? 1
    const priority = spec.priority ?? 0
    let changed = weight !== this.#weight || priority !== this.#priority
    this.#weight = weight
    this.#priority = priority
    if (!sameLocality(this.#locality, spec.locality)) {
      this.#locality = spec.locality ? Object.freeze({ ...spec.locality }) : noLocality
      changed = true
    }
    const localityWeight = spec.localityWeight ?? 0
    if (localityWeight !== this.#localityWeight) {
      this.#localityWeight = localityWeight
      changed = true
    }
    if (spec.healthStatus !== undefined && spec.healthStatus !== this.#health) {
      this.#health = spec.healthStatus
      changed = true
    }
    return changed
  }

  toJSON(): Record<string, unknown> {
    return {
      address: this.address,
      port: this.port,
      hostname: this.#hostname,
      weight: this.#weight,
      priority: this.#priority,
      locality: this.#locality,
      locality_weight: this.#localityWeight,
      health_status: this.#health,
      rq_active: this.activeRequests,
      cx_active: this.activeConnections,
      rq_total: this.rqTotal,
      rq_success: this.rqSuccess,
      rq_error: this.rqError,
      cx_connect_fail: this.cxConnectFail,
      outlier_ejected: this.ejected,
      failed_active_hc: this.failedActiveHc,
    }
  }
}

function sameLocality(a: Locality, b: Locality = noLocality): boolean {
  return a.region === b.region && a.zone === b.zone && a.sub_zone === b.sub_zone
}
