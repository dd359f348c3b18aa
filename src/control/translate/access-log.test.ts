/**
 * Mesh-wide access logs (MeshConfig accessLogFile, accessLogEncoding, accessLogFormat): the file access log on every
 * connection manager and TCP proxy of sidecars (inbound and outbound) and gateways, in the format asked for; none
 * without accessLogFile. The config the translator writes is accepted by the proxy's schema.
 */
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import * as v from 'valibot'
import { Listener } from '../../config/envoy.js'
import { decodeResource, encodeResource } from '../../xds/proto.js'
import { TYPE_URL } from '../../xds/snapshot.js'
import { parseMeshConfig } from '../mesh-config.js'
import { Registry } from '../registry/registry.js'
import { accessLogConfig, ISTIO_TEXT_FORMAT } from './access-log.js'
import type { MeshConfig } from './scope.js'
import { bookinfoRegistry, INGRESS, manifests, PRODUCTPAGE, samples, sidecar } from './testdata/bookinfo.js'
import { translateResources } from './translate.js'
import type { Json } from './util.js'

const FILE_LOG = 'type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog'

/** Every network filter's typed_config (connection managers and TCP proxies), by listener name. */
function terminalFilters(listeners: Json[]): { listener: string; type: string; config: Json }[] {
  const out: { listener: string; type: string; config: Json }[] = []
  for (const l of listeners)
    for (const fc of l.filter_chains as Json[])
      for (const f of fc.filters as Json[]) {
        const t = f.typed_config as Json
        if (String(t['@type']).endsWith('HttpConnectionManager') || String(t['@type']).endsWith('TcpProxy'))
          out.push({ listener: l.name as string, type: String(t['@type']).split('.').at(-1)!, config: t })
      }
  return out
}

const mesh = (yaml: string): MeshConfig => parseMeshConfig(yaml, 'mesh.yaml').mesh

const DB = `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: db, namespace: default}
spec:
  hosts: [db.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 5432, name: tcp-postgres, protocol: TCP}, {number: 8080, name: http, protocol: HTTP}]
  endpoints: [{address: 10.0.0.7, labels: {app: db}}]
`

describe('mesh-wide access logs', () => {
  const gateway = () => samples('bookinfo-gateway.yaml')
  const services = bookinfoRegistry().services()

  it('accessLogFile puts a file access log on every sidecar and gateway connection manager, and TCP proxies', () => {
    const meshConfig = mesh('accessLogFile: /dev/stdout\n')
    const db = manifests(DB)
    const seen: string[] = []
    const nodes = [
      { node: PRODUCTPAGE, resources: [], services },
      { node: INGRESS, resources: gateway(), services },
      { node: sidecar('db', 'v1', '10.0.0.7'), resources: db, services: Registry.fromResources(db).services() },
    ]
    for (const { node, resources, services } of nodes) {
      const r = translateResources({ resources, services, meshConfig }, node)
      const filters = terminalFilters(r.listeners)
      assert.ok(filters.length > 0, node.id)
      for (const f of filters) {
        assert.deepEqual(
          f.config.access_log,
          [{ name: 'envoy.access_loggers.file', typed_config: { '@type': FILE_LOG, path: '/dev/stdout' } }],
          `${node.id} ${f.listener}`,
        )
        seen.push(`${f.listener} ${f.type}`)
      }
      for (const l of r.listeners) assert.ok(v.safeParse(Listener, l).success, `${l.name} passes the proxy's schema`)
    }
    // PERMISSIVE inbound ports have two chains (mTLS and plain text), each with its own filters
    assert.deepEqual(seen.sort(), [
      '0.0.0.0_8080 HttpConnectionManager',
      'inbound|5432 TcpProxy',
      'inbound|5432 TcpProxy',
      'inbound|8080 HttpConnectionManager',
      'inbound|8080 HttpConnectionManager',
      'inbound|9080 HttpConnectionManager',
      'inbound|9080 HttpConnectionManager',
      'outbound_http HttpConnectionManager',
      'outbound_http HttpConnectionManager',
    ])
  })

  it('no accessLogFile, no access log', () => {
    const r = translateResources({ resources: gateway(), services }, INGRESS)
    for (const f of terminalFilters(r.listeners)) assert.equal(f.config.access_log, undefined)
    assert.equal(mesh('accessLogEncoding: JSON\n').accessLog, undefined)
    assert.equal(mesh('accessLogFile: ""\n').accessLog, undefined)
  })

  it('the encodings and formats, as Istio reads them', () => {
    // JSON (Loom's default, and with no format): the proxy's own full JSON entry
    assert.deepEqual(mesh('accessLogFile: /var/log/a.log\naccessLogEncoding: JSON\n').accessLog, {
      path: '/var/log/a.log',
    })
    // TEXT without a format: Istio's default line
    assert.deepEqual(mesh('accessLogFile: /dev/stdout\naccessLogEncoding: TEXT\n').accessLog, {
      path: '/dev/stdout',
      text: ISTIO_TEXT_FORMAT,
    })
    // TEXT with a format: that format, a newline added
    const text = mesh(`accessLogFile: /dev/stdout
accessLogEncoding: TEXT
accessLogFormat: "%REQ(:METHOD)% %RESPONSE_CODE%"
`).accessLog!
    assert.deepEqual(accessLogConfig(text), {
      name: 'envoy.access_loggers.file',
      typed_config: {
        '@type': FILE_LOG,
        path: '/dev/stdout',
        log_format: { text_format_source: { inline_string: '%REQ(:METHOD)% %RESPONSE_CODE%\n' } },
      },
    })
    // JSON with a format: the format is a JSON object of operators
    const json = mesh(`accessLogFile: /dev/stdout
accessLogEncoding: JSON
accessLogFormat: '{"status": "%RESPONSE_CODE%", "who": "%DOWNSTREAM_PEER_URI_SAN%"}'
`).accessLog!
    assert.deepEqual((accessLogConfig(json).typed_config as Json).log_format, {
      json_format: { status: '%RESPONSE_CODE%', who: '%DOWNSTREAM_PEER_URI_SAN%' },
    })
  })

  it('the formats reach the proxy over xDS unchanged', () => {
    const meshConfig = mesh(`accessLogFile: /dev/stdout
accessLogEncoding: TEXT
`)
    const json = mesh(`accessLogFile: /tmp/a.log
accessLogFormat: '{"status": "%RESPONSE_CODE%", "n": 1}'
`)
    for (const m of [meshConfig, json]) {
      const r = translateResources({ resources: gateway(), services, meshConfig: m }, INGRESS)
      for (const l of r.listeners) {
        const wire = { '@type': TYPE_URL.listener, ...l }
        assert.deepEqual(decodeResource(encodeResource(wire)), wire)
      }
    }
  })

  it('a format the proxy cannot write is refused with the field', () => {
    const refused = (yaml: string) => {
      try {
        parseMeshConfig(yaml, 'mesh.yaml')
      } catch (err) {
        return (err as Error).message
      }
      assert.fail('accepted')
    }
    assert.match(
      refused('accessLogFile: /dev/stdout\naccessLogEncoding: TEXT\naccessLogFormat: "%NOPE%"\n'),
      /mesh\.yaml: accessLogFormat: unknown command operator %NOPE%/,
    )
    assert.match(
      refused('accessLogFile: /dev/stdout\naccessLogFormat: "not json"\n'),
      /mesh\.yaml: accessLogFormat: .* a JSON object of command operators/,
    )
    assert.match(refused('accessLogEncoding: XML\n'), /accessLogEncoding/)
  })
})
