import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { load } from 'js-yaml'
import { validateResource } from './kinds.js'

const y = (text: string) => load(text)
function issues(text: string) {
  const r = validateResource(y(text))
  return r.ok ? [] : r.issues
}

describe('Telemetry', () => {
  test("Istio's documented field set is accepted, v1 and v1alpha1", () => {
    for (const version of ['v1', 'v1alpha1']) {
      const r = validateResource(
        y(`apiVersion: telemetry.istio.io/${version}
kind: Telemetry
metadata: {name: mesh-default, namespace: istio-system}
spec:
  tracing:
  - match: {mode: CLIENT}
    providers: [{name: otel}]
    randomSamplingPercentage: 10.5
    disableSpanReporting: false
    useRequestIdForTraceSampling: true
    customTags:
      team: {literal: {value: bookinfo}}
      pod: {environment: {name: POD_NAME, defaultValue: unknown}}
      user: {header: {name: x-user, defaultValue: anonymous}}
  accessLogging:
  - providers: [{name: envoy}]
    disabled: false
    filter: {expression: "response.code >= 400"}
  metrics:
  - providers: [{name: prometheus}]
    reportingInterval: 15s
    overrides:
    - match: {metric: REQUEST_COUNT, mode: SERVER}
      disabled: false
      tagOverrides:
        request_host: {operation: UPSERT, value: request.host}
        destination_port: {operation: REMOVE}
`),
      )
      assert.ok(r.ok, JSON.stringify(!r.ok && r.issues))
      assert.equal(r.resource.kind, 'Telemetry')
    }
  })

  test('errors name the field path', () => {
    const base = 'apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {name: t}\nspec:\n'
    assert.deepEqual(
      issues(`${base}  tracing:\n  - randomSamplingPercentage: 101\n`).map((i) => [i.path, i.message]),
      [
        [
          'spec.tracing[0].randomSamplingPercentage',
          'randomSamplingPercentage must be in range [0.0, 100.0], found 101',
        ],
      ],
    )
    assert.deepEqual(
      issues(`${base}  tracing:\n  - customTags:\n      a: {literal: {value: x}, header: {name: y}}\n`).map(
        (i) => i.path,
      ),
      ['spec.tracing[0].customTags.a'],
    )
    assert.deepEqual(
      issues(`${base}  tracing:\n  - providers: [{name: a}, {name: b}]\n`).map((i) => [i.path, i.message]),
      [['spec.tracing[0].providers', 'multiple providers is not currently supported']],
    )
    assert.deepEqual(
      issues(`${base}  metrics:\n  - overrides:\n    - match: {metric: NOPE}\n`).map((i) => i.path),
      ['spec.metrics[0].overrides[0].match.metric'],
    )
    assert.deepEqual(
      issues(`${base}  metrics:\n  - overrides:\n    - tagOverrides: {x: {operation: REMOVE, value: v}}\n`).map(
        (i) => i.path,
      ),
      ['spec.metrics[0].overrides[0].tagOverrides.x'],
    )
    assert.deepEqual(
      issues(`${base}  selector: {matchLabels: {app: a}}\n  targetRefs: [{kind: Gateway, name: g}]\n`).map(
        (i) => i.path,
      ),
      ['spec'],
    )
    assert.deepEqual(
      issues(`${base}  tracing:\n  - sampling: 3\n`).map((i) => i.path),
      ['spec.tracing[0].sampling'],
    )
  })
})
