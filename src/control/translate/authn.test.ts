/**
 * RequestAuthentication → the jwt_authn filter: which proxies a policy selects (root namespace, namespace,
 * selector), the filter's place (first, ahead of fault, CORS and the router) and each jwtRule field's translation.
 * The output passes the proxy's own schema and compiles with the proxy's filter compiler.
 */
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import * as v from 'valibot'
import { Listener } from '../../config/envoy.js'
import { compileHttpFilters } from '../../proxy/http/filters/index.js'
import { HttpConnManagerStats } from '../../proxy/stats/stats.js'
import { decodeResource, encodeResource } from '../../xds/proto.js'
import { TYPE_URL } from '../../xds/snapshot.js'
import { bookinfoRegistry, INGRESS, manifests, PRODUCTPAGE, REVIEWS_V2 } from './testdata/bookinfo.js'
import { BatchTranslator, type TranslateNode, translate, translateResources } from './translate.js'
import type { Json } from './util.js'

const JWKS = JSON.stringify({
  keys: [
    {
      kty: 'EC',
      crv: 'P-256',
      x: 'f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRKEU',
      y: 'x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0',
      kid: 'k',
    },
  ],
})
const services = bookinfoRegistry().services()

function filters(yaml: string, node: TranslateNode): Json[] {
  const out = translateResources({ resources: manifests(yaml), services }, node)
  const l = out.listeners.find((x) => (node.kind === 'gateway' ? true : String(x.name).startsWith('inbound|')))
  if (l === undefined) return []
  const hcm = ((l.filter_chains as Json[])[0]!.filters as Json[])[0]!.typed_config as Json
  // Loom's explain filter is first in every connection manager; the rest is Istio's chain
  const [explain, ...rest] = hcm.http_filters as Json[]
  assert.equal(explain!.name, 'loom.filters.http.explain')
  return rest
}

const policy = (ns: string, extra: string) => `apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: jwt, namespace: ${ns}}
spec:
${extra}
`

