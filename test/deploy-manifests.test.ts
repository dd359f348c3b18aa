/**
 * Every manifest shipped in deploy/kubernetes/ is valid Kubernetes: each document is checked against the API's own
 * OpenAPI schemas by kubernetes-models (the schemas of the Kubernetes release it is built from), and a document of a
 * kind the check does not know fails the test rather than passing unchecked.
 */
import assert from 'node:assert/strict'
import { readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { test } from 'node:test'
import { loadAll } from 'js-yaml'
import { ROOT } from './helpers/proxy.js'

const DIR = join(ROOT, 'deploy', 'kubernetes')

/** apiVersion/kind → the kubernetes-models module and class that validates it */
const MODELS: Record<string, [string, string]> = {
  'v1/Namespace': ['kubernetes-models/v1/Namespace', 'Namespace'],
  'v1/ServiceAccount': ['kubernetes-models/v1/ServiceAccount', 'ServiceAccount'],
  'v1/Service': ['kubernetes-models/v1/Service', 'Service'],
  'v1/ConfigMap': ['kubernetes-models/v1/ConfigMap', 'ConfigMap'],
  'apps/v1/Deployment': ['kubernetes-models/apps/v1/Deployment', 'Deployment'],
  'rbac.authorization.k8s.io/v1/ClusterRole': [
    'kubernetes-models/rbac.authorization.k8s.io/v1/ClusterRole',
    'ClusterRole',
  ],
  'rbac.authorization.k8s.io/v1/ClusterRoleBinding': [
    'kubernetes-models/rbac.authorization.k8s.io/v1/ClusterRoleBinding',
    'ClusterRoleBinding',
  ],
  'rbac.authorization.k8s.io/v1/Role': ['kubernetes-models/rbac.authorization.k8s.io/v1/Role', 'Role'],
  'rbac.authorization.k8s.io/v1/RoleBinding': [
    'kubernetes-models/rbac.authorization.k8s.io/v1/RoleBinding',
    'RoleBinding',
  ],
  'admissionregistration.k8s.io/v1/MutatingWebhookConfiguration': [
    'kubernetes-models/admissionregistration.k8s.io/v1/MutatingWebhookConfiguration',
    'MutatingWebhookConfiguration',
  ],
  'apiextensions.k8s.io/v1/CustomResourceDefinition': [
    'kubernetes-models/apiextensions.k8s.io/v1/CustomResourceDefinition',
    'CustomResourceDefinition',
  ],
}

interface Doc {
  apiVersion?: string
  kind?: string
  metadata?: { name?: string }
}

async function validate(doc: Doc): Promise<void> {
  const key = `${doc.apiVersion}/${doc.kind}`
  const model = MODELS[key]
  if (model === undefined) throw new Error(`no schema check for ${key}: add it to MODELS`)
  const mod = (await import(model[0])) as Record<string, new (d: unknown) => { validate(): void }>
  new mod[model[1]]!(doc).validate()
}

const manifests = readdirSync(DIR).filter((f) => f.endsWith('.yaml'))

test('deploy/kubernetes has manifests', () => {
  assert.ok(manifests.length >= 2, manifests.join(', '))
})

for (const file of manifests) {
  test(`every document of deploy/kubernetes/${file} is valid against Kubernetes' schemas`, async () => {
    const docs = loadAll(readFileSync(join(DIR, file), 'utf8')).filter((d) => d !== null) as Doc[]
    assert.ok(docs.length > 0)
    for (const [i, doc] of docs.entries()) {
      try {
        await validate(doc)
      } catch (err) {
        assert.fail(`${file}, document ${i} (${doc.kind} ${doc.metadata?.name}): ${(err as Error).message}`)
      }
    }
  })
}

test('the check refuses a broken manifest (a container without a name, a CRD without versions)', async () => {
  await assert.rejects(
    validate({
      apiVersion: 'apps/v1',
      kind: 'Deployment',
      metadata: { name: 'x' },
      spec: { selector: {}, template: { spec: { containers: [{ image: 'loom' }] } } },
    } as Doc),
    /name/,
  )
  await assert.rejects(
    validate({
      apiVersion: 'apiextensions.k8s.io/v1',
      kind: 'CustomResourceDefinition',
      metadata: { name: 'x.example.com' },
      spec: { group: 'example.com', names: { kind: 'X', plural: 'xs' }, scope: 'Namespaced' },
    } as Doc),
    /versions/,
  )
  await assert.rejects(validate({ apiVersion: 'example.com/v1', kind: 'Unknown' }), /no schema check/)
})
