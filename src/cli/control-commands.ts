/** `loom control` and the commands that talk to it: apply, get, delete, proxy-status. */
import { readFileSync, readdirSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { hostname } from 'node:os'
import { parseArgs } from 'node:util'
import { dump as toYaml } from 'js-yaml'
import { lookupKind, SUPPORTED_KINDS } from '../api/index.js'
import type { RegistrationKeeper } from '../control/control.js'
import type { EtcdStore } from '../control/store/etcd-store.js'
import type { Store } from '../control/store/store.js'
import { type Diagnostic, formatDiagnostic, locate } from '../control/translate/diagnostic.js'
import type { CaOptions } from '../control/ca/ca.js'
import { parseFlagDurationMs } from '../core/duration.js'
import { controlMeshConfig } from './mesh-config-flag.js'
import { ErrorCodes, LoomError } from '../core/errors.js'
import { log } from '../core/log.js'
import type { ApiTokens } from '../control/api-tokens.js'
import { type ApiTarget, apiRequest, apiTokenOf, caBundleFile, tlsHint } from './api-client.js'
import { table } from './table.js'

const DEFAULT_SERVER = 'http://127.0.0.1:15080'

export const CONTROL_USAGE = `Usage: loom control [options]

Runs the control plane: the config store and API, the service registry, and the xDS server proxies connect to.

Options:
      --data-dir <dir>    where the config store and the CA's root live (default: ./.loom)
      --store <file|etcd://host:port[,host:port...]>
                          where the configuration is kept: file, the crash-safe store in the data dir (default),
                          or an etcd cluster (its members' client endpoints; the client fails over between them)
      --api <host:port>   HTTP API for loom apply/get/delete (default: 127.0.0.1:15080; port 0 picks one)
      --xds <host:port>   gRPC xDS (ADS) server for proxies (default: 127.0.0.1:15010)
      --path-normalization <NONE|BASE|MERGE_SLASHES|DECODE_AND_MERGE_SLASHES>
                          how every proxy normalizes request paths before routing and policies, Istio's
                          meshConfig.pathNormalization (default: BASE: RFC 3986 normalization, slashes not merged)
      --mesh-config <file>  Istio's MeshConfig (YAML: the object of the istio ConfigMap's "mesh" key, or
                          IstioOperator's spec.meshConfig): extensionProviders (CUSTOM authorization), trustDomain,
                          rootNamespace, pathNormalization, localityLbSetting, connectTimeout,
                          defaultConfig.gatewayTopology; fields Loom does not read are warned about; flags win
      --telemetry-interval <duration|off>
                          how often the control plane reads every connected proxy's metrics from its admin
                          endpoint (/stats/prometheus, /stats/paths) for loom stat, top, edges and graph
                          (default: 5s); off: never
      --telemetry-retention <duration>
                          how much of that history it keeps, the longest --window the views take (default: 10m)
  -h, --help

TLS on the control plane's ports (certificate: issued by the CA to the control plane itself, SANs
spiffe://<td>/ns/istio-system/sa/loom-control, localhost, 127.0.0.1 and the bind hosts; renewed at half life):
      --xds-tls <on|off>  the xDS port speaks TLS only (default: on); proxies verify it with
                          'loom proxy --xds-ca <data-dir>/ca/trust-bundle.pem'. off: plain-text gRPC, for
                          clients that cannot do TLS (proxyless gRPC with channel_creds insecure)
      --api-tls <on|off>  the HTTP API speaks HTTPS only, plain HTTP is refused (default: off); the CLI then
                          takes --server https://host:port and --ca-bundle <data-dir>/ca/trust-bundle.pem
      --tls-cert <file>   serve this certificate (PEM chain) on both ports instead of a self-issued one
      --tls-key <file>    its private key

The etcd store (--store etcd://...): resources under <prefix>/resources/<kind>/<namespace>/<name>, self-registered
workloads under <prefix>/registrations/ with a lease of their TTL:
      --etcd-prefix <key>   the key prefix (default: /loom)
      --etcd-ca <file>      TLS to the members: the CA certificate they are verified with, PEM
      --etcd-cert <file>    a client certificate, PEM, when the members ask for one (with --etcd-key)
      --etcd-key <file>     its private key, PEM
      --etcd-user <name>    etcd user authentication (the password from --etcd-password or LOOM_ETCD_PASSWORD)
      --etcd-password <pw>
      --replica-id <id>     this replica's name among those on the same etcd, shown by proxy-status
                            (default: its xDS address). Replicas share the generated CA root and the token
                            key through etcd (the first to start makes them) and elect a leader

Kubernetes (Services, EndpointSlices, Pods and Nodes as the registry's services; Istio's networking.istio.io and
security.istio.io resources as config, validated like 'loom apply'; a rejected one gets a Warning Event):
      --kubernetes        read the cluster: in a pod, with its service account (token and CA from
                          /var/run/secrets/kubernetes.io/serviceaccount); else with --kubeconfig
      --kubeconfig <file> a kubeconfig file (its current context); implies --kubernetes
      --istio-api-version <v1|v1beta1|v1alpha3>  the version of Istio's APIs to list and watch (default: v1)
      --injection-webhook <host:port>  serve the sidecar injection webhook (HTTPS, POST /inject, AdmissionReview
                          v1) for pods of namespaces labelled istio-injection=enabled or loom-injection=enabled;
                          its certificate from the CA, for --injection-host
      --injection-host <name>  the webhook Service's DNS name in its certificate
                          (default: loom-control.loom-system.svc)
      --injection-image <image>  the image of the injected loom-init and loom-proxy containers (default: loom:latest)
      --injection-xds <host:port>  the xDS address injected proxies dial
                          (default: loom-control.loom-system.svc:15010)

Dashboard (served on the API port at /dashboard/; open it with 'loom dashboard'):
      --api-allowed-hosts <names>  host names a browser may use for the API and dashboard, comma-separated,
                          besides localhost and IP addresses (a DNS-rebinding guard refuses other names)

API tokens (who may change the mesh through the API):
      --api-token-file <file>  one token a line, '<token> <role>', role read or write ('#' comments; tokens of
                          16 characters or more, e.g. 'openssl rand -hex 32'); the file must not be readable or
                          writable by other users (chmod 600), else the control plane does not start. Read again
                          when it changes and on SIGHUP (a file that no longer parses keeps the previous tokens).
                          With it, every change (apply, delete, workloads, tokens, rotate-root) needs
                          'Authorization: Bearer <token>' of a write token: 401 without a valid one, 403 with a
                          read token; reads stay open. The CLI sends --token or LOOM_API_TOKEN.
                          Without it, the CLI's changes need no token and the dashboard is read-only: a change
                          from a browser always needs a write token.

Certificate authority (workload certificates, X.509-SVIDs):
      --trust-domain <td>     the SPIFFE trust domain: spiffe://<td>/ns/<ns>/sa/<sa> (default: cluster.local)
      --cert-ttl <duration>   lifetime of a workload certificate, e.g. 24h, 90m (default: 24h)
      --ca-cert <file>        use your own CA instead of the generated root: its certificate (a root, or an
                              intermediate of your enterprise root), PEM
      --ca-key <file>         its private key, PEM (mode 0600: a key others can read is refused)
      --ca-chain <file>       the certificates above --ca-cert, up to and including the root, PEM
      --ca-rotation-overlap <duration>
                              how long the previous root stays trusted after a rotation (default: 48h)
      --ca-key-type <type>    key of a generated root: ecdsa-p256 (default) or rsa-2048

Without --ca-cert, a root is generated on first start in <data-dir>/ca/ (root-key.pem 0600, root-cert.pem) and
loaded on later starts. Starting with another root (new --ca-* files, or after 'loom control rotate-root') is a
rotation: the previous root stays in the trust bundle for the overlap period.

Proxies get their certificates from the signing service on the xDS port: the first with a bootstrap token
('loom token create'; signed with <data-dir>/token-key, 0600; given to 'loom proxy --identity-token-file'), renewals
with the current certificate. A proxy's private key never leaves it.

Usage: loom control rotate-root [--data-dir <dir>] [--ca-rotation-overlap <duration>] [--ca-key-type <type>]
       loom control rotate-root --server <URL> [--propagation <duration>] [--ca-rotation-overlap <duration>]

Replaces the generated root by a new one, the previous staying trusted for the overlap. On the data dir of a
stopped control plane (its next start uses the new root), or, with --server, on a running one without a restart:
the new root is pushed to every proxy's trust bundle (ROOTCA) at once, signs after --propagation (default 30s),
and the previous root leaves the bundle after the overlap.

Examples:
  loom control --data-dir ~/.loom
  loom control --store etcd://10.0.0.1:2379,10.0.0.2:2379,10.0.0.3:2379 --etcd-ca etcd-ca.pem
  loom control --kubernetes --api 0.0.0.0:15080 --xds 0.0.0.0:15010   # in a pod
  loom control --kubeconfig ~/.kube/config
  loom control --path-normalization MERGE_SLASHES
  loom control --mesh-config mesh.yaml
  loom control --telemetry-interval 2s --telemetry-retention 15m
  loom control --trust-domain prod.example.com --ca-cert ca-cert.pem --ca-key ca-key.pem --ca-chain cert-chain.pem
  loom control --api-tls on          # then: loom get vs --server https://127.0.0.1:15080
  loom control --api-token-file tokens.txt   # then: LOOM_API_TOKEN=<a write token> loom apply -f vs.yaml
  loom control rotate-root --server 127.0.0.1:15080 --propagation 30s --ca-rotation-overlap 48h
  loom proxy --xds 127.0.0.1:15010 --xds-ca .loom/ca/trust-bundle.pem --labels app=reviews,version=v1
`

export const APPLY_USAGE = `Usage: loom apply -f <file|dir|-> [--dry-run] [--server URL] [--ca-bundle FILE] [--token TOKEN]

--server (or LOOM_SERVER): the API, host:port or http(s)://host:port (default 127.0.0.1:15080). An https:// API
is verified with --ca-bundle, else LOOM_CA_BUNDLE, else ./.loom/ca/trust-bundle.pem. --token (or LOOM_API_TOKEN,
which keeps it out of the process list): the API token, sent as 'Authorization: Bearer'; a control plane started
with --api-token-file takes changes only with a write token. The same for every command that talks to the
control plane.

Validates every document first; if any is invalid, nothing is written and every error is listed with its file,
document index and field path. Kubernetes kinds (Deployment, Service, ...) are skipped. After the created /
configured / unchanged lines, warnings go to stderr: what 'loom analyze' finds in the resources written (unknown
hosts, missing subsets, fields accepted but not enforced yet...). Warnings do not change the exit code.

Examples:
  loom apply -f samples/virtual-service-reviews-v3.yaml
  loom apply -f config/              # every .yaml/.yml/.json file in the directory
  loom apply -f config/ --dry-run    # validate, and see the warnings, without writing
  cat vs.yaml | loom apply -f -
`

export const GET_USAGE = `Usage: loom get <kind> [name] [-n namespace | -A] [-o table|yaml|json] [--server URL] [--ca-bundle FILE]

Kinds: ${SUPPORTED_KINDS.join(', ')} (short names: vs, dr, gw, se, we, pa, ap, ra, grl; plurals work too)

Examples:
  loom get vs
  loom get dr reviews -o yaml
  loom get virtualservices -A -o json
`

export const DELETE_USAGE = `Usage: loom delete <kind> <name> [-n namespace] [--server URL] [--ca-bundle FILE] [--token TOKEN]
       loom delete -f <file|dir|->

With -f, VirtualServices go first (they name the DestinationRules, Gateways and ServiceEntries that follow).

Examples:
  loom delete vs reviews
  loom delete -f samples/virtual-service-all-v1.yaml
`

export const ANALYZE_USAGE = `Usage: loom analyze [-f] <file|dir|-> ... [--local] [-o table|json] [--server URL] [--ca-bundle FILE]

Finds problems before you apply: destination hosts not in the registry, subsets no DestinationRule defines,
conflicting VirtualServices for one host, routes shadowed by an earlier catch-all, and fields Loom accepts but
does not apply yet (every one is a warning, security kinds included, until Loom enforces it). The files are
analyzed together with the control plane's current config, or alone (--local). Every message names the resource,
its file and document, and the field path. Exit code 1 when there are errors, 0 when there are only warnings or
nothing.

Examples:
  loom analyze -f samples/virtual-service-reviews-v3.yaml
  loom analyze -f config/ --local
  loom analyze --local authz-allow-nothing.yaml
`

export const TOKEN_USAGE = `Usage: loom token create --service-account <sa> [--namespace <ns>] [--ttl <duration>] [-o text|json] [--server URL] [--ca-bundle FILE] [--token TOKEN]

Issues a bootstrap token: what a proxy started with --identity-token-file shows the control plane to get its first
certificate (an X.509-SVID for spiffe://<trust-domain>/ns/<ns>/sa/<sa>); later certificates are renewed with the
current one. The token is a secret: it goes to stdout only, keep it in a file only its workload can read (0600).

Options:
  -n, --namespace <ns>          the workload's namespace (default: default)
      --service-account <sa>    the workload's service account (required)
      --ttl <duration>          how long the token can be used for a first certificate (default: 1h)
  -o, --output <text|json>      the token alone (default), or the token with its identity and expiry as JSON

Examples:
  loom token create --namespace shop --service-account bookinfo-reviews --ttl 1h > reviews.token
  chmod 600 reviews.token && loom proxy --xds 127.0.0.1:15010 --namespace shop \\
    --service-account bookinfo-reviews --identity-token-file reviews.token
`

export async function tokenCommand(argv: string[]): Promise<void> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      namespace: { type: 'string', short: 'n' },
      'service-account': { type: 'string' },
      ttl: { type: 'string' },
      output: { type: 'string', short: 'o' },
      server: { type: 'string' },
      ...CA_BUNDLE_FLAG,
      help: { type: 'boolean', short: 'h' },
    },
  })
  if (values.help) return void process.stdout.write(TOKEN_USAGE)
  if (positionals[0] !== 'create') fail(`unknown token command "${positionals[0] ?? ''}"\n\n${TOKEN_USAGE}`, 2)
  const sa = values['service-account']
  if (sa === undefined || sa === '') fail(`--service-account is required\n\n${TOKEN_USAGE}`, 2)
  const ttl = durationFlag(values.ttl, '--ttl')
  const out = values.output ?? 'text'
  if (out !== 'text' && out !== 'json') fail('-o must be text or json', 2)
  const body = {
    namespace: values.namespace ?? 'default',
    serviceAccount: sa,
    ...(ttl !== undefined ? { ttlSeconds: ttl / 1000 } : {}),
  }
  const { status, json } = await call(server(values), 'POST', '/api/v1/tokens', JSON.stringify(body), {
    'content-type': 'application/json',
  })
  const res = json as { token?: string; error?: { message: string } }
  if (status !== 200 || res.token === undefined) fail(res.error?.message ?? `HTTP ${status}`)
  process.stdout.write(out === 'json' ? `${JSON.stringify(json, null, 2)}\n` : `${res.token}\n`)
}

