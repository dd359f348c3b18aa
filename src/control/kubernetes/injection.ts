/**
 * The sidecar injection webhook (`--injection-webhook host:port`): Kubernetes sends an AdmissionReview v1 for each
 * Pod created in a namespace labelled `istio-injection=enabled` or `loom-injection=enabled` (the
 * MutatingWebhookConfiguration's namespaceSelector; the webhook checks the label again from its Namespace cache),
 * and gets back a JSONPatch that adds, ahead of the pod's own init containers:
 *
 * - `loom-init`: the iptables step (NET_ADMIN, NET_RAW): the pod's outbound TCP, but the proxy's own (uid 1337) and
 *   loopback, redirected to the sidecar's outbound listener (15001);
 * - `loom-proxy`: `loom proxy --xds <control plane>` as a native sidecar, an init container with
 *   `restartPolicy: Always` (Kubernetes 1.29+), so it starts before the app containers and stops after them; its
 *   node metadata (namespace, labels, service account, pod IP) from the downward API.
 *
 * A pod opts out with the label or annotation `sidecar.istio.io/inject: "false"`; a pod that already has a
 * `loom-proxy` container is left as it is. The answer always allows the pod: the webhook never blocks a create.
 */
import type { KubeObject } from './client.js'

export interface InjectionOptions {
  /** the proxy's image */
  image: string
  /** the control plane's xDS address as pods reach it (`loom-control.loom-system.svc:15010`) */
  xdsAddress: string
  /** the outbound listener's port (default 15001) */
  outboundPort?: number
  /** the proxy's uid, whose traffic iptables leaves alone (default 1337) */
  proxyUid?: number
}

export interface AdmissionReview {
  apiVersion?: string
  kind?: string
  request?: {
    uid: string
    kind?: { group?: string; version?: string; kind?: string }
    operation?: string
    namespace?: string
    object?: KubeObject
  }
}

export interface JsonPatchOp {
  op: 'add' | 'replace'
  path: string
  value: unknown
}

const INJECT_LABELS = ['istio-injection', 'loom-injection']
const OPT_OUT = 'sidecar.istio.io/inject'
export const STATUS_ANNOTATION = 'sidecar.loom.dev/status'

/** Whether a namespace with these labels gets sidecars. */
export function namespaceInjects(labels: Record<string, string> | undefined): boolean {
  return INJECT_LABELS.some((l) => labels?.[l] === 'enabled')
}

/** The AdmissionReview answer for `review`: a JSONPatch when the pod gets a sidecar, a plain allow otherwise. */
export function admit(
  review: AdmissionReview,
  namespaceLabels: (ns: string) => Record<string, string> | undefined,
  options: InjectionOptions,
): AdmissionReview & { response: Record<string, unknown> } {
  const req = review.request
  const response: Record<string, unknown> = { uid: req?.uid ?? '', allowed: true }
  const answer = { apiVersion: 'admission.k8s.io/v1', kind: 'AdmissionReview', response }
  if (req === undefined || req.kind?.kind !== 'Pod' || req.operation !== 'CREATE' || req.object === undefined)
    return answer
  const ns = req.namespace ?? req.object.metadata?.namespace ?? 'default'
  if (!namespaceInjects(namespaceLabels(ns))) return answer
  const patch = injectionPatch(req.object, ns, options)
  if (patch.length === 0) return answer
  response.patchType = 'JSONPatch'
  response.patch = Buffer.from(JSON.stringify(patch)).toString('base64')
  return answer
}

interface PodSpec {
  initContainers?: Array<{ name: string }>
  containers?: Array<{ name: string; ports?: Array<{ containerPort: number }> }>
  serviceAccountName?: string
}

