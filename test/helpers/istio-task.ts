/** What Istio's security tasks do from a `sleep` pod, on a `loom up` mesh: curl a service, apply and delete config. */
import { readFileSync } from 'node:fs'
import * as http from 'node:http'
import { join } from 'node:path'
import { ROOT, runLoom } from './proxy.js'

export interface UpWorkload {
  name: string
  namespace: string
  outboundPort: number
  inbound: Record<string, number>
  sidecar?: boolean
}

export interface UpMesh {
  api: string
  workloads: UpWorkload[]
}

export function readMesh(dataDir: string): UpMesh {
  return JSON.parse(readFileSync(join(dataDir, 'up.json'), 'utf8')) as UpMesh
}

export function workload(mesh: UpMesh, name: string, namespace: string): UpWorkload {
  const w = mesh.workloads.find((x) => x.name === name && x.namespace === namespace)
  if (w === undefined) throw new Error(`no workload ${namespace}/${name} in up.json`)
  return w
}

export interface Reply {
  /** 0 when the connection failed or was reset (curl's `000`) */
  status: number
  body: string
}

/**
 * `curl http://<host>/<path>` from `sleep`: through its sidecar's outbound port when it has one, else (a workload
 * without a sidecar) straight to the target's own port, as a pod without a sidecar dials the pod. Never rejects.
 */
export function curl(
  mesh: UpMesh,
  from: UpWorkload,
  to: { service: string; namespace: string; port: number },
  path: string,
  headers: Record<string, string> = {},
): Promise<Reply> {
  const host = `${to.service}.${to.namespace}:${to.port}`
  const port =
    from.sidecar === false ? workload(mesh, to.service, to.namespace).inbound[String(to.port)]! : from.outboundPort
  return new Promise((done) => {
    const req = http.request(
      { host: '127.0.0.1', port, path, headers: { host, 'user-agent': 'curl/8.16.0', ...headers }, agent: false },
      (res) => {
        let body = ''
        res.setEncoding('utf8')
        res.on('data', (d) => (body += d))
        res.on('end', () => done({ status: res.statusCode ?? 0, body }))
        res.on('error', () => done({ status: 0, body }))
      },
    )
    req.setTimeout(10_000, () => req.destroy(new Error('timeout')))
    req.on('error', () => done({ status: 0, body: '' }))
    req.end()
  })
}

async function loom(args: string[], mesh: UpMesh): Promise<void> {
  const r = await runLoom([...args, '--server', `http://${mesh.api}`], 30_000)
  if (r.code !== 0) throw new Error(`loom ${args.join(' ')}: exit ${r.code}\n${r.stderr}`)
}

/** `loom apply -f <file>` against the mesh's control plane. */
export const apply = (mesh: UpMesh, file: string) => loom(['apply', '-f', file], mesh)
/** `loom delete -f <file>` against the mesh's control plane. */
export const remove = (mesh: UpMesh, file: string) => loom(['delete', '-f', file], mesh)

/** A file of the project's own Istio-format fixtures. */
export const fixture = (name: string) => join(ROOT, 'test', 'fixtures', 'istio', name)