export const PROXY_STATUS_USAGE = `Usage: loom proxy-status [-o table|json] [--server URL] [--ca-bundle FILE]

Lists every proxy connected to the control plane and, per xDS type (CDS, LDS, EDS, RDS), whether it has the
newest config (SYNCED), is behind (STALE), rejected it (NACKED, with the reason), or got nothing yet (NOT_SENT).

Examples:
  loom proxy-status
  loom proxy-status -o json --server 127.0.0.1:15080
`

export function server(values: {
  server?: string | undefined
  'ca-bundle'?: string | undefined
  token?: string | undefined
}): ApiTarget {
  const s = values.server ?? process.env.LOOM_SERVER ?? DEFAULT_SERVER
  const base = s.startsWith('http') ? s.replace(/\/$/, '') : `http://${s}`
  const caBundle = base.startsWith('https:') ? caBundleFile(values['ca-bundle']) : undefined
  const token = apiTokenOf(values.token)
  return { base, ...(caBundle !== undefined ? { caBundle } : {}), ...(token !== undefined ? { token } : {}) }
}

/** `--ca-bundle` and `--token`, for every command that talks to the API. */
export const CA_BUNDLE_FLAG = { 'ca-bundle': { type: 'string' }, token: { type: 'string' } } as const

export async function call(
  target: ApiTarget,
  method: string,
  path: string,
  body?: string,
  headers: Record<string, string> = {},
): Promise<{ status: number; json: unknown }> {
  let text: string
  let status: number
  try {
    ;({ status, text } = await apiRequest(target, method, path, body, headers))
  } catch (err) {
    const hint = tlsHint(err as NodeJS.ErrnoException, target)
    throw new LoomError(
      ErrorCodes.USAGE,
      hint !== null
        ? `cannot talk to the control plane at ${target.base}: ${hint}`
        : `cannot reach the control plane at ${target.base} (${(err as Error).message}). ` +
            'Is `loom control` running? Set --server or LOOM_SERVER to its API address.',
    )
  }
  let json: unknown = null
  try {
    json = JSON.parse(text)
  } catch {
    json = { error: { message: text } }
  }
  return { status, json }
}

