/**
 * The mesh config of `loom control`: `--mesh-config <file>` (Istio's MeshConfig, src/control/mesh-config.ts) with
 * the flags that set MeshConfig fields laid over it (flags win): `--path-normalization` (pathNormalization) and
 * `--trust-domain` (trustDomain, which is also the CA's: the file's trust domain is the CA's when the flag is absent).
 */
import { loadMeshConfigFile } from '../control/mesh-config.js'
import { PATH_NORMALIZATIONS, type MeshConfig, type PathNormalization } from '../control/translate/scope.js'
import { ErrorCodes, LoomError } from '../core/errors.js'
import { log } from '../core/log.js'

export interface MeshConfigFlags {
  'mesh-config'?: string | undefined
  'path-normalization'?: string | undefined
  'trust-domain'?: string | undefined
}

/** The control plane's MeshConfig; sets `ca.trustDomain` from the file when no flag did. */
export function controlMeshConfig(values: MeshConfigFlags, ca: { trustDomain?: string }): MeshConfig {
  let mesh: MeshConfig = {}
  const file = values['mesh-config']
  if (file !== undefined) {
    const loaded = loadMeshConfigFile(file)
    for (const w of loaded.warnings) log('warn', 'control', w)
    mesh = loaded.mesh
  }
  const normalization = values['path-normalization']
  if (normalization !== undefined) {
    if (!(PATH_NORMALIZATIONS as readonly string[]).includes(normalization))
      throw Object.assign(
        new LoomError(
          ErrorCodes.USAGE,
          `--path-normalization must be one of ${PATH_NORMALIZATIONS.join(', ')}, got "${normalization}"`,
        ),
        { exitCode: 2 },
      )
    mesh.pathNormalization = { normalization: normalization as PathNormalization }
  }
  if (values['trust-domain'] !== undefined) mesh.trustDomain = values['trust-domain']
  else if (mesh.trustDomain !== undefined) ca.trustDomain = mesh.trustDomain
  return mesh
}