/** The JSONPatch that adds the iptables step and the proxy to a pod; empty when the pod opts out or has them. */
export function injectionPatch(pod: KubeObject, namespace: string, options: InjectionOptions): JsonPatchOp[] {
  const meta = pod.metadata ?? {}
  if (meta.labels?.[OPT_OUT] === 'false' || meta.annotations?.[OPT_OUT] === 'false') return []
  const spec = (pod.spec ?? {}) as PodSpec
  const all = [...(spec.initContainers ?? []), ...(spec.containers ?? [])]
  if (all.some((c) => c.name === 'loom-proxy')) return []
  const outbound = options.outboundPort ?? 15001
  const uid = options.proxyUid ?? 1337
  const labels = meta.labels ?? {}
  const iptables = [
    'set -e',
    'iptables -t nat -N LOOM_OUTPUT',
    'iptables -t nat -A OUTPUT -p tcp -j LOOM_OUTPUT',
    `iptables -t nat -A LOOM_OUTPUT -m owner --uid-owner ${uid} -j RETURN`,
    'iptables -t nat -A LOOM_OUTPUT -d 127.0.0.0/8 -j RETURN',
    `iptables -t nat -A LOOM_OUTPUT -p tcp -j REDIRECT --to-ports ${outbound}`,
  ].join('\n')
  const init = {
    name: 'loom-init',
    image: options.image,
    command: ['sh', '-c', iptables],
    securityContext: {
      runAsUser: 0,
      runAsNonRoot: false,
      capabilities: { add: ['NET_ADMIN', 'NET_RAW'], drop: ['ALL'] },
    },
  }
  const fieldEnv = (name: string, fieldPath: string) => ({ name, valueFrom: { fieldRef: { fieldPath } } })
  const proxy = {
    name: 'loom-proxy',
    image: options.image,
    restartPolicy: 'Always',
    args: [
      'proxy',
      '--xds',
      options.xdsAddress,
      '--xds-ca',
      '/var/run/secrets/loom/ca.crt',
      '--admin',
      '127.0.0.1:15000',
      '--labels',
      Object.entries(labels)
        .map(([k, v]) => `${k}=${v}`)
        .join(','),
      '--metadata',
      `NAMESPACE=${namespace}`,
      '--metadata',
      `SERVICE_ACCOUNT=${spec.serviceAccountName ?? 'default'}`,
      '--metadata',
      `OUTBOUND_PORT=${outbound}`,
    ],
    env: [
      fieldEnv('POD_NAME', 'metadata.name'),
      fieldEnv('POD_NAMESPACE', 'metadata.namespace'),
      fieldEnv('INSTANCE_IP', 'status.podIP'),
    ],
    securityContext: { runAsUser: uid, runAsGroup: uid, runAsNonRoot: true, allowPrivilegeEscalation: false },
    volumeMounts: [{ name: 'loom-ca', mountPath: '/var/run/secrets/loom', readOnly: true }],
  }
  const ops: JsonPatchOp[] = []
  if (spec.initContainers === undefined || spec.initContainers.length === 0)
    ops.push({ op: 'add', path: '/spec/initContainers', value: [init, proxy] })
  else {
    ops.push({ op: 'add', path: '/spec/initContainers/0', value: init })
    ops.push({ op: 'add', path: '/spec/initContainers/1', value: proxy })
  }
  const volume = { name: 'loom-ca', configMap: { name: 'loom-ca-root-cert' } }
  const volumes = (pod.spec as { volumes?: unknown[] } | undefined)?.volumes
  ops.push(
    volumes === undefined
      ? { op: 'add', path: '/spec/volumes', value: [volume] }
      : { op: 'add', path: '/spec/volumes/-', value: volume },
  )
  // the endpoints of an injected pod accept mutual TLS (the registry reads this label, as Istio's does)
  if (meta.labels === undefined)
    ops.push({ op: 'add', path: '/metadata/labels', value: { 'security.istio.io/tlsMode': 'istio' } })
  else ops.push({ op: 'add', path: '/metadata/labels/security.istio.io~1tlsMode', value: 'istio' })
  const status = JSON.stringify({ initContainers: ['loom-init', 'loom-proxy'], volumes: ['loom-ca'] })
  if (meta.annotations === undefined)
    ops.push({ op: 'add', path: '/metadata/annotations', value: { [STATUS_ANNOTATION]: status } })
  else
    ops.push({
      op: 'add',
      path: `/metadata/annotations/${STATUS_ANNOTATION.replace(/~/g, '~0').replace(/\//g, '~1')}`,
      value: status,
    })
  return ops
}