export function fail(message: string, code = 1): never {
  throw Object.assign(new LoomError(ErrorCodes.USAGE, message), { exitCode: code })
}

/** Reads a file, every manifest file of a directory, or stdin. Returns [source, text] pairs. */
function readManifests(path: string): [string, string][] {
  if (path === '-') return [['<stdin>', readFileSync(0, 'utf8')]]
  let st: ReturnType<typeof statSync>
  try {
    st = statSync(path)
  } catch {
    fail(`${path}: no such file or directory`)
  }
  if (st.isDirectory()) {
    return readdirSync(path)
      .filter((f) => /\.(ya?ml|json)$/.test(f))
      .sort()
      .map((f) => [join(path, f), readFileSync(join(path, f), 'utf8')] as [string, string])
  }
  return [[path, readFileSync(path, 'utf8')]]
}

interface ManifestErr {
  source: string
  index: number
  kind?: string
  name?: string
  path: string
  message: string
  line?: number
}

function formatErr(e: ManifestErr): string {
  const where = `${e.source}: document ${e.index}${e.kind === undefined ? '' : ` (${e.kind}${e.name === undefined ? '' : ` ${e.name}`})`}`
  return `${where}${e.line === undefined ? '' : `, line ${e.line}`}: ${e.path === '' ? '' : `${e.path}: `}${e.message}`
}

const CA_FLAGS = {
  'trust-domain': { type: 'string' },
  'cert-ttl': { type: 'string' },
  'ca-cert': { type: 'string' },
  'ca-key': { type: 'string' },
  'ca-chain': { type: 'string' },
  'ca-rotation-overlap': { type: 'string' },
  'ca-key-type': { type: 'string' },
} as const

