/** `loom control --mesh-config`: Istio's MeshConfig YAML read, validated with paths, unread fields warned about. */
import assert from 'node:assert/strict'
import { rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, test } from 'node:test'
import { controlMeshConfig } from '../cli/mesh-config-flag.js'
import { parseMeshConfig } from './mesh-config.js'

const invalid = (text: string) => {
  try {
    parseMeshConfig(text, 'mesh.yaml')
  } catch (err) {
    return (err as Error).message
  }
  assert.fail('accepted')
}

describe('mesh config file', () => {
  test('the fields Loom reads, as Istio writes them', () => {
    const { mesh, warnings } = parseMeshConfig(
      `rootNamespace: mesh-root
trustDomain: example.com
connectTimeout: 5s
pathNormalization: {normalization: MERGE_SLASHES}
defaultConfig:
  gatewayTopology: {numTrustedProxies: 2}
  holdApplicationUntilProxyStarts: true
localityLbSetting: {enabled: false}
enableTracing: true
extensionProviders:
- name: http
  envoyExtAuthzHttp:
    service: ext-authz.foo.svc.cluster.local
    port: "8000"
    timeout: 1s
    failOpen: true
    statusOnError: "503"
    includeRequestHeadersInCheck: [x-ext-authz]
    clearRouteCache: true
- name: grpc
  envoyExtAuthzGrpc: {service: foo/ext-authz.foo.svc.cluster.local, port: 9000}
`,
      'mesh.yaml',
    )
    assert.equal(mesh.rootNamespace, 'mesh-root')
    assert.equal(mesh.trustDomain, 'example.com')
    assert.equal(mesh.connectTimeout, '5s')
    assert.deepEqual(mesh.pathNormalization, { normalization: 'MERGE_SLASHES' })
    assert.deepEqual(mesh.defaultConfig, { gatewayTopology: { numTrustedProxies: 2 } })
    assert.deepEqual(mesh.localityLbSetting, { enabled: false })
    assert.equal(mesh.extensionProviders?.[0]?.envoyExtAuthzHttp?.port, 8000, 'a port string is a number')
    assert.equal(mesh.extensionProviders?.[1]?.envoyExtAuthzGrpc?.port, 9000)
    assert.equal(mesh.enableTracing, true)
    assert.deepEqual(warnings, [
      'mesh.yaml: defaultConfig.holdApplicationUntilProxyStarts: not read by Loom (ignored)',
      'mesh.yaml: extensionProviders[0].envoyExtAuthzHttp.clearRouteCache: not read by Loom (ignored)',
    ])
  })

  test('an empty file is an empty mesh config', () => {
    assert.deepEqual(parseMeshConfig('', 'mesh.yaml'), { mesh: {}, warnings: [] })
  })

  test('errors name the file and the field path', () => {
    assert.match(
      invalid('extensionProviders:\n- name: a\n  envoyExtAuthzHttp: {service: a, port: 0}\n'),
      /mesh\.yaml: extensionProviders\[0\]\.envoyExtAuthzHttp\.port: port number must be between 1 and 65535/,
    )
    assert.match(
      invalid('extensionProviders:\n- name: a\n  envoyExtAuthzGrpc: {port: 80}\n'),
      /mesh\.yaml: extensionProviders\[0\]\.envoyExtAuthzGrpc\.service: required field is missing/,
    )
    assert.match(
      invalid('extensionProviders:\n- name: a\n  envoyExtAuthzHttp: {service: a, port: 80, statusOnError: nope}\n'),
      /statusOnError: invalid statusOnError "nope"/,
    )
    assert.match(
      invalid('pathNormalization: {normalization: ALL}\n'),
      /pathNormalization\.normalization: invalid value/,
    )
    assert.match(
      invalid('extensionProviders:\n- {name: a}\n- {name: a}\n'),
      /extensionProviders\[1\]\.name: extension provider name must be unique/,
    )
    assert.match(invalid('kind: ConfigMap\n'), /found a "kind" key: the file is the MeshConfig object itself/)
    assert.match(invalid('[1, 2]\n'), /a MeshConfig must be a mapping/)
  })

  test('flags win over the file; the file sets the CA trust domain when the flag does not', () => {
    const file = join(tmpdir(), `loom-mesh-config-test-${process.pid}.yaml`)
    writeFileSync(file, 'trustDomain: file.example\npathNormalization: {normalization: NONE}\n')
    const ca: { trustDomain?: string } = {}
    assert.deepEqual(controlMeshConfig({ 'mesh-config': file }, ca), {
      trustDomain: 'file.example',
      pathNormalization: { normalization: 'NONE' },
    })
    assert.equal(ca.trustDomain, 'file.example')
    const ca2: { trustDomain?: string } = { trustDomain: 'flag.example' }
    const m = controlMeshConfig(
      { 'mesh-config': file, 'path-normalization': 'MERGE_SLASHES', 'trust-domain': 'flag.example' },
      ca2,
    )
    assert.deepEqual(m, { trustDomain: 'flag.example', pathNormalization: { normalization: 'MERGE_SLASHES' } })
    assert.equal(ca2.trustDomain, 'flag.example')
    rmSync(file)
  })

  test('tracing: opentelemetry providers, defaultProviders, enableTracing, defaultConfig.tracing.sampling', () => {
    const { mesh, warnings } = parseMeshConfig(
      `enableTracing: false
defaultConfig:
  tracing: {sampling: 10}
defaultProviders:
  tracing: [otel]
  accessLogging: [envoy]
extensionProviders:
- name: otel
  opentelemetry:
    service: observability/otel-collector.observability.svc.cluster.local
    port: 4318
    maxTagLength: 128
    http:
      path: /v1/traces
      timeout: 2s
      headers: [{name: x-token, value: abc}]
- name: envoy
  envoyFileAccessLog: {path: /dev/stdout}
- name: zipkin
  zipkin: {service: zipkin.istio-system.svc.cluster.local, port: 9411}
`,
      'mesh.yaml',
    )
    assert.equal(mesh.enableTracing, false)
    assert.deepEqual(mesh.defaultConfig, { tracing: { sampling: 10 } })
    assert.deepEqual(mesh.defaultProviders, { tracing: ['otel'], accessLogging: ['envoy'] })
    assert.equal(mesh.extensionProviders?.[0]?.opentelemetry?.http?.timeout, '2s')
    assert.equal(mesh.extensionProviders?.[1]?.envoyFileAccessLog?.path, '/dev/stdout')
    assert.deepEqual(warnings, ['mesh.yaml: extensionProviders[2].zipkin: not read by Loom (ignored)'])
    const invalid = (text: string) => {
      try {
        parseMeshConfig(text, 'mesh.yaml')
      } catch (e) {
        return (e as Error).message
      }
      return assert.fail('accepted')
    }
    assert.match(
      invalid('defaultConfig: {tracing: {sampling: 101}}\n'),
      /defaultConfig\.tracing\.sampling: sampling must be/,
    )
    assert.match(
      invalid('extensionProviders:\n- {name: o, opentelemetry: {service: c, port: 0}}\n'),
      /extensionProviders\[0\]\.opentelemetry\.port: port number must be between 1 and 65535/,
    )
    assert.match(
      invalid('extensionProviders:\n- {name: o, opentelemetry: {service: c, port: 1, http: {path: v1}}}\n'),
      /extensionProviders\[0\]\.opentelemetry\.http\.path: path must begin with/,
    )
    assert.match(
      invalid(
        'extensionProviders:\n- {name: o, opentelemetry: {service: c, port: 1}, envoyFileAccessLog: {path: /x}}\n',
      ),
      /extensionProviders\[0\]: only one provider kind may be set \(found opentelemetry, envoyFileAccessLog\)/,
    )
  })
})
