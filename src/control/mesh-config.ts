/**
 * `loom control --mesh-config <file>`: Istio's MeshConfig read from a YAML (or JSON) file: the MeshConfig object
 * itself, as the `mesh` key of the istio ConfigMap holds it (IstioOperator's `spec.meshConfig` is the same object).
 * The fields Loom reads are validated (errors name the file and the field path); the others are listed as warnings
 * and ignored. Flags given beside the file win over it.
 */
import { readFileSync } from 'node:fs'
import { CORE_SCHEMA, load } from 'js-yaml'
import { type MeshConfigDoc, MeshConfigSchema, PROVIDER_KINDS, unreadFields } from '../api/mesh-config.js'
import { toConfigIssues, v } from '../config/schema.js'
import { ErrorCodes, LoomError } from '../core/errors.js'
import type { MeshConfig } from './translate/scope.js'
import { type AccessLogProvider, ISTIO_TEXT_FORMAT } from './translate/access-log.js'
import { compileLogFormat } from '../proxy/access-log-format.js'

export interface LoadedMeshConfig {
  mesh: MeshConfig
  /** `<file>: <path>: not read by Loom (ignored)` for each field Loom does not read */
  warnings: string[]
}

/** Wrappers people paste by mistake: the file is the MeshConfig object itself. */
const WRAPPERS = ['meshConfig', 'apiVersion', 'kind', 'spec', 'data', 'mesh']

export function parseMeshConfig(text: string, source: string): LoadedMeshConfig {
  const bad = (message: string): never => {
    throw new LoomError(ErrorCodes.CONFIG_INVALID, `${source}: ${message}`)
  }
  let doc: unknown
  try {
    doc = load(text, { schema: CORE_SCHEMA, filename: source })
  } catch (err) {
    return bad(`not valid YAML: ${(err as Error).message}`)
  }
  if (doc === undefined || doc === null) doc = {}
  if (typeof doc !== 'object' || Array.isArray(doc)) return bad('a MeshConfig must be a mapping of fields')
  const wrapper = WRAPPERS.find((k) => k in (doc as object))
  if (wrapper !== undefined)
    bad(
      `found a "${wrapper}" key: the file is the MeshConfig object itself (what the istio ConfigMap's "mesh" key or ` +
        `IstioOperator's spec.meshConfig holds), e.g. "trustDomain: ..." and "extensionProviders: [...]" at the top`,
    )
  const r = v.safeParse(MeshConfigSchema, doc)
  if (!r.success) {
    const lines = toConfigIssues(r.issues).map((i) => `${source}: ${i.path === '' ? '' : `${i.path}: `}${i.message}`)
    throw new LoomError(ErrorCodes.CONFIG_INVALID, `the mesh config is invalid:\n  ${lines.join('\n  ')}`)
  }
  const names = new Set<string>()
  ;(r.output.extensionProviders ?? []).forEach((p, i) => {
    if (names.has(p.name))
      bad(`extensionProviders[${i}].name: extension provider name must be unique, found duplicate "${p.name}"`)
    names.add(p.name)
    const kinds = PROVIDER_KINDS.filter((k) => p[k] !== undefined)
    if (kinds.length > 1) bad(`extensionProviders[${i}]: only one provider kind may be set (found ${kinds.join(', ')})`)
  })
  let mesh: MeshConfig
  try {
    mesh = meshConfigOf(r.output)
  } catch (err) {
    return bad((err as Error).message)
  }
  return {
    mesh,
    warnings: unreadFields(doc).map((p) => `${source}: ${p}: not read by Loom (ignored)`),
  }
}

export function loadMeshConfigFile(file: string): LoadedMeshConfig {
  let text: string
  try {
    text = readFileSync(file, 'utf8')
  } catch (err) {
    throw new LoomError(ErrorCodes.USAGE, `cannot read the mesh config ${file}: ${(err as Error).message}`)
  }
  return parseMeshConfig(text, file)
}

function meshConfigOf(d: MeshConfigDoc): MeshConfig {
  const out: MeshConfig = {}
  if (d.rootNamespace !== undefined) out.rootNamespace = d.rootNamespace
  if (d.trustDomain !== undefined) out.trustDomain = d.trustDomain
  if (d.connectTimeout !== undefined) out.connectTimeout = d.connectTimeout
  if (d.localityLbSetting !== undefined) out.localityLbSetting = d.localityLbSetting
  if (d.pathNormalization?.normalization !== undefined)
    out.pathNormalization = { normalization: d.pathNormalization.normalization }
  const hops = d.defaultConfig?.gatewayTopology?.numTrustedProxies
  if (hops !== undefined) out.defaultConfig = { gatewayTopology: { numTrustedProxies: hops } }
  const sampling = d.defaultConfig?.tracing?.sampling
  if (sampling !== undefined) out.defaultConfig = { ...out.defaultConfig, tracing: { sampling } }
  if (d.extensionProviders !== undefined) out.extensionProviders = d.extensionProviders
  if (d.defaultProviders !== undefined) out.defaultProviders = d.defaultProviders
  if (d.enableTracing !== undefined) out.enableTracing = d.enableTracing
  if (d.h2UpgradePolicy !== undefined) out.h2UpgradePolicy = d.h2UpgradePolicy
  const accessLog = meshAccessLog(d)
  if (accessLog !== null) out.accessLog = accessLog
  if (d.explainFrom !== undefined) out.explainFrom = d.explainFrom
  return out
}

/**
 * MeshConfig's access log fields as a provider (Istio's rules): nothing without `accessLogFile`; TEXT (Istio's
 * default encoding) writes `accessLogFormat` or Istio's default text format; JSON writes `accessLogFormat` parsed as
 * a JSON object of operators, or without it Loom's full JSON entry. Loom's default, with neither encoding nor
 * format, is that JSON entry (Istio's would be its text line). Throws a message for a format the proxy cannot write.
 */
export function meshAccessLog(d: MeshConfigDoc): AccessLogProvider | null {
  const path = d.accessLogFile
  if (path === undefined || path === '') return null
  const format = d.accessLogFormat === undefined || d.accessLogFormat.trim() === '' ? undefined : d.accessLogFormat
  let provider: AccessLogProvider
  if (d.accessLogEncoding === 'TEXT') provider = { path, text: format ?? ISTIO_TEXT_FORMAT }
  else if (format === undefined) provider = { path }
  else {
    let labels: unknown
    try {
      labels = JSON.parse(format)
    } catch {
      labels = undefined
    }
    if (labels === null || typeof labels !== 'object' || Array.isArray(labels))
      throw new Error(
        'accessLogFormat: with accessLogEncoding JSON (or unset) the format must be a JSON object of command operators, e.g. {"status": "%RESPONSE_CODE%"}',
      )
    provider = { path, labels: labels as Record<string, unknown> }
  }
  const errors = compileLogFormat(
    provider.text !== undefined
      ? { text_format: provider.text }
      : provider.labels === undefined
        ? undefined
        : { json_format: provider.labels as Record<string, unknown> },
  ).errors
  if (errors.length > 0) throw new Error(`accessLogFormat: ${errors.join('; ')}`)
  return provider
}
