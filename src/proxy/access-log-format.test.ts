/** Envoy's access log formats: text and JSON, the operators, missing values, length limits, errors. */
import assert from 'node:assert/strict'
import { test } from 'node:test'
import * as v from 'valibot'
import { AccessLog } from '../config/envoy.js'
import { compileLogFormat, type FormatInput, type LogFormatConfig } from './access-log-format.js'

const ENTRY = {
  start_time: '2026-12-01T10:00:00.123Z',
  method: 'GET',
  path: '/reviews/0?x=1',
  protocol: 'HTTP/1.1',
  response_code: 200,
  response_flags: '-',
  response_code_details: 'via_upstream',
  connection_termination_details: null,
  bytes_received: 0,
  bytes_sent: 358,
  duration: 4.567,
  upstream_service_time: 3,
  upstream_host: '127.0.0.1:9080',
  upstream_cluster: 'inbound|9080||',
  downstream_remote_address: '10.0.0.1',
  downstream_local_address: '[::1]:15006',
  authority: 'reviews:9080',
  request_id: 'abcdef-123',
  downstream_peer_principal: 'spiffe://cluster.local/ns/default/sa/bookinfo-productpage',
}

const input: FormatInput = {
  entry: ENTRY,
  header: (n) => ({ 'x-custom': 'yes', ':scheme': 'http' })[n],
  metadata: (ns) =>
    ns === 'envoy.filters.http.rbac' ? { enforced_effective_policy_id: 'p1', nested: { a: 1 } } : undefined,
}

const format = (cfg: LogFormatConfig) => {
  const { formatter, errors } = compileLogFormat(cfg)
  assert.deepEqual(errors, [])
  return formatter!(input)
}

test('text: operators read the entry, headers and metadata; a missing value is "-"', () => {
  assert.equal(
    format({
      text_format_source: {
        inline_string:
          '[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" %RESPONSE_CODE% %RESPONSE_FLAGS% %DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% %REQ(X-CUSTOM)% %REQ(X-MISSING)% %CONNECTION_TERMINATION_DETAILS% %DOWNSTREAM_PEER_URI_SAN%\n',
      },
    }),
    '[2026-12-01T10:00:00.123Z] "GET /reviews/0?x=1 HTTP/1.1" 200 - 4 3 yes - - spiffe://cluster.local/ns/default/sa/bookinfo-productpage\n',
  )
  assert.equal(
    format({
      text_format:
        '%DYNAMIC_METADATA(envoy.filters.http.rbac:enforced_effective_policy_id)% %DYNAMIC_METADATA(envoy.filters.http.rbac:nested)% %DYNAMIC_METADATA(other)% 100%% %REQ(X-REQUEST-ID):6% %DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT% %UPSTREAM_HOST_WITHOUT_PORT%',
    }),
    'p1 {"a":1} - 100% abcdef ::1 127.0.0.1',
  )
})

test('JSON: one operator keeps its type, mixed text is a string, constants and nesting stay; omit_empty_values', () => {
  const json = (cfg: LogFormatConfig) => JSON.parse(format(cfg)) as Record<string, unknown>
  assert.deepEqual(
    json({
      json_format: {
        code: '%RESPONSE_CODE%',
        line: '%REQ(:METHOD)% %REQ(:PATH)%',
        missing: '%REQ(X-MISSING)%',
        n: 1,
        ok: true,
        nested: { who: '%DOWNSTREAM_PEER_URI_SAN%', cluster: '%UPSTREAM_CLUSTER%' },
        pct: '100%%',
      },
    }),
    {
      code: 200,
      line: 'GET /reviews/0?x=1',
      missing: null,
      n: 1,
      ok: true,
      nested: { who: ENTRY.downstream_peer_principal, cluster: 'inbound|9080||' },
      pct: '100%',
    },
  )
  assert.deepEqual(
    json({ json_format: { code: '%RESPONSE_CODE%', gone: '%REQ(X-MISSING)%' }, omit_empty_values: true }),
    {
      code: 200,
    },
  )
})

test('errors: unknown operators, response headers other than the upstream service time, a lone %', () => {
  const errors = (cfg: LogFormatConfig) => compileLogFormat(cfg).errors
  assert.deepEqual(errors({ text_format: '%NOPE% %RESP(X-FOO)% %GRPC_STATUS%' }), [
    'unknown command operator %NOPE%',
    '%RESP(X-FOO)%: response headers are not kept for the access log (only X-ENVOY-UPSTREAM-SERVICE-TIME)',
    'unknown command operator %GRPC_STATUS%',
  ])
  assert.match(errors({ text_format: '50% done' })[0]!, /does not start a command operator/)
  // the proxy's schema refuses them with the field path
  const r = v.safeParse(AccessLog, {
    name: 'x',
    typed_config: {
      '@type': 'type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog',
      log_format: { json_format: { a: '%BOGUS%' } },
    },
  })
  assert.equal(r.success, false)
  assert.match(JSON.stringify(r.issues), /unknown command operator %BOGUS%/)
})
