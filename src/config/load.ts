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
  const result = v.safeParse(Bootstrap, raw)
  if (!result.success) throw new ConfigError(file, toConfigIssues(result.issues))
  const issues = crossCheck(result.output, options.dynamic === true)
  if (issues.length > 0) throw new ConfigError(file, issues)
  return result.output
}

/** Checks that span resources: names unique, every route's clusters defined, no two listeners on one address. */
function crossCheck(b: Bootstrap, dynamic: boolean): ConfigIssue[] {
  const issues: ConfigIssue[] = []
  const listeners = b.static_resources?.listeners ?? []
  const clusters = b.static_resources?.clusters ?? []
  const clusterNames = new Set<string>()
  clusters.forEach((c, i) => {
    if (c.type === 'EDS' && !dynamic) {
      issues.push({
        path: `static_resources.clusters[${i}].type`,
        message: 'an EDS cluster needs a control plane: run the proxy with --xds, or use STATIC or STRICT_DNS',
      })
    }
    if (clusterNames.has(c.name)) {
      issues.push({ path: `static_resources.clusters[${i}].name`, message: `duplicate cluster name "${c.name}"` })
    }
    clusterNames.add(c.name)
  })
  const listenerNames = new Set<string>()
  const addresses = new Map<string, number>()
  listeners.forEach((l, i) => {
    const p = `static_resources.listeners[${i}]`
    if (listenerNames.has(l.name)) issues.push({ path: `${p}.name`, message: `duplicate listener name "${l.name}"` })
    listenerNames.add(l.name)
    const a = l.address.socket_address
    const key = `${a.address}:${a.port_value}`
    if (a.port_value !== 0 && addresses.has(key)) {
      issues.push({
        path: `${p}.address`,
        message: `address ${key} is already used by static_resources.listeners[${addresses.get(key)}]`,
      })
    }
    addresses.set(key, i)
    const tlsChains = l.filter_chains.filter((fc) => fc.transport_socket !== undefined).length
    if (tlsChains > 0 && tlsChains < l.filter_chains.length) {
      issues.push({
        path: `${p}.filter_chains`,
        message: 'mixing TLS and plain-text filter chains on one listener is not supported yet',
      })
    }
    l.filter_chains.forEach((fc, j) => {
      const f = fc.filters[0]
      if (f === undefined) return
      const fp = `${p}.filter_chains[${j}].filters[0].typed_config`
      const t = f.typed_config
      const refs: [string, string][] = []
      if (t['@type'] === TypeUrls.hcm) {
        if (t.route_config === undefined) {
          if (dynamic) return
          issues.push({
            path: `${fp}.rds`,
            message: 'rds needs routes from a control plane: run the proxy with --xds, or use an inline route_config',
          })
          return
        }
        t.route_config.virtual_hosts?.forEach((vh, k) => {
          vh.routes?.forEach((r, m) => {
            const rp = `${fp}.route_config.virtual_hosts[${k}].routes[${m}].route`
            if (r.route?.cluster !== undefined) refs.push([`${rp}.cluster`, r.route.cluster])
            r.route?.weighted_clusters?.clusters.forEach((wc, n) => {
              refs.push([`${rp}.weighted_clusters.clusters[${n}].name`, wc.name])
            })
          })
        })
        const validate = t.route_config.validate_clusters ?? true
        if (!validate) refs.length = 0
      } else {
        if (t.cluster !== undefined) refs.push([`${fp}.cluster`, t.cluster])
        t.weighted_clusters?.clusters.forEach((wc, n) => {
          refs.push([`${fp}.weighted_clusters.clusters[${n}].name`, wc.name])
        })
      }
      for (const [path, name] of refs) {
        if (!clusterNames.has(name)) issues.push({ path, message: `unknown cluster "${name}"` })
      }
    })
  })
  return issues
}