type CaFlagValues = { [K in keyof typeof CA_FLAGS]?: string | undefined }

function durationFlag(text: string | undefined, flag: string): number | undefined {
  if (text === undefined) return undefined
  const ms = parseFlagDurationMs(text)
  if (ms === null) fail(`${flag} needs a duration such as 24h, 90m or 1h30m, got "${text}"`, 2)
  return ms
}

/** The CA options the flags ask for. */
export function caOptionsOf(values: CaFlagValues): Omit<CaOptions, 'dir'> {
  const out: Omit<CaOptions, 'dir'> = {}
  if (values['trust-domain'] !== undefined) out.trustDomain = values['trust-domain']
  const ttl = durationFlag(values['cert-ttl'], '--cert-ttl')
  if (ttl !== undefined) out.certTtlMs = ttl
  const overlap = durationFlag(values['ca-rotation-overlap'], '--ca-rotation-overlap')
  if (overlap !== undefined) out.rotationOverlapMs = overlap
  const keyType = values['ca-key-type']
  if (keyType !== undefined) {
    if (keyType !== 'ecdsa-p256' && keyType !== 'rsa-2048')
      fail(`--ca-key-type must be ecdsa-p256 or rsa-2048, not "${keyType}"`, 2)
    out.keyAlgorithm = keyType
  }
  const cert = values['ca-cert']
  const key = values['ca-key']
  if ((cert === undefined) !== (key === undefined)) fail('--ca-cert and --ca-key go together', 2)
  if (values['ca-chain'] !== undefined && cert === undefined) fail('--ca-chain needs --ca-cert and --ca-key', 2)
  if (cert !== undefined && key !== undefined)
    out.supplied = { certFile: cert, keyFile: key, chainFile: values['ca-chain'] }
  return out
}

async function rotateRootCommand(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      'data-dir': { type: 'string' },
      'ca-rotation-overlap': CA_FLAGS['ca-rotation-overlap'],
      'ca-key-type': CA_FLAGS['ca-key-type'],
      server: { type: 'string' },
      ...CA_BUNDLE_FLAG,
      propagation: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  })
  if (values.help) return void process.stdout.write(CONTROL_USAGE)
  if (values.server !== undefined) return rotateRootLive(values)
  if (values.propagation !== undefined) fail('--propagation is for a running control plane (--server)', 2)
  const { CertificateAuthority, caFiles } = await import('../control/ca/ca.js')
  const { caDir } = await import('../control/control.js')
  const dataDir = values['data-dir'] ?? '.loom'
  let source: string | undefined
  try {
    source = JSON.parse(readFileSync(caFiles(caDir(dataDir)).state, 'utf8')).active?.source
  } catch {
    // no state yet: the root is generated now and rotated at once
  }
  if (source === 'supplied')
    fail('the control plane uses a CA of its own (--ca-cert): rotate it by starting with the new --ca-* files')
  const ca = await CertificateAuthority.open({ dir: caDir(dataDir), ...caOptionsOf(values) })
  const before = ca.rootFingerprint
  await ca.rotate()
  const until = ca.rotationState().retiring.find((r) => r.fingerprint256 === before)?.trustedUntil
  process.stdout.write(`new root ${ca.rootFingerprint}\nprevious root ${before} trusted until ${until}\n`)
}

/** `loom control rotate-root --server URL`: the running control plane rotates (POST /api/v1/ca/rotate). */
async function rotateRootLive(values: {
  server?: string | undefined
  'ca-bundle'?: string | undefined
  token?: string | undefined
  propagation?: string | undefined
  'ca-rotation-overlap'?: string | undefined
}): Promise<void> {
  const propagation = durationFlag(values.propagation, '--propagation')
  const overlap = durationFlag(values['ca-rotation-overlap'], '--ca-rotation-overlap')
  const body = {
    ...(propagation !== undefined ? { propagationSeconds: propagation / 1000 } : {}),
    ...(overlap !== undefined ? { overlapSeconds: overlap / 1000 } : {}),
  }
  const { status, json } = await call(server(values), 'POST', '/api/v1/ca/rotate', JSON.stringify(body), {
    'content-type': 'application/json',
  })
  const res = json as { previousRoot?: string; nextRoot?: string; signingFrom?: string; overlapSeconds?: number }
  if (status !== 200) fail((json as { error?: { message: string } }).error?.message ?? `HTTP ${status}`)
  process.stdout.write(
    `next root ${res.nextRoot} trusted now, signing from ${res.signingFrom}\n` +
      `previous root ${res.previousRoot} trusted for ${res.overlapSeconds} s after that\n`,
  )
}

/** `on` or `off` (a TLS flag). */
function onOff(text: string | undefined, flag: string, dflt: boolean): boolean {
  if (text === undefined) return dflt
  if (text === 'on') return true
  if (text === 'off') return false
  fail(`${flag} must be on or off, not "${text}"`, 2)
}

