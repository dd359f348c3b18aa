import { type ConfigIssue, ErrorCodes, LoomError } from '../../core/errors.js'

/**
 * Cluster configuration the schema could not check (duplicate names, addresses, TLS files, LB settings...).
 * Issue paths are relative to the clusters array, e.g. `[2].load_assignment.endpoints[0].lb_endpoints[1]`; whoever
 * loaded the document prefixes them (`static_resources.clusters`).
 */
export class ClusterConfigError extends LoomError {
  override name = 'ClusterConfigError'
  readonly issues: ConfigIssue[]

  constructor(issues: ConfigIssue[]) {
    super(
      ErrorCodes.CONFIG_INVALID,
      `invalid cluster configuration:\n${issues.map((i) => `  ${i.path || '(root)'}: ${i.message}`).join('\n')}`,
    )
    this.issues = issues
  }
}
