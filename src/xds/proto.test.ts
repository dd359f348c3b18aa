import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import {
  decodeMessage,
  decodeResource,
  encodeMessage,
  encodeResource,
  lookupType,
  ProtoJsonError,
  protoLoadStats,
  protoRoot,
} from './proto.js'
import { TYPE_URL } from './snapshot.js'

const T = 'type.googleapis.com/'
const HCM = `${T}envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager`
const ROUTER = `${T}envoy.extensions.filters.http.router.v3.Router`
const FAULT = `${T}envoy.extensions.filters.http.fault.v3.HTTPFault`
const RBAC = `${T}envoy.extensions.filters.http.rbac.v3.RBAC`
const JWT = `${T}envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication`
const TCP = `${T}envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy`
const STDOUT = `${T}envoy.extensions.access_loggers.stream.v3.StdoutAccessLog`
const FILE_LOG = `${T}envoy.extensions.access_loggers.file.v3.FileAccessLog`
const DOWNSTREAM_TLS = `${T}envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext`
const UPSTREAM_TLS = `${T}envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext`
const HTTP_OPTIONS = `${T}envoy.extensions.upstreams.http.v3.HttpProtocolOptions`
const TLS_INSPECTOR = `${T}envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector`
const METADATA_EXCHANGE = `${T}envoy.tcp.metadataexchange.config.MetadataExchange`

const inboundListener = {
  '@type': TYPE_URL.listener,
  name: 'inbound_0.0.0.0_8443',
  address: { socket_address: { address: '0.0.0.0', port_value: 8443 } },
  listener_filters: [{ name: 'envoy.filters.listener.tls_inspector', typed_config: { '@type': TLS_INSPECTOR } }],
  per_connection_buffer_limit_bytes: 32768,
  filter_chains: [
    {
      name: 'https',
      filter_chain_match: { server_names: ['echo.example.com'], transport_protocol: 'tls' },
      filters: [
        {
          name: 'envoy.filters.network.http_connection_manager',
          typed_config: {
            '@type': HCM,
            stat_prefix: 'inbound_8443',
            codec_type: 'HTTP2',
            route_config: {
              name: 'local',
              virtual_hosts: [
                {
                  name: 'echo',
                  domains: ['*'],
                  routes: [
                    { match: { path: '/healthz' }, direct_response: { status: 200, body: { inline_string: 'ok' } } },
                    { match: { prefix: '/' }, route: { cluster: 'inbound|8080||', timeout: '0s' } },
                  ],
                },
              ],
            },
            http_filters: [
              {
                name: 'envoy.filters.http.jwt_authn',
                typed_config: {
                  '@type': JWT,
                  providers: {
                    example: {
                      issuer: 'https://issuer.example.com',
                      audiences: ['echo'],
                      remote_jwks: {
                        http_uri: { uri: 'https://issuer.example.com/jwks', cluster: 'jwks', timeout: '5s' },
                        cache_duration: '300s',
                      },
                      forward: true,
                      from_headers: [{ name: 'authorization', value_prefix: 'Bearer ' }],
                    },
                  },
                  rules: [{ match: { prefix: '/' }, requires: { provider_name: 'example' } }],
                },
              },
              {
                name: 'envoy.filters.http.rbac',
                typed_config: {
                  '@type': RBAC,
                  rules: {
                    action: 'DENY',
                    policies: {
                      'deny-admin': {
                        permissions: [{ url_path: { path: { prefix: '/admin' } } }],
                        principals: [
                          { authenticated: { principal_name: { exact: 'spiffe://cluster.local/ns/default/sa/bad' } } },
                          { not_id: { any: true } },
                        ],
                      },
                    },
                  },
                },
              },
              { name: 'envoy.filters.http.router', typed_config: { '@type': ROUTER } },
            ],
            access_log: [
              { name: 'envoy.access_loggers.stdout', typed_config: { '@type': STDOUT } },
              {
                name: 'envoy.access_loggers.file',
                typed_config: {
                  '@type': FILE_LOG,
                  path: '/var/log/loom/access.log',
                  log_format: { json_format: { start: '%START_TIME%', code: '%RESPONSE_CODE%', n: 1, ok: true } },
                },
              },
            ],
            common_http_protocol_options: {
              idle_timeout: '300s',
              max_headers_count: 100,
              headers_with_underscores_action: 'REJECT_REQUEST',
            },
            http2_protocol_options: { max_concurrent_streams: 100, initial_stream_window_size: 65536 },
            stream_idle_timeout: '1.5s',
            request_timeout: '0.25s',
            use_remote_address: true,
            xff_num_trusted_hops: 1,
            generate_request_id: false,
            upgrade_configs: [{ upgrade_type: 'websocket', enabled: true }],
          },
        },
      ],
      transport_socket: {
        name: 'envoy.transport_sockets.tls',
        typed_config: {
          '@type': DOWNSTREAM_TLS,
          common_tls_context: {
            tls_certificates: [
              {
                certificate_chain: { filename: '/etc/loom/cert.pem' },
                private_key: { inline_bytes: Buffer.from('not a real key').toString('base64') },
              },
            ],
            alpn_protocols: ['h2', 'http/1.1'],
            tls_params: { tls_minimum_protocol_version: 'TLSv1_2', tls_maximum_protocol_version: 'TLSv1_3' },
          },
          require_client_certificate: true,
        },
      },
    },
    {
      name: 'tcp',
      filters: [
        {
          name: 'istio.metadata_exchange',
          typed_config: { '@type': METADATA_EXCHANGE, protocol: 'istio-peer-exchange' },
        },
        {
          name: 'envoy.filters.network.tcp_proxy',
          typed_config: {
            '@type': TCP,
            stat_prefix: 'tcp',
            weighted_clusters: {
              clusters: [
                { name: 'a', weight: 1 },
                { name: 'b', weight: 3 },
              ],
            },
            idle_timeout: '3600s',
          },
        },
      ],
    },
  ],
}