export async function controlCommand(argv: string[]): Promise<void> {
  if (argv[0] === 'rotate-root') return rotateRootCommand(argv.slice(1))
  const { values } = parseArgs({
    args: argv,
    options: {
      'data-dir': { type: 'string' },
      store: { type: 'string' },
      ...ETCD_FLAGS,
      api: { type: 'string' },
      xds: { type: 'string' },
      'path-normalization': { type: 'string' },
      'mesh-config': { type: 'string' },
      ...CA_FLAGS,
      'xds-tls': { type: 'string' },
      'api-tls': { type: 'string' },
      'api-allowed-hosts': { type: 'string' },
      'api-token-file': { type: 'string' },
      'tls-cert': { type: 'string' },
      'tls-key': { type: 'string' },
      'telemetry-interval': { type: 'string' },
      'telemetry-retention': { type: 'string' },
      'replica-id': { type: 'string' },
      kubernetes: { type: 'boolean' },
      kubeconfig: { type: 'string' },
      'istio-api-version': { type: 'string' },
      'injection-webhook': { type: 'string' },
      'injection-host': { type: 'string' },
      'injection-image': { type: 'string' },
      'injection-xds': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  })
  if (values.help) return void process.stdout.write(CONTROL_USAGE)
  if (values['replica-id'] !== undefined && !/^[A-Za-z0-9][A-Za-z0-9._:-]{0,62}$/.test(values['replica-id']))
    fail(`--replica-id must be letters, digits, '.', '_', ':' or '-' (64 at most), not "${values['replica-id']}"`, 2)
  if (values['replica-id'] !== undefined && values.store?.startsWith('etcd://') !== true)
    fail('--replica-id needs --store etcd://... (replicas share an etcd cluster)', 2)
  const istioVersion = values['istio-api-version'] ?? 'v1'
  if (!['v1', 'v1beta1', 'v1alpha3'].includes(istioVersion))
    fail(`--istio-api-version must be v1, v1beta1 or v1alpha3, not "${istioVersion}"`, 2)
  const ca = caOptionsOf(values)
  const interval = values['telemetry-interval']
  const telemetry = {
    intervalMs: interval === 'off' || interval === '0' ? 0 : durationFlag(interval, '--telemetry-interval'),
    retentionMs: durationFlag(values['telemetry-retention'], '--telemetry-retention'),
  }
  if (telemetry.intervalMs !== undefined && telemetry.intervalMs > 0 && telemetry.intervalMs < 100)
    fail('--telemetry-interval must be 100ms or more (or off)', 2)
  if (telemetry.retentionMs !== undefined && telemetry.retentionMs < (telemetry.intervalMs || 5000) * 2)
    fail('--telemetry-retention must hold two intervals at least', 2)
  const xdsTls = onOff(values['xds-tls'], '--xds-tls', true)
  const apiTls = onOff(values['api-tls'], '--api-tls', false)
  if ((values['tls-cert'] === undefined) !== (values['tls-key'] === undefined))
    fail('--tls-cert and --tls-key go together', 2)
  const meshConfig = controlMeshConfig(values, ca)
  const tokenFile = values['api-token-file']
  let tokens: ApiTokens | null = null
  if (tokenFile !== undefined) {
    const { ApiTokens } = await import('../control/api-tokens.js')
    try {
      tokens = ApiTokens.open(tokenFile)
    } catch (err) {
      fail(`--api-token-file: ${(err as Error).message}`, 2)
    }
    if (tokens.counts().write === 0)
      log('warn', 'control', 'the API token file has no write token: every change through the API is refused', {
        file: tokenFile,
      })
    tokens.watch()
    process.on('SIGHUP', () => tokens?.reload())
  }
  const store = await openStore(values)
  let kubernetes: import('../control/kubernetes/source.js').KubernetesSource | undefined
  if (values.kubernetes === true || values.kubeconfig !== undefined) {
    const { KubeClient } = await import('../control/kubernetes/client.js')
    const { KubernetesSource } = await import('../control/kubernetes/source.js')
    let client: import('../control/kubernetes/client.js').KubeClient
    try {
      client = await KubeClient.open(values.kubeconfig)
    } catch (err) {
      fail(`--kubernetes: ${(err as Error).message}`, 2)
    }
    kubernetes = new KubernetesSource(client, { istioVersion })
    log('info', 'control', 'listing the cluster', { server: client.server })
  }
  const { ControlPlane, trustBundleFile } = await import('../control/control.js')
  const { ApiServer } = await import('../control/api-server.js')
  const { ControlTls } = await import('../control/tls.js')
  const [apiHost, apiPort] = splitHostPort(values.api ?? '127.0.0.1:15080', '--api')
  const [xdsHost, xdsPort] = splitHostPort(values.xds ?? '127.0.0.1:15010', '--xds')
  const dataDir = values['data-dir'] ?? '.loom'
  const etcd = store?.etcd ?? null
  const { sharedFiles, EtcdReplicas } = await import('../control/replicas.js')
  const cp = await ControlPlane.open({
    dataDir,
    ...(store !== null ? { store: store.store, registrations: store.registrations } : {}),
    ...(etcd !== null
      ? {
          shareFiles: async (name: string, dir: string, files: string[], create: () => Promise<void>) => {
            await sharedFiles(etcd, name, dir, files, `${hostname()}/${process.pid}`, create)
          },
        }
      : {}),
    ...(kubernetes !== undefined ? { kubernetes } : {}),
    meshConfig,
    ca,
    telemetry: {
      ...(telemetry.intervalMs !== undefined ? { intervalMs: telemetry.intervalMs } : {}),
      ...(telemetry.retentionMs !== undefined ? { retentionMs: telemetry.retentionMs } : {}),
    },
  })
  const tlsCert = values['tls-cert']
  const tls =
    !xdsTls && !apiTls
      ? null
      : tlsCert !== undefined
        ? new ControlTls({ kind: 'files', cert: tlsCert, key: values['tls-key']! })
        : new ControlTls({ kind: 'ca', ca: cp.ca!, hosts: [apiHost, xdsHost] })
  await tls?.start()
  cp.onTrustBundleChange((signerChanged) => {
    if (signerChanged && tlsCert === undefined)
      tls
        ?.refresh()
        .catch((err: unknown) =>
          log('error', 'control', 'cannot re-issue the control plane certificate', { error: String(err) }),
        )
    else tls?.trustChanged()
  })
  const allowedHosts = (values['api-allowed-hosts'] ?? '')
    .split(',')
    .map((h) => h.trim())
    .filter((h) => h !== '')
  const api = new ApiServer(cp, apiTls && tls !== null ? tls : undefined, { allowedHosts, tokens })
  const apiAddress = await api.listen(apiHost, apiPort)
  let webhook: import('../control/kubernetes/webhook.js').InjectionWebhook | null = null
  let webhookAddress: string | undefined
  if (values['injection-webhook'] !== undefined) {
    if (kubernetes === undefined) fail('--injection-webhook needs --kubernetes (the Namespace cache)', 2)
    if (cp.ca === null) fail('--injection-webhook needs the CA for its certificate', 2)
    const [host, port] = splitHostPort(values['injection-webhook'], '--injection-webhook')
    const { InjectionWebhook } = await import('../control/kubernetes/webhook.js')
    const webhookTls = new ControlTls({
      kind: 'ca',
      ca: cp.ca,
      hosts: [values['injection-host'] ?? 'loom-control.loom-system.svc', host],
    })
    await webhookTls.start()
    cp.onTrustBundleChange((signerChanged) => {
      if (signerChanged) void webhookTls.refresh().catch(() => {})
    })
    webhook = new InjectionWebhook(webhookTls, kubernetes, {
      image: values['injection-image'] ?? 'loom:latest',
      xdsAddress: values['injection-xds'] ?? 'loom-control.loom-system.svc:15010',
    })
    webhookAddress = await webhook.listen(host, port)
  }
  const xdsBound = await cp.xds.listen(xdsHost, xdsPort, xdsTls && tls !== null ? tls.grpcCredentials() : undefined)
  // replicas on one etcd: each announces itself (so proxy-status shows every proxy and where) and stands for leader
  // the addresses the other replicas reach this one at: a wildcard bind is announced with the host name
  const reachable = (host: string, port: number) =>
    `${host === '0.0.0.0' || host === '::' || host === '[::]' ? hostname() : host}:${port}`
  const xdsReachable = reachable(xdsHost, xdsBound)
  const replicaId = values['replica-id'] ?? xdsReachable
  const replicas =
    etcd === null
      ? null
      : await EtcdReplicas.join(etcd, {
          id: replicaId,
          api: reachable(apiHost, Number(apiAddress.slice(apiAddress.lastIndexOf(':') + 1))),
          xds: xdsReachable,
          startedAt: new Date().toISOString(),
        })
  cp.replicas = replicas
  log('info', 'control', 'ready', {
    api: apiAddress,
    xds: `${xdsHost}:${xdsBound}`,
    xds_tls: xdsTls,
    api_tls: apiTls,
    ...(tls !== null ? { trust_bundle: trustBundleFile(dataDir) } : {}),
    ...(tokens !== null ? { api_token_file: tokens.file, api_tokens: tokens.counts() } : {}),
    data_dir: dataDir,
    store: store?.description ?? 'file',
    ...(replicas !== null ? { replica: replicaId } : {}),
    ...(kubernetes !== undefined ? { kubernetes: kubernetes.client.server } : {}),
    ...(webhookAddress !== undefined ? { injection_webhook: webhookAddress } : {}),
    path_normalization: meshConfig.pathNormalization?.normalization ?? 'BASE',
    revision: cp.store.revision,
    trust_domain: cp.ca?.trustDomain,
  })
  let stopping = false
  const stop = () => {
    if (stopping) process.exit(1)
    stopping = true
    // drain: leave the replica list and the election, then close the proxies' streams with UNAVAILABLE so that
    // they move to another replica (serving their config meanwhile), then stop
    log('info', 'control', 'draining', { proxies: cp.xds.connectedNodes().length })
    tls?.close()
    tokens?.close()
    void (replicas?.close() ?? Promise.resolve())
      .then(() => Promise.all([api.close(), cp.close(), webhook?.close()]))
      .then(() => process.exit(0))
  }
  process.on('SIGTERM', stop)
  process.on('SIGINT', stop)
}

const ETCD_FLAGS = {
  'etcd-prefix': { type: 'string' },
  'etcd-ca': { type: 'string' },
  'etcd-cert': { type: 'string' },
  'etcd-key': { type: 'string' },
  'etcd-user': { type: 'string' },
  'etcd-password': { type: 'string' },
} as const

/** The store `--store` names (null: the embedded file store, which ControlPlane opens itself). */
async function openStore(values: {
  store?: string | undefined
  'etcd-prefix'?: string | undefined
  'etcd-ca'?: string | undefined
  'etcd-cert'?: string | undefined
  'etcd-key'?: string | undefined
  'etcd-user'?: string | undefined
  'etcd-password'?: string | undefined
}): Promise<{ store: Store; etcd: EtcdStore; registrations: RegistrationKeeper; description: string } | null> {
  const text = values.store ?? 'file'
  const etcdOnly = Object.keys(ETCD_FLAGS).filter((f) => values[f as keyof typeof values] !== undefined)
  if (text === 'file') {
    if (etcdOnly.length > 0) fail(`--${etcdOnly[0]} needs --store etcd://host:port[,host:port...]`, 2)
    return null
  }
  const { EtcdStore, parseEtcdUrl } = await import('../control/store/etcd-store.js')
  const { EtcdRegistrations } = await import('../control/registry/etcd-registrations.js')
  let endpoints: string[] | null
  try {
    endpoints = parseEtcdUrl(text)
  } catch (err) {
    fail((err as Error).message, 2)
  }
  if (endpoints === null) fail(`--store must be file or etcd://host:port[,host:port...], not "${text}"`, 2)
  if ((values['etcd-cert'] === undefined) !== (values['etcd-key'] === undefined))
    fail('--etcd-cert and --etcd-key go together', 2)
  if (values['etcd-cert'] !== undefined && values['etcd-ca'] === undefined)
    fail('--etcd-cert needs --etcd-ca (the CA the members are verified with)', 2)
  const password = values['etcd-password'] ?? process.env.LOOM_ETCD_PASSWORD
  if (values['etcd-user'] === undefined && values['etcd-password'] !== undefined)
    fail('--etcd-password needs --etcd-user', 2)
  if (values['etcd-user'] !== undefined && password === undefined)
    fail('--etcd-user needs a password: --etcd-password or LOOM_ETCD_PASSWORD', 2)
  const ca = values['etcd-ca']
  const store = await EtcdStore.open({
    endpoints,
    ...(values['etcd-prefix'] !== undefined ? { prefix: values['etcd-prefix'] } : {}),
    ...(ca !== undefined
      ? {
          tls: {
            ca,
            ...(values['etcd-cert'] !== undefined ? { cert: values['etcd-cert'], key: values['etcd-key']! } : {}),
          },
        }
      : {}),
    ...(values['etcd-user'] !== undefined ? { auth: { user: values['etcd-user'], password: password! } } : {}),
  }).catch((err: unknown) => fail((err as Error).message))
  log('info', 'control', 'etcd store opened', {
    endpoints: endpoints.join(','),
    prefix: store.prefix,
    revision: store.revision,
  })
  return {
    store,
    etcd: store,
    registrations: new EtcdRegistrations(store),
    description: `etcd://${endpoints.join(',')}`,
  }
}

function splitHostPort(text: string, flag: string): [string, number] {
  const m = /^(.*):(\d{1,5})$/.exec(text)
  if (m === null || Number(m[2]) > 65535) fail(`${flag} needs host:port, got "${text}"`, 2)
  return [m[1]!.replace(/^\[(.*)\]$/, '$1'), Number(m[2])]
}

export async function applyCommand(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      filename: { type: 'string', short: 'f', multiple: true },
      'dry-run': { type: 'boolean' },
      server: { type: 'string' },
      ...CA_BUNDLE_FLAG,
      output: { type: 'string', short: 'o' },
      help: { type: 'boolean', short: 'h' },
    },
  })
  if (values.help) return void process.stdout.write(APPLY_USAGE)
  if (values.filename === undefined || values.filename.length === 0)
    fail(`-f <file|dir|-> is required\n\n${APPLY_USAGE}`, 2)
  const base = server(values)
  let failed = false
  for (const f of values.filename) {
    for (const [source, text] of readManifests(f)) {
      const q = values['dry-run'] ? '?dryRun=true' : ''
      const { status, json } = await call(base, 'POST', `/api/v1/apply${q}`, text, { 'x-loom-source': source })
      const body = json as {
        results?: { kind: string; namespace: string; name: string; action: string }[]
        warnings?: Diagnostic[]
        errors?: ManifestErr[]
        error?: { message: string }
      }
      if (status === 422 && body.errors !== undefined) {
        failed = true
        process.stderr.write(`error: ${source} was not applied (nothing in it was written):\n`)
        for (const e of body.errors) process.stderr.write(`  ${formatErr(e)}\n`)
        continue
      }
      if (status !== 200) fail(`${source}: ${body.error?.message ?? `HTTP ${status}`}`)
      if (values.output === 'json') {
        process.stdout.write(`${JSON.stringify(body, null, 2)}\n`)
        continue
      }
      for (const r of body.results ?? []) {
        const kind = lookupKind(r.kind)?.plural ?? r.kind.toLowerCase()
        const ns = r.namespace === 'default' ? '' : ` -n ${r.namespace}`
        process.stdout.write(`${kind}/${r.name}${ns} ${r.action}${values['dry-run'] ? ' (dry run)' : ''}\n`)
      }
      // after the results, so a script reading stdout still gets only them; never an error exit
      for (const w of body.warnings ?? []) process.stderr.write(`${formatDiagnostic(w, 'Warning:')}\n`)
    }
  }
  if (failed) process.exitCode = 1
}

