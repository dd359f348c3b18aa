/** What `loom analyze` (and `loom apply`, for what it writes) reports: small, so the CLI can load it alone. */

export interface Diagnostic {
  level: 'warning' | 'error'
  message: string
  /** `Kind/namespace/name` */
  resource: string
  /** field path inside the resource, e.g. `spec.http[0].route[1].destination.subset` */
  path: string
  /** the file and 0-based document index the resource came from, when it came from manifests */
  source?: string
  index?: number
}

/** Where each resource of some manifests came from, by `Kind/namespace/name`. */
export type Origins = ReadonlyMap<string, { source: string; index: number }>

/** `diagnostics` with the file and document of each resource found in `origins`. */
export function locate(diagnostics: readonly Diagnostic[], origins: Origins): Diagnostic[] {
  return diagnostics.map((d) => {
    const o = origins.get(d.resource)
    return o === undefined ? d : { ...d, source: o.source, index: o.index }
  })
}

/**
 * `Warning [VirtualService/default/a] spec.http[0].retries: retries are not translated yet (vs.yaml, document 0)`.
 * `label` defaults to Error or Warning by level.
 */
export function formatDiagnostic(d: Diagnostic, label: string = d.level === 'error' ? 'Error' : 'Warning'): string {
  const where = d.source === undefined ? '' : ` (${d.source}${d.index === undefined ? '' : `, document ${d.index}`})`
  return `${label} [${d.resource}] ${d.path === '' ? '' : `${d.path}: `}${d.message}${where}`
}
