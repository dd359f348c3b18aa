import assert from 'node:assert/strict'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test } from 'node:test'
import { readUpManifest } from './manifest.js'

function manifest(locality: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'loom-manifest-'))
  const file = join(dir, 'up.yaml')
  writeFileSync(
    file,
    `apiVersion: loom.dev/v1
kind: Workload
metadata: {name: echo}
spec:
  command: [node, echo.js]
  labels: {app: echo}
  ports: [{name: http, port: 8080}]
  locality: ${locality}
`,
  )
  return file
}

test('a Workload takes a locality, region[/zone[/subzone]]', () => {
  const m = readUpManifest(manifest('us-east1/us-east1-b/rack1'))
  assert.equal(m.workloads[0]!.spec.locality, 'us-east1/us-east1-b/rack1')
  assert.equal(readUpManifest(manifest('us-east1')).workloads[0]!.spec.locality, 'us-east1')
})

test('a malformed locality is rejected with its path', () => {
  for (const bad of ['r1//s1', 'r1/z1/s1/x', '"/z1"']) {
    assert.throws(
      () => readUpManifest(manifest(bad)),
      (err: Error) => /spec\.locality: must be region\[\/zone\[\/subzone\]\]/.test(err.message),
      bad,
    )
  }
})

test('sidecar.istio.io/inject: "false", as a label or an annotation, runs a Workload without a sidecar', () => {
  const dir = mkdtempSync(join(tmpdir(), 'loom-manifest-'))
  const file = join(dir, 'up.yaml')
  const doc = (name: string, extra: string) => `apiVersion: loom.dev/v1
kind: Workload
metadata: {name: ${name}${extra.startsWith('annotations') ? `, ${extra}` : ''}}
spec:
  command: [node, app.js]
  labels: {app: ${name}${extra.startsWith('inject') ? ', "sidecar.istio.io/inject": "false"' : ''}}
  ports: [{name: http, port: 8000, targetPort: 80}]
`
  writeFileSync(
    file,
    [
      doc('meshed', ''),
      doc('label', 'inject'),
      doc('annotation', 'annotations: {"sidecar.istio.io/inject": "false"}'),
    ].join('---\n'),
  )
  const m = readUpManifest(file)
  assert.deepEqual(
    m.workloads.map((w) => [w.name, w.sidecar]),
    [
      ['meshed', true],
      ['label', false],
      ['annotation', false],
    ],
  )
  assert.equal(m.workloads[0]!.spec.ports[0]!.targetPort, 80)
})
