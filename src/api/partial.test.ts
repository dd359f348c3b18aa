import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { parseManifests } from './load.js'
import { parsePath } from './partial.js'

const errors = (yaml: string) => parseManifests(yaml, 'x.yaml').errors.map((e) => `${e.index} ${e.path}: ${e.message}`)

describe('schema errors and semantic rules in one pass', () => {
  it('an unknown field and route weights that do not sum to 100', () => {
    assert.deepEqual(
      errors(`apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: a}
spec:
  hosts: [reviews]
  http:
  - route:
    - {destination: {host: reviews, subsett: v1}, weight: 50}
    - {destination: {host: reviews}, weight: 40}
`),
      [
        '0 spec.http[0].route[0].destination.subsett: unknown field (not supported by Loom, or misspelt)',
        '0 spec.http[0].route: total destination weight 90 != 100',
      ],
    )
  })

  it('a list element left out does not shift the paths of the rules found after it', () => {
    assert.deepEqual(
      errors(`apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: a}
spec:
  hosts: [reviews, reviews]
  http:
  - 5
  - route:
    - {destination: {host: ratings}, weight: 30}
    - {destination: {host: ratings}, weight: 30}
`),
      [
        '0 spec.http[0]: wrong type: Expected Object but received 5',
        '0 spec.hosts[1]: duplicate hosts in virtual service: reviews & reviews',
        '0 spec.http[1].route: total destination weight 60 != 100',
      ],
    )
  })

  it('a rule about a value the schema rejected is not reported on top of it', () => {
    // the second destination has no host: it is left out, so its weight cannot be summed
    assert.deepEqual(
      errors(`apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: a}
spec:
  hosts: [reviews]
  http:
  - route:
    - {destination: {host: reviews}, weight: 50}
    - {destination: {subset: v1}, weight: 40}
`),
      ['0 spec.http[0].route[1].destination.host: required field is missing'],
    )
  })

  it('metadata, an invalid enum and duplicate subsets in one DestinationRule', () => {
    assert.deepEqual(
      errors(`apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: Bad_Name}
spec:
  host: reviews
  trafficPolicy: {loadBalancer: {simple: FASTEST}}
  subsets: [{name: v1}, {name: v1}]
`),
      [
        `0 metadata.name: invalid name "Bad_Name": a DNS-1123 subdomain (lowercase letters, digits, '-' and '.', at most 253 characters, starting and ending with a letter or digit)`,
        '0 spec.trafficPolicy.loadBalancer.simple: invalid value "FASTEST"; expected one of UNSPECIFIED, LEAST_CONN, RANDOM, PASSTHROUGH, ROUND_ROBIN, LEAST_REQUEST',
        '0 spec.subsets[1].name: duplicate subset name v1',
      ],
    )
  })

  it('parsePath reads the paths formatPath writes', () => {
    assert.deepEqual(parsePath('spec.http[0].headers["x.y"].set'), ['spec', 'http', 0, 'headers', 'x.y', 'set'])
    assert.equal(parsePath('spec..x'), null)
  })
})
