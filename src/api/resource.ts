/**
 * The envelope every user-facing resource shares, as in Kubernetes and Istio: apiVersion, kind, metadata, spec.
 * Specs are validated per kind (src/api/kinds.ts); this file has only the shapes every layer passes around.
 */

export interface ObjectMeta {
  name: string
  /** defaults to `default` */
  namespace: string
  labels?: Record<string, string>
  annotations?: Record<string, string>
  /** set by the store: a decimal revision, increasing across the whole store */
  resourceVersion?: string
  /** set by the store */
  creationTimestamp?: string
  uid?: string
  generation?: number
}

export interface Resource<Spec = unknown> {
  apiVersion: string
  kind: string
  metadata: ObjectMeta
  spec: Spec
}

/** `kind/namespace/name`, the store key of a resource. */
export function resourceKey(kind: string, namespace: string, name: string): string {
  return `${kind}/${namespace}/${name}`
}

export function keyOf(r: Resource): string {
  return resourceKey(r.kind, r.metadata.namespace, r.metadata.name)
}
