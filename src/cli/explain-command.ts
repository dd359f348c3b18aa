/** `loom explain`: why a request gets its answer, as the control plane works it out from the proxies' own config. */
import { parseArgs } from 'node:util'
import { ErrorCodes, LoomError } from '../core/errors.js'
import { readState } from '../runtime/up.js'
import { type Explained, renderExplanation } from '../control/explain/render.js'
import { apiRequest, caBundleFile } from './api-client.js'

export const EXPLAIN_USAGE = `Usage: loom explain --from <workload> [-n namespace] [METHOD] <url> [-H 'name: value']... [-o tree|json]
       loom explain --gateway <name> [METHOD] <url> [-H 'name: value']...

Explains the decisions the mesh makes for one request, step by step (✓ holds, ✗ does not, • a setting that
applies): the source proxy's listener and filter chain, the virtual host (by domain), every route tried in order
and the matcher that failed (path, header, query, method), the route's fault, timeout and retries, the cluster and
subset (with the VirtualService and DestinationRule they came from), the endpoints and their live health (outlier
ejection, health checks, active requests, from the source proxy's admin /clusters), and the destination sidecar's
authorization decision (which AuthorizationPolicy and rule allows or denies, for the source's SPIFFE identity).

Nothing is sent: the control plane walks the config it sent the source proxy (the version shown, and whether the
proxy ACKed it) with the proxy's own matching code.

--from names a workload's sidecar (productpage-v1, deploy/productpage-v1, productpage-v1.default): the request as
its application sends it. --gateway names a gateway (ingressgateway): the request as it arrives there, on the
URL's port.

Options:
      --from <workload>     the source workload
      --gateway <name>      the source gateway (namespace istio-system unless -n)
  -n, --namespace <ns>      the source's namespace
  -H, --header <h>          a request header, 'name: value' (repeat for several)
  -X, --request <method>    the method (default GET; also the first argument, e.g. POST)
  -o, --output <fmt>        tree (default) or json
      --server <url>        the control plane's API (default: from --data-dir's up.json, else LOOM_SERVER or
                            127.0.0.1:15080)
      --data-dir <dir>      a loom up / loom demo data directory (default ./.loom or ./.loom/demo)
      --ca-bundle <file>    roots for an https --server

Examples:
  loom explain --from productpage-v1 GET http://reviews:9080/reviews/0 -H 'end-user: jason'
  loom explain --gateway ingressgateway http://localhost:8080/productpage
  loom explain --from reviews-v2 http://ratings:9080/ratings/0 -o json
`

/** The API address: --server, else the up.json of a loom up or demo data directory, else LOOM_SERVER. */
export function serverOf(values: { server?: string | undefined; 'data-dir'?: string | undefined }): string {
  if (values.server !== undefined) return values.server
  for (const dir of values['data-dir'] !== undefined ? [values['data-dir']] : ['.loom', '.loom/demo']) {
    const st = readState(dir)
    if (st !== null) return st.api
  }
  if (values['data-dir'] !== undefined)
    throw new LoomError(ErrorCodes.USAGE, `no loom up state in ${values['data-dir']} (up.json)`)
  return process.env.LOOM_SERVER ?? '127.0.0.1:15080'
}

const METHOD = /^[A-Z]+$/

export async function explainCommand(argv: string[]): Promise<void> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      from: { type: 'string' },
      gateway: { type: 'string' },
      namespace: { type: 'string', short: 'n' },
      header: { type: 'string', short: 'H', multiple: true },
      request: { type: 'string', short: 'X' },
      output: { type: 'string', short: 'o' },
      server: { type: 'string' },
      'data-dir': { type: 'string' },
      'ca-bundle': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  })
  if (values.help) return void process.stdout.write(EXPLAIN_USAGE)
  const usage = (msg: string): never => {
    throw new LoomError(ErrorCodes.USAGE, `${msg}\n\n${EXPLAIN_USAGE}`)
  }
  if ((values.from === undefined) === (values.gateway === undefined)) usage('one of --from or --gateway is required')
  let method = values.request?.toUpperCase()
  const rest = [...positionals]
  if (rest.length === 2 && METHOD.test(rest[0]!)) method ??= rest.shift()
  if (rest.length !== 1) usage('one request URL is required, e.g. http://reviews:9080/reviews/0')
  let url = rest[0]!
  if (!/^https?:\/\//.test(url)) url = `http://${url}`
  const headers: [string, string][] = (values.header ?? []).map((h) => {
    const i = h.indexOf(':')
    if (i <= 0) usage(`a header is 'name: value', not '${h}'`)
    return [h.slice(0, i).trim(), h.slice(i + 1).trim()]
  })
  const output = values.output ?? 'tree'
  if (output !== 'tree' && output !== 'json') usage(`-o is tree or json, not ${output}`)
  const body = {
    from: values.from ?? values.gateway!,
    ...(values.namespace !== undefined
      ? { namespace: values.namespace }
      : values.gateway !== undefined
        ? { namespace: 'istio-system' }
        : {}),
    method: method ?? 'GET',
    url,
    headers,
  }
  const s = serverOf(values)
  const base = s.startsWith('http') ? s.replace(/\/$/, '') : `http://${s}`
  const caBundle = base.startsWith('https:') ? caBundleFile(values['ca-bundle']) : undefined
  let res: { status: number; text: string }
  try {
    res = await apiRequest(
      caBundle === undefined ? { base } : { base, caBundle },
      'POST',
      '/api/v1/explain',
      JSON.stringify(body),
      {
        'content-type': 'application/json',
      },
    )
  } catch (err) {
    throw new LoomError(ErrorCodes.USAGE, `cannot reach the control plane at ${base} (${(err as Error).message})`)
  }
  let json: unknown
  try {
    json = JSON.parse(res.text)
  } catch {
    throw new LoomError(ErrorCodes.USAGE, `the control plane answered HTTP ${res.status}: ${res.text.slice(0, 200)}`)
  }
  if (res.status !== 200) {
    const msg = (json as { error?: { message?: string } }).error?.message ?? `HTTP ${res.status}`
    throw new LoomError(ErrorCodes.USAGE, `loom explain: ${msg}`)
  }
  process.stdout.write(output === 'json' ? `${JSON.stringify(json, null, 2)}\n` : renderExplanation(json as Explained))
}
