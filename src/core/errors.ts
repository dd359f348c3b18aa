/**
 * One table of Loom's error codes. Every error a user can see carries a stable `LOOM_ERR_<AREA>_<WHAT>` code.
 */
export const ErrorCodes = {
  // config
  CONFIG_INVALID: 'LOOM_ERR_CONFIG_INVALID',
  CONFIG_READ: 'LOOM_ERR_CONFIG_READ',
  CONFIG_PARSE: 'LOOM_ERR_CONFIG_PARSE',
  // proxy runtime
  LISTEN: 'LOOM_ERR_PROXY_LISTEN',
  // the control plane's certificate authority
  CA_INVALID: 'LOOM_ERR_CA_INVALID',
  CA_CSR: 'LOOM_ERR_CA_CSR',
  // cli
  USAGE: 'LOOM_ERR_CLI_USAGE',
} as const

export type ErrorCode = (typeof ErrorCodes)[keyof typeof ErrorCodes]

export class LoomError extends Error {
  override name = 'LoomError'
  readonly code: ErrorCode
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options)
    this.code = code
  }
}

/** One problem found in a config document, located by its field path. */
export interface ConfigIssue {
  /** e.g. `static_resources.clusters[2].load_assignment.endpoints[0]` */
  path: string
  message: string
}

/** A config document that failed validation: every issue found, with the file it came from. */
export class ConfigError extends LoomError {
  override name = 'ConfigError'
  readonly file: string
  readonly issues: ConfigIssue[]
  constructor(file: string, issues: ConfigIssue[]) {
    super(
      ErrorCodes.CONFIG_INVALID,
      `${file}: invalid configuration:\n${issues.map((i) => `  ${i.path || '(root)'}: ${i.message}`).join('\n')}`,
    )
    this.file = file
    this.issues = issues
  }
}