export async function getCommand(argv: string[]): Promise<void> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      namespace: { type: 'string', short: 'n' },
      'all-namespaces': { type: 'boolean', short: 'A' },
      output: { type: 'string', short: 'o' },
      server: { type: 'string' },
      ...CA_BUNDLE_FLAG,
      help: { type: 'boolean', short: 'h' },
    },
  })
  if (values.help) return void process.stdout.write(GET_USAGE)
  const [kindArg, name] = positionals
  if (kindArg === undefined) fail(`a kind is required\n\n${GET_USAGE}`, 2)
  const kind = lookupKind(kindArg)?.kind
  if (kind === undefined) fail(`unknown kind "${kindArg}"; kinds: ${SUPPORTED_KINDS.join(', ')}`, 2)
  const ns = values.namespace ?? 'default'
  const base = server(values)
  let items: Record<string, unknown>[]
  if (name !== undefined) {
    const { status, json } = await call(
      base,
      'GET',
      `/api/v1/resources/${kind}/${encodeURIComponent(ns)}/${encodeURIComponent(name)}`,
    )
    if (status === 404) fail(`${kind} "${name}" not found in namespace ${ns}`)
    if (status !== 200) fail((json as { error: { message: string } }).error.message)
    items = [json as Record<string, unknown>]
  } else {
    const q = values['all-namespaces'] ? '' : `&namespace=${encodeURIComponent(ns)}`
    const { status, json } = await call(base, 'GET', `/api/v1/resources?kind=${kind}${q}`)
    if (status !== 200) fail((json as { error: { message: string } }).error.message)
    items = (json as { items: Record<string, unknown>[] }).items
  }
  const out = values.output ?? 'table'
  if (out === 'json') {
    process.stdout.write(`${JSON.stringify(name !== undefined ? items[0] : { kind: 'List', items }, null, 2)}\n`)
  } else if (out === 'yaml') {
    process.stdout.write(items.map((i) => toYaml(i, { noRefs: true, lineWidth: 120 })).join('---\n'))
  } else if (out === 'table') {
    if (items.length === 0) {
      process.stderr.write(`No ${kind} resources found${values['all-namespaces'] ? '' : ` in namespace ${ns}`}.\n`)
      return
    }
    const rows = items.map((i) => {
      const md = i.metadata as { name: string; namespace: string; creationTimestamp?: string }
      const spec = (i.spec ?? {}) as Record<string, unknown>
      const hosts = Array.isArray(spec.hosts)
        ? (spec.hosts as string[]).join(',')
        : typeof spec.host === 'string'
          ? spec.host
          : ''
      return [...(values['all-namespaces'] ? [md.namespace] : []), md.name, hosts, age(md.creationTimestamp)]
    })
    const header = [...(values['all-namespaces'] ? ['NAMESPACE'] : []), 'NAME', 'HOSTS', 'AGE']
    process.stdout.write(table([header, ...rows], 3))
  } else fail(`-o must be table, yaml or json`, 2)
}

