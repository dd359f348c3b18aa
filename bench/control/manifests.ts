// The configuration the control-plane benchmark applies: N services as ServiceEntries (STATIC, MESH_INTERNAL, one
// HTTP port, inline endpoints with distinct IPs) plus one VirtualService per service (a route to it with a timeout).
// Plain YAML text, as `loom apply -f` would send it.

export const NAMESPACE = 'default'
export const SERVICE_PORT = 80
export const ENDPOINT_PORT = 8080

export const serviceName = (i: number): string => `svc-${String(i).padStart(5, '0')}`
export const serviceHost = (i: number): string => `${serviceName(i)}.${NAMESPACE}.svc.cluster.local`

/** A distinct IPv4 address for endpoint number `n` (10.64.0.0/10: 4M addresses, far from the proxies' 10.0/16). */
export function endpointIp(n: number): string {
  const v = 64 * 2 ** 16 + n
  return `10.${(v >>> 16) & 255}.${(v >>> 8) & 255}.${v & 255}`
}

/** ServiceEntry `i` with `endpoints` inline endpoints, numbered from `firstEndpoint`. */
export function serviceEntry(i: number, endpoints: number, firstEndpoint: number): string {
  const eps: string[] = []
  for (let k = 0; k < endpoints; k++) eps.push(`  - {address: ${endpointIp(firstEndpoint + k)}}`)
  return `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ${serviceName(i)}, namespace: ${NAMESPACE}}
spec:
  hosts: [${serviceHost(i)}]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {number: ${SERVICE_PORT}, name: http, protocol: HTTP, targetPort: ${ENDPOINT_PORT}}
  endpoints:
${eps.join('\n')}
`
}

/** VirtualService for service `i`: one route to it, with a timeout (the knob the single-change step turns). */
export function virtualService(i: number, timeoutS: number): string {
  return `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ${serviceName(i)}, namespace: ${NAMESPACE}}
spec:
  hosts: [${serviceHost(i)}]
  http:
  - route:
    - destination: {host: ${serviceHost(i)}, port: {number: ${SERVICE_PORT}}}
    timeout: ${timeoutS}s
`
}

/** Services [from, to): a ServiceEntry with 2 endpoints and a VirtualService each, as one multi-document YAML. */
export function services(from: number, to: number, timeoutS = 5): string {
  const docs: string[] = []
  for (let i = from; i < to; i++) docs.push(serviceEntry(i, 2, 2 * i), virtualService(i, timeoutS))
  return docs.join('---\n')
}

/** `count` services with `perService` endpoints each (the proxy-memory phase), endpoint numbers from `base`. */
export function wideServices(count: number, perService: number, base: number): string {
  const docs: string[] = []
  for (let i = 0; i < count; i++) docs.push(serviceEntry(i, perService, base + i * perService))
  return docs.join('---\n')
}