const apiListener = {
  '@type': TYPE_URL.listener,
  name: 'echo.loom.test:8080',
  api_listener: {
    api_listener: {
      '@type': HCM,
      rds: { config_source: { ads: {}, resource_api_version: 'V3' }, route_config_name: 'echo-route' },
      http_filters: [
        {
          name: 'envoy.filters.http.fault',
          typed_config: {
            '@type': FAULT,
            delay: { fixed_delay: '0.1s', percentage: { numerator: 10 } },
            abort: { grpc_status: 14, percentage: { numerator: 5, denominator: 'TEN_THOUSAND' } },
            max_active_faults: 100,
          },
        },
        { name: 'envoy.filters.http.router', typed_config: { '@type': ROUTER } },
      ],
      common_http_protocol_options: { idle_timeout: '3600s' },
    },
  },
}

const cluster = {
  '@type': TYPE_URL.cluster,
  name: 'outbound|8080||echo.default.svc.cluster.local',
  type: 'EDS',
  eds_cluster_config: {
    eds_config: { ads: {}, resource_api_version: 'V3', initial_fetch_timeout: '15s' },
    service_name: 'outbound|8080||echo.default.svc.cluster.local',
  },
  connect_timeout: '1.5s',
  lb_policy: 'RING_HASH',
  ring_hash_lb_config: { minimum_ring_size: 1024, maximum_ring_size: '18446744073709551615' },
  circuit_breakers: {
    thresholds: [
      { max_connections: 1000, max_pending_requests: 100, max_requests: 1024, max_retries: 3 },
      { priority: 'HIGH', max_requests: 2048, track_remaining: true },
    ],
  },
  outlier_detection: {
    consecutive_5xx: 5,
    interval: '10s',
    base_ejection_time: '30s',
    max_ejection_percent: 50,
    success_rate_minimum_hosts: 5,
    success_rate_stdev_factor: 1900,
    failure_percentage_threshold: 85,
    enforcing_failure_percentage: 100,
  },
  transport_socket: {
    name: 'envoy.transport_sockets.tls',
    typed_config: {
      '@type': UPSTREAM_TLS,
      sni: 'outbound_.8080_._.echo.default.svc.cluster.local',
      common_tls_context: {
        tls_certificate_sds_secret_configs: [{ name: 'default', sds_config: { ads: {}, resource_api_version: 'V3' } }],
        validation_context: {
          trusted_ca: { filename: '/etc/loom/ca.pem' },
          match_typed_subject_alt_names: [
            { san_type: 'URI', matcher: { exact: 'spiffe://cluster.local/ns/default/sa/echo' } },
          ],
        },
        alpn_protocols: ['istio-peer-exchange', 'h2'],
      },
    },
  },
  typed_extension_protocol_options: {
    'envoy.extensions.upstreams.http.v3.HttpProtocolOptions': {
      '@type': HTTP_OPTIONS,
      explicit_http_config: { http2_protocol_options: { max_concurrent_streams: 100 } },
      common_http_protocol_options: { idle_timeout: '60s', max_requests_per_connection: 1000 },
    },
  },
  metadata: {
    filter_metadata: {
      istio: {
        config: '/apis/networking.istio.io/v1/namespaces/default/destination-rule/echo',
        services: [{ host: 'echo.default.svc.cluster.local', name: 'echo', namespace: 'default' }],
        weight: 1.5,
        enabled: true,
        nothing: null,
      },
    },
  },
  lrs_server: { self: {} },
  filters: [
    { name: 'istio.metadata_exchange', typed_config: { '@type': METADATA_EXCHANGE, protocol: 'istio-peer-exchange' } },
  ],
}

