/**
 * Reading a bootstrap file: YAML or JSON → schema validation → the checks that need the whole document
 * (unique names, route → cluster references, listener addresses). Every problem is reported with the file and the
 * field path; nothing starts until the whole document is valid.
 */
import { readFileSync } from 'node:fs'
import { loadAll, YAMLException } from 'js-yaml'
import { ConfigError, type ConfigIssue, ErrorCodes, LoomError } from '../core/errors.js'
import { Bootstrap } from './envoy.js'
import { TypeUrls } from './type-urls.js'
import { toConfigIssues, v } from './schema.js'

export interface LoadOptions {
  /** the proxy also takes config from a control plane: RDS and EDS references are allowed */
  dynamic?: boolean
}

export function readBootstrapFile(file: string, options: LoadOptions = {}): Bootstrap {
  let text: string
  try {
    text = readFileSync(file, 'utf8')
  } catch (err) {
    throw new LoomError(ErrorCodes.CONFIG_READ, `${file}: cannot read: ${(err as Error).message}`, { cause: err })
  }
  return parseBootstrap(text, file, options)
}

export function parseBootstrap(text: string, file = '<bootstrap>', options: LoadOptions = {}): Bootstrap {
  let docs: unknown[]
  try {
    docs = loadAll(text, null, { filename: file })
  } catch (err) {
    if (!(err instanceof YAMLException)) throw err
    const where = err.mark === undefined ? '' : ` (line ${err.mark.line + 1}, column ${err.mark.column + 1})`
    throw new ConfigError(file, [{ path: '', message: `YAML: ${err.reason}${where}` }])
  }
  if (docs.length > 1) {
    throw new ConfigError(file, [{ path: '', message: 'a bootstrap is a single YAML document (found several)' }])
  }
  const raw = docs[0]
  if (raw === undefined || raw === null) throw new ConfigError(file, [{ path: '', message: 'the file is empty' }])
  // the schema and the checks across the document run on the same input, so every problem comes out in one pass
  const result = v.safeParse(Bootstrap, raw)
  const issues = result.success ? [] : toConfigIssues(result.issues)
  const seen = new Set(issues.map((i) => i.path))
  for (const issue of crossCheck(result.success ? result.output : raw, options.dynamic === true)) {
    if (!seen.has(issue.path)) issues.push(issue)
  }
  if (!result.success || issues.length > 0) throw new ConfigError(file, issues)
  return result.output
}

type Obj = Record<string, unknown>
const obj = (x: unknown): Obj => (x !== null && typeof x === 'object' && !Array.isArray(x) ? (x as Obj) : {})
const list = (x: unknown): unknown[] => (Array.isArray(x) ? x : [])
const text = (x: unknown): string | undefined => (typeof x === 'string' ? x : undefined)

/**
 * Checks that span resources: names unique, every route's clusters defined, no two listeners on one address. They
 * read the document defensively, so they also run (and report) when the schema found problems elsewhere.
 */
function crossCheck(b: unknown, dynamic: boolean): ConfigIssue[] {
  const issues: ConfigIssue[] = []
  const sr = obj(obj(b).static_resources)
  const clusterNames = new Set<string>()
  list(sr.clusters).forEach((raw, i) => {
    const c = obj(raw)
    const name = text(c.name)
    if (c.type === 'EDS' && !dynamic) {
      issues.push({
        path: `static_resources.clusters[${i}].type`,
        message: 'an EDS cluster needs a control plane: run the proxy with --xds, or use STATIC or STRICT_DNS',
      })
    }
    if (name === undefined) return
    if (clusterNames.has(name)) {
      issues.push({ path: `static_resources.clusters[${i}].name`, message: `duplicate cluster name "${name}"` })
    }
    clusterNames.add(name)
  })
  const listenerNames = new Set<string>()
  const addresses = new Map<string, number>()
  list(sr.listeners).forEach((raw, i) => {
    const l = obj(raw)
    const p = `static_resources.listeners[${i}]`
    const name = text(l.name)
    if (name !== undefined) {
      if (listenerNames.has(name)) issues.push({ path: `${p}.name`, message: `duplicate listener name "${name}"` })
      listenerNames.add(name)
    }
    const a = obj(obj(l.address).socket_address)
    if (typeof a.address === 'string' && typeof a.port_value === 'number') {
      const key = `${a.address}:${a.port_value}`
      if (a.port_value !== 0 && addresses.has(key)) {
        issues.push({
          path: `${p}.address`,
          message: `address ${key} is already used by static_resources.listeners[${addresses.get(key)}]`,
        })
      }
      addresses.set(key, i)
    }
    // TLS and plain-text chains may share a listener: the first bytes choose (transport_protocol)
    const chains = list(l.filter_chains).map(obj)
    chains.forEach((fc, j) => {
      const filters = list(fc.filters)
      if (filters.length === 0) return
      // the terminal filter is the last one (network RBAC filters come before it)
      const fp = `${p}.filter_chains[${j}].filters[${filters.length - 1}].typed_config`
      const t = obj(obj(filters[filters.length - 1]).typed_config)
      const refs: [string, string][] = []
      const weighted = (wcs: unknown, at: string) => {
        list(obj(wcs).clusters).forEach((wc, n) => {
          const name = text(obj(wc).name)
          if (name !== undefined) refs.push([`${at}.weighted_clusters.clusters[${n}].name`, name])
        })
      }
      if (t['@type'] === TypeUrls.hcm) {
        if (t.route_config === undefined) {
          if (dynamic) return
          issues.push({
            path: `${fp}.rds`,
            message: 'rds needs routes from a control plane: run the proxy with --xds, or use an inline route_config',
          })
          return
        }
        const rc = obj(t.route_config)
        list(rc.virtual_hosts).forEach((vh, k) => {
          list(obj(vh).routes).forEach((r, m) => {
            const rp = `${fp}.route_config.virtual_hosts[${k}].routes[${m}].route`
            const route = obj(obj(r).route)
            const cluster = text(route.cluster)
            if (cluster !== undefined) refs.push([`${rp}.cluster`, cluster])
            weighted(route.weighted_clusters, rp)
          })
        })
        if (rc.validate_clusters === false) refs.length = 0
      } else if (t['@type'] === TypeUrls.tcpProxy) {
        const cluster = text(t.cluster)
        if (cluster !== undefined) refs.push([`${fp}.cluster`, cluster])
        weighted(t.weighted_clusters, fp)
      }
      for (const [path, name] of refs) {
        if (!clusterNames.has(name)) issues.push({ path, message: `unknown cluster "${name}"` })
      }
    })
  })
  return issues
}