export async function deleteCommand(argv: string[]): Promise<void> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      filename: { type: 'string', short: 'f', multiple: true },
      namespace: { type: 'string', short: 'n' },
      server: { type: 'string' },
      ...CA_BUNDLE_FLAG,
      help: { type: 'boolean', short: 'h' },
    },
  })
  if (values.help) return void process.stdout.write(DELETE_USAGE)
  const base = server(values)
  const targets: [string, string, string][] = []
  if (values.filename !== undefined) {
    const { parseManifests } = await import('../api/index.js')
    for (const f of values.filename) {
      for (const [source, text] of readManifests(f)) {
        const parsed = parseManifests(text, source)
        for (const e of parsed.errors) process.stderr.write(`warning: ${formatErr(e)}\n`)
        for (const r of parsed.resources) targets.push([r.kind, r.metadata.namespace, r.metadata.name])
      }
    }
    // referrers first: with VirtualServices gone before the DestinationRules, Gateways and ServiceEntries they name,
    // no rebuild between two deletes can see a route to a subset or host that is already gone
    targets.sort((a, b) => Number(b[0] === 'VirtualService') - Number(a[0] === 'VirtualService'))
  } else {
    const [kindArg, name] = positionals
    if (kindArg === undefined || name === undefined) fail(`a kind and a name are required\n\n${DELETE_USAGE}`, 2)
    const kind = lookupKind(kindArg)?.kind
    if (kind === undefined) fail(`unknown kind "${kindArg}"; kinds: ${SUPPORTED_KINDS.join(', ')}`, 2)
    targets.push([kind, values.namespace ?? 'default', name])
  }
  let missing = 0
  for (const [kind, ns, name] of targets) {
    const { status, json } = await call(
      base,
      'DELETE',
      `/api/v1/resources/${kind}/${encodeURIComponent(ns)}/${encodeURIComponent(name)}`,
    )
    const plural = lookupKind(kind)?.plural ?? kind
    if (status === 404) {
      missing++
      process.stderr.write(`${plural}/${name}${ns === 'default' ? '' : ` -n ${ns}`} not found\n`)
    } else if (status === 200) process.stdout.write(`${plural}/${name}${ns === 'default' ? '' : ` -n ${ns}`} deleted\n`)
    else
      fail(
        `deleting ${kind} ${ns}/${name}: ${(json as { error?: { message?: string } }).error?.message ?? `HTTP ${status}`}`,
      )
  }
  if (missing > 0) process.exitCode = 1
}