const loadAssignment = {
  '@type': TYPE_URL.endpoint,
  cluster_name: 'outbound|8080||echo.default.svc.cluster.local',
  endpoints: [
    {
      locality: { region: 'us-east1', zone: 'us-east1-b', sub_zone: 'rack1' },
      load_balancing_weight: 3,
      lb_endpoints: [
        {
          endpoint: {
            address: { socket_address: { address: '10.0.0.7', port_value: 9080 } },
            hostname: 'echo-v1-abc',
            health_check_config: { port_value: 15021 },
          },
          health_status: 'HEALTHY',
          load_balancing_weight: 2,
          metadata: { filter_metadata: { 'envoy.transport_socket_match': { tlsMode: 'istio' } } },
        },
        {
          endpoint: { address: { socket_address: { address: '10.0.0.8', port_value: 9080 } } },
          load_balancing_weight: 1,
        },
      ],
    },
    {
      locality: { region: 'us-east1', zone: 'us-east1-c' },
      priority: 1,
      load_balancing_weight: 1,
      lb_endpoints: [
        {
          endpoint: { address: { socket_address: { address: 'fd00::9', port_value: 9080 } } },
          health_status: 'DRAINING',
        },
      ],
    },
  ],
  policy: { overprovisioning_factor: 140, endpoint_stale_after: '30s' },
}

const routeConfig = {
  '@type': TYPE_URL.route,
  name: 'echo-route',
  virtual_hosts: [
    {
      name: 'echo',
      domains: ['echo.loom.test:8080', 'echo.loom.test', '*'],
      routes: [
        {
          name: 'canary',
          match: {
            prefix: '/loom.test.Echo/',
            case_sensitive: false,
            headers: [
              { name: 'x-canary', string_match: { exact: 'yes' } },
              { name: 'x-version', range_match: { start: -5, end: '9007199254740993' } },
            ],
          },
          route: {
            weighted_clusters: {
              clusters: [
                { name: 'echo-a', weight: 70 },
                {
                  name: 'echo-b',
                  weight: 30,
                  request_headers_to_add: [{ header: { key: 'x-subset', value: 'b' }, append_action: 'ADD_IF_ABSENT' }],
                },
              ],
            },
            timeout: '15s',
            idle_timeout: '300s',
            retry_policy: {
              retry_on: '5xx,reset,connect-failure,unavailable',
              num_retries: 3,
              per_try_timeout: '2s',
              retry_back_off: { base_interval: '0.025s', max_interval: '0.25s' },
              retriable_status_codes: [503, 504],
            },
            hash_policy: [
              { header: { header_name: 'x-user' } },
              { cookie: { name: 'sticky', ttl: '3600s', path: '/' }, terminal: true },
              { connection_properties: { source_ip: true } },
              { filter_state: { key: 'io.grpc.channel_id' } },
            ],
            max_stream_duration: { max_stream_duration: '10s', grpc_timeout_header_max: '5s' },
          },
          typed_per_filter_config: {
            'envoy.filters.http.fault': {
              '@type': FAULT,
              abort: { http_status: 503, percentage: { numerator: 1, denominator: 'MILLION' } },
            },
            'envoy.filters.http.local_ratelimit': {
              '@type': `${T}envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit`,
              stat_prefix: 'route_rl',
              status: { code: 'TooManyRequests' },
              token_bucket: { max_tokens: 5, tokens_per_fill: 5, fill_interval: '1s' },
              filter_enabled: { default_value: { numerator: 100 }, runtime_key: 'rl_enabled' },
              filter_enforced: { default_value: { numerator: 50, denominator: 'TEN_THOUSAND' } },
              response_headers_to_add: [{ header: { key: 'x-limited', value: 'yes' } }],
              enable_x_ratelimit_headers: 'DRAFT_VERSION_03',
            },
            'envoy.filters.http.cors': {
              '@type': `${T}envoy.extensions.filters.http.cors.v3.CorsPolicy`,
              allow_origin_string_match: [{ exact: 'https://a.example' }, { safe_regex: { regex: 'https://.*' } }],
              allow_methods: 'GET,POST',
              max_age: '86400',
              allow_credentials: false,
              forward_not_matching_preflights: true,
              filter_enabled: { default_value: { numerator: 100 } },
            },
          },
        },
        {
          match: { safe_regex: { regex: '^/admin/.*' } },
          redirect: { https_redirect: true, response_code: 'PERMANENT_REDIRECT' },
        },
        { match: { prefix: '' }, route: { cluster: 'echo-a', prefix_rewrite: '/', auto_host_rewrite: true } },
      ],
      request_headers_to_add: [{ header: { key: 'x-loom', value: '1' }, append_action: 'OVERWRITE_IF_EXISTS_OR_ADD' }],
      retry_policy: { retry_on: 'cancelled,deadline-exceeded', num_retries: 2 },
    },
  ],
  response_headers_to_remove: ['server'],
  validate_clusters: false,
}

