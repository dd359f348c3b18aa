/**
 * `loom certs`: the identities of a running local mesh. Per sidecar and gateway, the certificate its proxy holds
 * (from the admin endpoint's `/certs`); then the control plane's trust bundle (`GET /api/v1/ca`). A proxy that
 * does not answer gets a row that says so; the others are still printed, and the exit code is 1.
 */
import { parseArgs } from 'node:util'
import { ErrorCodes, LoomError } from '../core/errors.js'
import { alive, readState, statePath } from '../runtime/up.js'
import { table } from './table.js'

export const CERTS_USAGE = `Usage: loom certs [--data-dir DIR] [-o table|json]

The workload identities of the local mesh ('loom up' state in --data-dir, default ./.loom or ./.loom/demo): for
every sidecar and gateway, the certificate its proxy holds (SPIFFE ID, serial, issuer, expiry, next renewal), from
the proxy's admin endpoint (/certs); then the roots of the control plane's trust bundle (both roots during a
rotation, each with the end of its overlap). Exit code 1 when a proxy or the control plane does not answer.

Options:
      --data-dir <dir>  the mesh's data dir (default: ./.loom, then ./.loom/demo)
  -o, --output <fmt>    table (default) or json
  -h, --help            show this help

Examples:
  loom certs
  loom certs --data-dir .loom/demo -o json
  loom control rotate-root && loom certs      # the new root and the previous one, trusted side by side
`

const TIMEOUT_MS = 3000

interface ProxyIdentity {
  spiffe_id: string
  serial_number: string
  issuer?: string
  valid_from: string
  expiration_time: string
  next_renewal: string | null
  last_error?: string
}

export interface CertRow {
  workload: string
  kind: 'sidecar' | 'gateway'
  namespace: string | null
  admin: string
  spiffeId: string | null
  serialNumber: string | null
  issuer: string | null
  notBefore: string | null
  notAfter: string | null
  nextRenewal: string | null
  /** the last renewal attempt failed (the proxy keeps its certificate until it expires) */
  lastRenewalError: string | null
  /** why there is no certificate where one was expected: the proxy did not answer, or has none (yet) */
  error: string | null
}

interface TrustedRoot {
  subject: string
  serialNumber: string
  notBefore: string
  notAfter: string
  fingerprint256: string
  trustedUntil: string | null
}

async function getJson(url: string): Promise<unknown> {
  const r = await fetch(url, { signal: AbortSignal.timeout(TIMEOUT_MS) })
  if (r.status !== 200) {
    const body = await r.text().catch(() => '')
    let message = body
    try {
      message = (JSON.parse(body) as { error?: string }).error ?? body
    } catch {}
    throw new Error(`HTTP ${r.status}${message === '' ? '' : `: ${message.trim()}`}`)
  }
  return r.json()
}

function reason(err: unknown): string {
  const e = err as Error & { cause?: { code?: string } }
  if (e.name === 'TimeoutError') return `no answer in ${TIMEOUT_MS / 1000} s`
  return e.cause?.code ?? e.message
}

async function proxyRow(
  workload: string,
  kind: 'sidecar' | 'gateway',
  namespace: string | null,
  adminPort: number,
  expectIdentity: boolean,
  host = '127.0.0.1',
): Promise<CertRow> {
  const admin = `${host}:${adminPort}`
  const row: CertRow = {
    workload,
    kind,
    namespace,
    admin,
    spiffeId: null,
    serialNumber: null,
    issuer: null,
    notBefore: null,
    notAfter: null,
    nextRenewal: null,
    lastRenewalError: null,
    error: null,
  }
  let body: { identity?: ProxyIdentity | null }
  try {
    body = (await getJson(`http://${admin}/certs`)) as typeof body
  } catch (err) {
    row.error = `the proxy's admin endpoint ${admin} does not answer (${reason(err)})`
    return row
  }
  const id = body.identity
  if (id === undefined) {
    if (expectIdentity) row.error = 'the proxy runs without a workload identity'
    return row
  }
  if (id === null) {
    row.error = 'no certificate yet (the proxy is still asking the control plane)'
    return row
  }
  row.spiffeId = id.spiffe_id
  row.serialNumber = id.serial_number
  row.issuer = id.issuer ?? null
  row.notBefore = id.valid_from
  row.notAfter = id.expiration_time
  row.nextRenewal = id.next_renewal
  row.lastRenewalError = id.last_error ?? null
  return row
}

/** A duration from now, the way a person reads it: `in 23h 59m`, `in 4m`, `12m ago`. */
export function fromNow(iso: string, now = Date.now()): string {
  const ms = Date.parse(iso) - now
  const abs = Math.abs(ms)
  const m = Math.floor(abs / 60_000)
  const d = Math.floor(m / 1440)
  const h = Math.floor((m % 1440) / 60)
  const text = d > 0 ? `${d}d ${h}h` : h > 0 ? `${h}h ${m % 60}m` : m > 0 ? `${m}m` : `${Math.floor(abs / 1000)}s`
  return ms >= 0 ? `in ${text}` : `${text} ago`
}