describe('RequestAuthentication translation', () => {
  it('a selected sidecar gets jwt_authn first in its inbound chain, in Istio shape', () => {
    const yaml = policy(
      'default',
      `  selector: {matchLabels: {app: reviews}}
  jwtRules:
  - issuer: testing@secure.istio.io
    jwks: '${JWKS}'
    audiences: [reviews]
    fromHeaders: [{name: x-jwt, prefix: "Bearer "}, {name: x-raw}]
    fromParams: [token]
    forwardOriginalToken: true
    outputPayloadToHeader: x-payload
    outputClaimToHeaders: [{header: x-sub, claim: sub}]
  - issuer: https://accounts.example.com
    jwksUri: https://accounts.example.com/jwks.json
    timeout: 2s`,
    )
    const chain = filters(yaml, REVIEWS_V2)
    assert.deepEqual(
      chain.map((f) => f.name),
      [
        'envoy.filters.http.jwt_authn',
        'envoy.filters.http.fault',
        'envoy.filters.http.cors',
        'istio.stats',
        'envoy.filters.http.router',
      ],
    )
    assert.deepEqual(chain[0]!.typed_config, {
      '@type': 'type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication',
      providers: {
        'origins-0': {
          issuer: 'testing@secure.istio.io',
          audiences: ['reviews'],
          local_jwks: { inline_string: JWKS },
          forward: true,
          from_headers: [{ name: 'x-jwt', value_prefix: 'Bearer ' }, { name: 'x-raw' }],
          from_params: ['token'],
          forward_payload_header: 'x-payload',
          claim_to_headers: [{ header_name: 'x-sub', claim_name: 'sub' }],
          payload_in_metadata: 'testing@secure.istio.io',
        },
        'origins-1': {
          issuer: 'https://accounts.example.com',
          remote_jwks: {
            http_uri: { uri: 'https://accounts.example.com/jwks.json', timeout: '2s' },
            cache_duration: '300s',
          },
          payload_in_metadata: 'https://accounts.example.com',
        },
      },
      rules: [
        {
          match: { prefix: '/' },
          requires: {
            requires_any: {
              requirements: [{ provider_name: 'origins-0' }, { provider_name: 'origins-1' }, { allow_missing: {} }],
            },
          },
        },
      ],
      bypass_cors_preflight: true,
    })
    assert.equal(filters(yaml, PRODUCTPAGE)[0]!.name, 'envoy.filters.http.fault', 'not selected: no filter')
  })

  it('the output passes the proxy schema and compiles', () => {
    const yaml = policy(
      'default',
      `  jwtRules: [{issuer: a, jwks: '${JWKS}', fromHeaders: [{name: x-t, prefix: "T "}], outputClaimToHeaders: [{header: x-s, claim: sub}]}, {issuer: b, jwksUri: "http://127.0.0.1:1/j"}]`,
    )
    const out = translateResources({ resources: manifests(yaml), services }, REVIEWS_V2)
    const inbound = out.listeners.find((x) => String(x.name).startsWith('inbound|'))!
    // what the proxy receives over xDS: through protobuf and back
    const wire = decodeResource(encodeResource({ '@type': TYPE_URL.listener, ...inbound }), { withType: false })
    assert.deepEqual(wire, inbound)
    const parsed = v.parse(Listener, wire)
    const hcm = parsed.filter_chains![0]!.filters![0]!.typed_config as unknown as { http_filters: never[] }
    assert.equal(compileHttpFilters(hcm.http_filters, new HttpConnManagerStats('x')).length, 5)
  })

  it('scope: root namespace for all, a namespace for its workloads, a selector for matching labels', () => {
    const rule = `  jwtRules: [{issuer: a, jwks: '${JWKS}'}]`
    assert.equal(filters(policy('istio-system', rule), PRODUCTPAGE)[0]!.name, 'envoy.filters.http.jwt_authn')
    assert.equal(filters(policy('default', rule), PRODUCTPAGE)[0]!.name, 'envoy.filters.http.jwt_authn')
    assert.equal(filters(policy('other', rule), PRODUCTPAGE)[0]!.name, 'envoy.filters.http.fault')
    const rootSel = policy('istio-system', `  selector: {matchLabels: {app: productpage}}\n${rule}`)
    assert.equal(filters(rootSel, PRODUCTPAGE)[0]!.name, 'envoy.filters.http.jwt_authn')
    assert.equal(filters(rootSel, REVIEWS_V2)[0]!.name, 'envoy.filters.http.fault')
    const target = policy('default', `  targetRefs: [{kind: Service, group: "", name: productpage}]\n${rule}`)
    assert.equal(filters(target, PRODUCTPAGE)[0]!.name, 'envoy.filters.http.fault', 'targetRefs are not applied')
  })

  it('two policies merge into one filter; a rule without keys gets an empty set', () => {
    const yaml = `${policy('istio-system', `  jwtRules: [{issuer: a, jwks: '${JWKS}'}]`)}---
${policy('default', '  jwtRules: [{issuer: b}]').replace('name: jwt', 'name: jwt2')}`
    const tc = filters(yaml, PRODUCTPAGE)[0]!.typed_config as { providers: Record<string, Json> }
    assert.deepEqual(Object.keys(tc.providers), ['origins-0', 'origins-1'])
    const b = Object.values(tc.providers).find((p) => p.issuer === 'b')!
    assert.deepEqual(b.local_jwks, { inline_string: '{"keys":[]}' })
  })

  it('a selected gateway gets the filter first too', () => {
    const yaml = `${policy('istio-system', `  selector: {matchLabels: {istio: ingressgateway}}\n  jwtRules: [{issuer: a, jwks: '${JWKS}'}]`)}---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ["*"]}]
`
    assert.equal(filters(yaml, INGRESS)[0]!.name, 'envoy.filters.http.jwt_authn')
  })

  it('the batch translator (what loom control runs) gives a selected sidecar the same listeners', () => {
    const resources = manifests(policy('default', `  jwtRules: [{issuer: a, jwks: '${JWKS}'}]`))
    const input = { resources, services }
    const batch = new BatchTranslator(input).translate(REVIEWS_V2).resources.get(TYPE_URL.listener)!
    const single = translate(input, REVIEWS_V2).resources.get(TYPE_URL.listener)!
    assert.deepEqual(batch.items, single.items)
    const inbound = batch.items.get('inbound|9080') as Json
    const hcm = ((inbound.filter_chains as Json[])[0]!.filters as Json[])[0]!.typed_config as Json
    assert.equal((hcm.http_filters as Json[])[1]!.name, 'envoy.filters.http.jwt_authn')
  })
})