const secret = {
  '@type': TYPE_URL.secret,
  name: 'default',
  tls_certificate: {
    certificate_chain: { inline_string: '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n' },
    private_key: { inline_bytes: Buffer.from([0, 1, 2, 250, 251]).toString('base64') },
  },
}

/** The protobufjs message (not proto-JSON) of `cluster`, as far as the test looks. */
interface RawCluster {
  connect_timeout: { seconds: unknown; nanos: number }
  circuit_breakers: { thresholds: { max_requests: { value: number } }[] }
  metadata: { filter_metadata: Record<string, { fields: Record<string, { numberValue?: number }> }> }
}

describe('proto', () => {
  test('loads the Root once and reports its cost', (t) => {
    const r = protoRoot()
    assert.equal(protoRoot(), r)
    const stats = protoLoadStats()!
    assert.ok(stats.ms > 0 && stats.files > 50)
    t.diagnostic(
      `protobuf Root: ${stats.ms} ms, ${stats.files} files, RSS +${(stats.rssBytes / 2 ** 20).toFixed(1)} MiB, ` +
        `heap +${(stats.heapBytes / 2 ** 20).toFixed(1)} MiB`,
    )
    for (const url of Object.values(TYPE_URL)) assert.ok(lookupType(url), url)
    assert.equal(lookupType(`${T}no.such.Type`), undefined)
  })

  for (const [name, res] of Object.entries({
    inboundListener,
    apiListener,
    cluster,
    loadAssignment,
    routeConfig,
    secret,
  })) {
    test(`round-trips ${name}`, () => {
      const any = encodeResource(res)
      assert.equal(any.type_url, res['@type'])
      assert.ok(Buffer.isBuffer(any.value) && any.value.length > 20)
      assert.deepEqual(decodeResource(any), res)
      // the same bytes again: encoding is deterministic
      assert.deepEqual(encodeResource(res).value, any.value)
    })
  }

  test('the type can come from the caller; decode can leave @type out', () => {
    const { '@type': _, ...bare } = routeConfig
    const any = encodeResource(bare, TYPE_URL.route)
    assert.equal(any.type_url, TYPE_URL.route)
    assert.deepEqual(decodeResource(any, { withType: false }), bare)
  })

  test('wire details: wrappers, int64, durations, oneof defaults, Struct', () => {
    const c = decodeMessage(
      'envoy.config.cluster.v3.Cluster',
      encodeMessage('envoy.config.cluster.v3.Cluster', cluster),
    )
    assert.equal(c.type, 'EDS')
    assert.equal(c.connect_timeout, '1.5s')
    const raw = lookupType(TYPE_URL.cluster)!.decode(encodeResource(cluster).value) as unknown as RawCluster
    assert.equal(Number(raw.connect_timeout.seconds), 1)
    assert.equal(raw.connect_timeout.nanos, 500_000_000)
    assert.equal(raw.circuit_breakers.thresholds[0]!.max_requests.value, 1024)
    assert.equal(raw.metadata.filter_metadata.istio!.fields.weight!.numberValue, 1.5)
    // a oneof member holding its default is still present
    const r = decodeResource(encodeResource({ ...routeConfig }))
    const routes = (r.virtual_hosts as { routes: { match: unknown }[] }[])[0]!.routes
    assert.deepEqual(routes[2]!.match, { prefix: '' })
    // zero-valued wrappers and negative durations survive; default scalars are dropped
    const z = decodeResource(
      encodeResource({
        '@type': TYPE_URL.cluster,
        name: 'z',
        per_connection_buffer_limit_bytes: 0,
        respect_dns_ttl: false,
        wait_for_warm_on_init: false,
        dns_refresh_rate: '-1.000000001s',
        alt_stat_name: '',
      }),
    )
    assert.deepEqual(z, {
      '@type': TYPE_URL.cluster,
      name: 'z',
      per_connection_buffer_limit_bytes: 0,
      dns_refresh_rate: '-1.000000001s',
      wait_for_warm_on_init: false,
    })
  })

  test('Any holding a well-known type and a TypedStruct', () => {
    const c = {
      '@type': TYPE_URL.cluster,
      name: 'wkt',
      load_balancing_policy: {
        policies: [
          {
            typed_extension_config: {
              name: 'custom',
              typed_config: {
                '@type': `${T}xds.type.v3.TypedStruct`,
                type_url: 'type.googleapis.com/my.Policy',
                value: { choice: 2, tags: ['a', 'b'], nested: { deep: [1, { x: null }] } },
              },
            },
          },
          {
            typed_extension_config: {
              name: 'duration',
              typed_config: { '@type': `${T}google.protobuf.Duration`, value: '2.5s' },
            },
          },
        ],
      },
    }
    assert.deepEqual(decodeResource(encodeResource(c)), c)
  })

  test('errors name the path', () => {
    const bad = (json: object, re: RegExp) =>
      assert.throws(
        () => encodeResource(json),
        (e: unknown) => e instanceof ProtoJsonError && re.test(e.message),
      )
    bad(
      { ...cluster, conect_timeout: '1s' },
      /^\$\.conect_timeout: unknown field of envoy\.config\.cluster\.v3\.Cluster/,
    )
    bad(
      { ...cluster, circuit_breakers: { thresholds: [{ max_request: 1 }] } },
      /^\$\.circuit_breakers\.thresholds\[0\]\.max_request: unknown field/,
    )
    bad({ ...cluster, connect_timeout: '5m' }, /^\$\.connect_timeout: expected a duration/)
    bad({ ...cluster, lb_policy: 'FASTEST' }, /^\$\.lb_policy: unknown value FASTEST of enum LbPolicy/)
    bad(
      { ...cluster, transport_socket: { name: 'tls', typed_config: { '@type': `${T}nope.Nope` } } },
      /^\$\.transport_socket\.typed_config: unknown type type\.googleapis\.com\/nope\.Nope/,
    )
    bad(
      { ...cluster, transport_socket: { name: 'tls', typed_config: { '@type': UPSTREAM_TLS, snii: 'x' } } },
      /^\$\.transport_socket\.typed_config\.snii: unknown field of envoy\.extensions/,
    )
    bad({ ...loadAssignment, endpoints: {} }, /^\$\.endpoints: expected an array/)
    bad({ ...cluster, name: 7 }, /^\$\.name: expected a string/)
    bad({ ...cluster, per_connection_buffer_limit_bytes: -1 }, /expected an integer \(uint32\)/)
    bad({ name: 'x' }, /^\$: missing "@type"/)
    bad(
      {
        '@type': TYPE_URL.route,
        virtual_hosts: [{ name: 'v', domains: ['*'], routes: [{ match: { prefix: '/', path: '/' } }] }],
      },
      /only one of prefix, path may be set/,
    )
  })
})
