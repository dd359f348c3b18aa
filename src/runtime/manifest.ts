/**
 * `loom up` manifests: Istio resources (applied to the control plane as they are) plus Loom's own small kind for
 * what Istio has no shape for, the process behind a workload:
 *
 * ```yaml
 * apiVersion: loom.dev/v1
 * kind: Workload
 * metadata: { name: reviews-v2, namespace: default }
 * spec:
 *   command: [node, dist/examples/bookinfo/reviews.js]   # argv; relative paths resolve against workingDir
 *   workingDir: .                                        # relative to the manifest's directory
 *   env: { ENABLE_RATINGS: "true", STAR_COLOR: black }
 *   labels: { app: reviews, version: v2 }                # app names the service: reviews.<namespace>.svc.cluster.local
 *   serviceAccount: bookinfo-reviews
 *   ports: [{ name: http, port: 9080 }]                  # service ports; the process gets its local port in $PORT
 *                                                        # (targetPort: the workload port policies name, default port)
 *   healthPath: /health                                  # optional HTTP readiness check through the local port
 *   locality: us-east1/us-east1-b                        # optional region[/zone[/subzone]] of endpoint and sidecar
 * ```
 *
 * A workload without a sidecar (Istio's `sidecar.istio.io/inject: "false"`, as a label in `spec.labels` or an
 * annotation in `metadata.annotations`, as on a Kubernetes pod template): no sidecar and no identity; the process
 * listens on `$PORT`, which is the endpoint registered for every service port (without the
 * `security.istio.io/tlsMode` label, so meshed clients send it plain text), and its outbound calls go out directly.
 */
import { readdirSync, readFileSync, statSync } from 'node:fs'
import { dirname, join, resolve } from 'node:path'
import { dump, loadAll } from 'js-yaml'
import * as v from 'valibot'
import { toConfigIssues } from '../config/schema.js'
import { LoomError, ErrorCodes } from '../core/errors.js'

const name = v.pipe(v.string(), v.regex(/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/, 'must be a DNS label (a-z, 0-9, -)'))

export const WorkloadSpec = v.strictObject({
  command: v.pipe(v.array(v.string()), v.minLength(1, 'the command needs at least the program')),
  workingDir: v.optional(v.string()),
  env: v.optional(v.record(v.string(), v.string())),
  labels: v.pipe(
    v.record(v.string(), v.string()),
    v.check((l) => typeof l.app === 'string' && l.app !== '', 'labels.app is required: it names the service'),
  ),
  serviceAccount: v.optional(name),
  ports: v.pipe(
    v.array(
      v.strictObject({
        name: v.string(),
        port: v.pipe(v.number(), v.integer(), v.minValue(1), v.maxValue(65535)),
        /** the workload's own port as policies name it (PeerAuthentication portLevelMtls, AuthorizationPolicy ports) */
        targetPort: v.optional(v.pipe(v.number(), v.integer(), v.minValue(1), v.maxValue(65535))),
        protocol: v.optional(v.picklist(['HTTP', 'HTTP2', 'GRPC', 'TCP'])),
      }),
    ),
    v.minLength(1, 'at least one port'),
  ),
  healthPath: v.optional(v.string()),
  /** region[/zone[/subzone]]: the workload's endpoints carry it, and its sidecar sends it as node.locality */
  locality: v.optional(
    v.pipe(
      v.string(),
      v.check((l) => {
        const parts = l.split('/')
        return parts.length <= 3 && parts.every((p) => p !== '')
      }, 'must be region[/zone[/subzone]]'),
    ),
  ),
})
export type WorkloadSpec = v.InferOutput<typeof WorkloadSpec>

export interface WorkloadDef {
  name: string
  namespace: string
  spec: WorkloadSpec
  /** false: no sidecar (`sidecar.istio.io/inject: "false"`) */
  sidecar: boolean
  /** metadata.annotations (as strings): Istio's traffic.sidecar.istio.io/* capture settings among them */
  annotations: Record<string, string>
  /** absolute working directory */
  cwd: string
  source: string
}

export interface UpManifest {
  workloads: WorkloadDef[]
  /** the other documents, as YAML text per source file, for the control plane's apply */
  istio: { source: string; text: string }[]
}

/** Istio's label and annotation that turn sidecar injection off for a workload */
export const INJECT_KEY = 'sidecar.istio.io/inject'

function files(path: string): string[] {
  const st = statSync(path)
  if (!st.isDirectory()) return [path]
  return readdirSync(path)
    .filter((f) => /\.(ya?ml|json)$/.test(f))
    .sort()
    .map((f) => join(path, f))
}

/** Reads a file or a directory of manifests; Workload documents are checked here, the rest by the control plane. */
export function readUpManifest(path: string): UpManifest {
  const out: UpManifest = { workloads: [], istio: [] }
  const errors: string[] = []
  let list: string[]
  try {
    list = files(resolve(path))
  } catch {
    throw new LoomError(ErrorCodes.CONFIG_READ, `${path}: no such file or directory`)
  }
  for (const file of list) {
    const text = readFileSync(file, 'utf8')
    let docs: unknown[]
    try {
      docs = loadAll(text)
    } catch (err) {
      throw new LoomError(ErrorCodes.CONFIG_PARSE, `${file}: ${(err as Error).message.split('\n')[0]}`)
    }
    const others: unknown[] = []
    docs.forEach((doc, index) => {
      const d = doc as {
        apiVersion?: string
        kind?: string
        metadata?: { name?: string; namespace?: string; annotations?: Record<string, unknown> }
        spec?: unknown
      }
      if (d === null || typeof d !== 'object') return
      if (d.kind !== 'Workload' || !String(d.apiVersion ?? '').startsWith('loom.dev/')) {
        others.push(doc)
        return
      }
      const wname = d.metadata?.name
      const r = v.safeParse(WorkloadSpec, d.spec)
      if (typeof wname !== 'string' || !/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/.test(wname)) {
        errors.push(`${file}: document ${index} (Workload): metadata.name: required, a DNS label`)
      }
      if (!r.success) {
        for (const i of toConfigIssues(r.issues, ['spec'])) {
          errors.push(`${file}: document ${index} (Workload ${wname ?? '?'}): ${i.path}: ${i.message}`)
        }
        return
      }
      out.workloads.push({
        name: wname ?? '',
        namespace: d.metadata?.namespace ?? 'default',
        spec: r.output,
        sidecar: String(r.output.labels[INJECT_KEY] ?? d.metadata?.annotations?.[INJECT_KEY] ?? 'true') !== 'false',
        annotations: Object.fromEntries(
          Object.entries(d.metadata?.annotations ?? {}).map(([k, val]) => [k, String(val)]),
        ),
        cwd: resolve(dirname(file), r.output.workingDir ?? '.'),
        source: file,
      })
    })
    if (others.length > 0)
      out.istio.push({ source: file, text: others.map((o) => dump(o, { noRefs: true })).join('---\n') })
  }
  const seen = new Set<string>()
  for (const w of out.workloads) {
    const key = `${w.namespace}/${w.name}`
    if (seen.has(key)) errors.push(`${w.source}: Workload ${key} is defined twice`)
    seen.add(key)
  }
  if (errors.length > 0) throw new LoomError(ErrorCodes.CONFIG_INVALID, `invalid manifest:\n  ${errors.join('\n  ')}`)
  if (out.workloads.length === 0)
    throw new LoomError(
      ErrorCodes.CONFIG_INVALID,
      `${path}: no Workload documents (kind: Workload, apiVersion: loom.dev/v1)`,
    )
  return out
}