/** `CN=loom root\nO=cluster.local` → `CN=loom root, O=cluster.local` */
function dn(text: string | null): string {
  return text === null ? '-' : text.split('\n').join(', ')
}

/** Aligned columns; a short row's last cell (a row's error) runs on without widening the columns it spans. */

export async function certsCommand(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      'data-dir': { type: 'string' },
      output: { type: 'string', short: 'o' },
      help: { type: 'boolean', short: 'h' },
    },
  })
  if (values.help) return void process.stdout.write(CERTS_USAGE)
  const output = values.output ?? 'table'
  if (output !== 'table' && output !== 'json')
    throw new LoomError(ErrorCodes.USAGE, `-o must be table or json, not "${output}"`)
  const dirs = values['data-dir'] !== undefined ? [values['data-dir']] : ['.loom', '.loom/demo']
  const state = dirs.map((d) => readState(d)).find((s) => s !== null)
  if (state === undefined)
    throw new LoomError(
      ErrorCodes.USAGE,
      `no mesh is running (no ${dirs.map(statePath).join(' or ')}); start one with 'loom up -f <dir>' or 'loom demo', or pass --data-dir`,
    )
  if (!alive(state.pid))
    process.stderr.write(
      `loom: the loom up of ${state.dataDir} (pid ${state.pid}) is not running; 'loom down --data-dir ${state.dataDir}' stops what it left\n`,
    )
  const [rows, ca] = await Promise.all([
    Promise.all([
      ...state.workloads
        .filter((w) => w.sidecar !== false)
        .map((w) =>
          proxyRow(w.name, 'sidecar', w.namespace, w.adminPort, (w.identityTokenFile ?? null) !== null, w.address),
        ),
      ...state.gateways.map((g) => proxyRow(g.name, 'gateway', null, g.adminPort, false)),
    ]),
    getJson(`http://${state.api}/api/v1/ca`).then(
      (b) => ({ ca: b as { trustDomain: string; trustBundle?: TrustedRoot[] }, error: null }),
      (err: unknown) => ({ ca: null, error: `the control plane at ${state.api} does not answer (${reason(err)})` }),
    ),
  ])
  if (rows.some((r) => r.error !== null) || ca.error !== null) process.exitCode = 1
  if (output === 'json') {
    const out = {
      dataDir: state.dataDir,
      trustDomain: ca.ca?.trustDomain ?? null,
      proxies: rows,
      trustBundle: ca.ca?.trustBundle ?? null,
      ...(ca.error !== null ? { error: ca.error } : {}),
    }
    return void process.stdout.write(`${JSON.stringify(out, null, 2)}\n`)
  }
  const now = Date.now()
  let s = state.phase === 'starting' ? `the mesh is starting (loom up pid ${state.pid})\n` : ''
  s += table([
    ['WORKLOAD', 'SPIFFE ID', 'SERIAL', 'ISSUER', 'NOT AFTER', 'NEXT RENEWAL'],
    ...rows.map((r) =>
      r.spiffeId === null
        ? [r.kind === 'gateway' ? `${r.workload} (gateway)` : r.workload, `- ${r.error ?? 'no workload identity'}`]
        : [
            r.kind === 'gateway' ? `${r.workload} (gateway)` : r.workload,
            r.spiffeId,
            r.serialNumber ?? '-',
            dn(r.issuer),
            `${r.notAfter} (${fromNow(r.notAfter!, now)})`,
            (r.nextRenewal === null ? '-' : `${r.nextRenewal} (${fromNow(r.nextRenewal, now)})`) +
              (r.lastRenewalError !== null ? `  (last renewal failed: ${r.lastRenewalError})` : ''),
          ],
    ),
  ])
  if (ca.error !== null) s += `\nTrust bundle: ${ca.error}\n`
  else {
    const roots = ca.ca!.trustBundle ?? []
    s += `\nTrust bundle (${ca.ca!.trustDomain}, ${roots.length} root${roots.length === 1 ? '' : 's'}):\n`
    s += table([
      ['  SUBJECT', 'SERIAL', 'NOT AFTER', 'TRUSTED'],
      ...roots.map((r) => [
        `  ${dn(r.subject)}`,
        r.serialNumber,
        `${r.notAfter} (${fromNow(r.notAfter, now)})`,
        r.trustedUntil === null ? 'active (signs)' : `until ${r.trustedUntil} (${fromNow(r.trustedUntil, now)})`,
      ]),
    ])
  }
  process.stdout.write(s)
}