const SHORT_TYPE: Record<string, string> = {
  'type.googleapis.com/envoy.config.cluster.v3.Cluster': 'CDS',
  'type.googleapis.com/envoy.config.listener.v3.Listener': 'LDS',
  'type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment': 'EDS',
  'type.googleapis.com/envoy.config.route.v3.RouteConfiguration': 'RDS',
  'type.googleapis.com/envoy.config.route.v3.VirtualHost': 'VHDS',
}

export async function proxyStatusCommand(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      output: { type: 'string', short: 'o' },
      server: { type: 'string' },
      ...CA_BUNDLE_FLAG,
      help: { type: 'boolean', short: 'h' },
    },
  })
  if (values.help) return void process.stdout.write(PROXY_STATUS_USAGE)
  const { status, json } = await call(server(values), 'GET', '/api/v1/proxy-status')
  if (status !== 200) fail(`HTTP ${status}`)
  const nodes = json as {
    nodeId: string
    protocol: string
    perType: { typeUrl: string; state: string; nackError?: string }[]
    replica?: string | null
  }[]
  if (values.output === 'json') return void process.stdout.write(`${JSON.stringify(nodes, null, 2)}\n`)
  if (nodes.length === 0) return void process.stderr.write('No proxies are connected.\n')
  const cols = ['CDS', 'LDS', 'EDS', 'RDS']
  // replicas on one etcd: which one each proxy is connected to
  const replicas = nodes.some((n) => typeof n.replica === 'string')
  const rows = nodes.map((n) => {
    const by = new Map(n.perType.map((t) => [SHORT_TYPE[t.typeUrl] ?? t.typeUrl, t]))
    return [n.nodeId, ...cols.map((c) => by.get(c)?.state ?? 'NOT_SENT'), ...(replicas ? [n.replica ?? '-'] : [])]
  })
  process.stdout.write(table([['NAME', ...cols, ...(replicas ? ['REPLICA'] : [])], ...rows], 3))
  for (const n of nodes) {
    for (const t of n.perType) {
      if (t.state === 'NACKED')
        process.stdout.write(`\n${n.nodeId} rejected ${SHORT_TYPE[t.typeUrl] ?? t.typeUrl}: ${t.nackError}\n`)
    }
  }
}

function age(ts: string | undefined): string {
  if (ts === undefined) return '-'
  const s = Math.max(0, Math.round((Date.now() - Date.parse(ts)) / 1000))
  if (s < 120) return `${s}s`
  if (s < 7200) return `${Math.round(s / 60)}m`
  if (s < 172800) return `${Math.round(s / 3600)}h`
  return `${Math.round(s / 86400)}d`
}

export async function analyzeCommand(argv: string[]): Promise<void> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      filename: { type: 'string', short: 'f', multiple: true },
      local: { type: 'boolean' },
      output: { type: 'string', short: 'o' },
      server: { type: 'string' },
      ...CA_BUNDLE_FLAG,
      help: { type: 'boolean', short: 'h' },
    },
  })
  if (values.help) return void process.stdout.write(ANALYZE_USAGE)
  const files = [...(values.filename ?? []), ...positionals]
  if (files.length === 0) fail(`a file, a directory or - is required\n\n${ANALYZE_USAGE}`, 2)
  const texts = files.flatMap((f) => readManifests(f))
  const diagnostics: Diagnostic[] = []
  if (values.local) {
    const { parseManifests } = await import('../api/index.js')
    const { Registry } = await import('../control/registry/registry.js')
    const { analyze } = await import('../control/translate/analyze.js')
    const resources = []
    const origins = new Map<string, { source: string; index: number }>()
    let invalid = false
    for (const [source, text] of texts) {
      const parsed = parseManifests(text, source)
      for (const e of parsed.errors) process.stderr.write(`error: ${formatErr(e)}\n`)
      invalid ||= parsed.errors.length > 0
      resources.push(...parsed.resources)
      parsed.resources.forEach((r, i) => {
        origins.set(`${r.kind}/${r.metadata.namespace}/${r.metadata.name}`, parsed.origins[i]!)
      })
    }
    if (invalid) {
      process.exitCode = 1
      return
    }
    const registry = new Registry()
    registry.setResources(resources)
    diagnostics.push(...locate(analyze(resources, registry.services()), origins))
  } else {
    const { status, json } = await call(
      server(values),
      'POST',
      '/api/v1/analyze',
      JSON.stringify({ files: texts.map(([source, text]) => ({ source, text })) }),
      { 'content-type': 'application/vnd.loom.files+json' },
    )
    const body = json as { diagnostics?: Diagnostic[]; errors?: ManifestErr[]; error?: { message: string } }
    if (status === 422 && body.errors !== undefined) {
      for (const e of body.errors) process.stderr.write(`error: ${formatErr(e)}\n`)
      process.exitCode = 1
      return
    }
    if (status !== 200) fail(body.error?.message ?? `HTTP ${status}`)
    diagnostics.push(...(body.diagnostics ?? []))
  }
  if (values.output === 'json') process.stdout.write(`${JSON.stringify(diagnostics, null, 2)}\n`)
  else if (diagnostics.length === 0) process.stdout.write('No problems found.\n')
  else {
    for (const d of diagnostics) process.stdout.write(`${formatDiagnostic(d)}\n`)
  }
  if (diagnostics.some((d) => d.level === 'error')) process.exitCode = 1
}
