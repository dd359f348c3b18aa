/**
 * The workload a proxy belongs to, as Istio's telemetry names it: what the proxy reports about itself in its own
 * metrics and sends to its peers in the metadata exchange (exchange.ts).
 *
 * Everything comes from the node (its id and metadata, from the bootstrap's `node` or what `loom proxy --xds` sends
 * the control plane), once:
 *
 * - workload name: metadata `WORKLOAD_NAME` (Istio's: the deployment, `reviews-v1`), else the pod name from the node
 *   id (`sidecar~<ip>~<pod>.<namespace>~...`), else `unknown`
 * - namespace: metadata `NAMESPACE`, else the node id's, else `unknown`
 * - app / version: labels `app` / `version`; canonical service / revision: labels
 *   `service.istio.io/canonical-name` / `-revision`, else `app` (else the workload name) / `version` (else `latest`),
 *   as Istio defaults them
 * - cluster: metadata `CLUSTER_ID`, default `Kubernetes` (Istio's)
 * - principal: the URI SAN of the proxy's own certificate (SDS secret `default`), read when asked and kept per
 *   certificate; `unknown` while it has none.
 */
import { X509Certificate } from 'node:crypto'
import { parseSubjectAltNames } from '../../core/subject-alt-names.js'
import type { Secret, SecretStore } from '../secrets/store.js'

export const UNKNOWN = 'unknown'
export const DEFAULT_CLUSTER_ID = 'Kubernetes'
export const CANONICAL_NAME_LABEL = 'service.istio.io/canonical-name'
export const CANONICAL_REVISION_LABEL = 'service.istio.io/canonical-revision'

/** The proxy's node as it identifies itself: id and metadata (Envoy's `node`). */
export interface NodeInfo {
  readonly id: string
  readonly metadata: Readonly<Record<string, unknown>>
}

/** A workload as telemetry labels describe it, one side of a request (the proxy's own, or a peer's). */
export interface WorkloadMetadata {
  readonly workload: string
  readonly namespace: string
  readonly app: string
  readonly version: string
  readonly canonicalService: string
  readonly canonicalRevision: string
  readonly cluster: string
  /** the pod (Istio's NAME), for the exchange */
  readonly pod: string
  readonly labels: Readonly<Record<string, string>>
}

/** Labels from node metadata `LABELS`: an object, or `k=v,k=v` as `--labels` takes them. */
function labelsOf(v: unknown): Record<string, string> {
  const out: Record<string, string> = {}
  if (typeof v === 'string') {
    for (const part of v.split(',')) {
      const eq = part.indexOf('=')
      if (eq > 0) out[part.slice(0, eq).trim()] = part.slice(eq + 1).trim()
    }
  } else if (typeof v === 'object' && v !== null) {
    for (const [k, x] of Object.entries(v)) if (typeof x === 'string') out[k] = x
  }
  return out
}

function str(v: unknown): string | null {
  return typeof v === 'string' && v !== '' ? v : null
}

/** A workload's labels filled in from what is known, with Istio's defaults. */
export function workloadMetadata(fields: {
  workload?: string | null
  namespace?: string | null
  pod?: string | null
  cluster?: string | null
  labels?: Readonly<Record<string, string>>
}): WorkloadMetadata {
  const labels = fields.labels ?? {}
  const workload = fields.workload || fields.pod || UNKNOWN
  return {
    workload,
    namespace: fields.namespace || UNKNOWN,
    app: labels.app || UNKNOWN,
    version: labels.version || UNKNOWN,
    canonicalService: labels[CANONICAL_NAME_LABEL] || labels.app || workload,
    canonicalRevision: labels[CANONICAL_REVISION_LABEL] || labels.version || 'latest',
    cluster: fields.cluster || DEFAULT_CLUSTER_ID,
    pod: fields.pod || workload,
    labels,
  }
}

/** The pod and namespace in an Istio node id (`<kind>~<ip>~<pod>.<namespace>~<domain>`), when it has that shape. */
export function podOfNodeId(id: string): { pod: string; namespace: string } | null {
  const parts = id.split('~')
  if (parts.length < 3) return null
  const p = parts[2]!
  const dot = p.lastIndexOf('.')
  if (dot <= 0) return p === '' ? null : { pod: p, namespace: '' }
  return { pod: p.slice(0, dot), namespace: p.slice(dot + 1) }
}

/** The proxy's own workload: its node, labels derived once, and its principal from the secret store. */
export class LocalWorkload {
  readonly node: NodeInfo
  readonly meta: WorkloadMetadata
  readonly #secrets: SecretStore | null
  #certSecret: Secret | undefined
  #principal = UNKNOWN

  constructor(node: NodeInfo, secrets: SecretStore | null = null) {
    this.node = node
    this.#secrets = secrets
    const m = node.metadata
    const fromId = podOfNodeId(node.id)
    this.meta = workloadMetadata({
      workload: str(m.WORKLOAD_NAME),
      namespace: str(m.NAMESPACE) ?? fromId?.namespace,
      pod: str(m.NAME) ?? fromId?.pod,
      cluster: str(m.CLUSTER_ID),
      labels: labelsOf(m.LABELS),
    })
  }

  /** The SPIFFE ID (URI SAN) of the proxy's own certificate, `unknown` without one. */
  get principal(): string {
    const s = this.#secrets?.get('default')
    if (s === this.#certSecret) return this.#principal
    this.#certSecret = s
    this.#principal = s?.kind === 'tls_certificate' ? (certificateUri(s.certificateChainPem) ?? UNKNOWN) : UNKNOWN
    return this.#principal
  }
}

/** The first URI SAN of the leaf of a PEM chain, or null. */
export function certificateUri(pem: string): string | null {
  try {
    const san = new X509Certificate(pem).subjectAltName ?? ''
    return parseSubjectAltNames(san).find((s) => s.type === 'URI')?.value ?? null
  } catch {
    return null
  }
}
