/**
 * The ADS gRPC service (envoy.service.discovery.v3.AggregatedDiscoveryService) from ads.proto, loaded once with
 * @grpc/proto-loader, and the wire shapes of its messages as proto-loader hands them over. Resources travel as
 * `Any { type_url, value }` whose bytes come from `encodeResource` (proto.ts), so proto-loader never sees the
 * Envoy resource types themselves.
 */
import * as grpc from '@grpc/grpc-js'
import * as protoLoader from '@grpc/proto-loader'
import type { EncodedAny } from './proto.js'
import { protoIncludeDirs } from './proto.js'

export const ADS_SERVICE = 'envoy.service.discovery.v3.AggregatedDiscoveryService'

export interface WireStatus {
  code?: number
  message?: string
}

export interface WireLocality {
  region?: string
  zone?: string
  sub_zone?: string
}

export interface WireNode {
  id?: string
  cluster?: string
  /** google.protobuf.Struct as proto-loader gives it */
  metadata?: Record<string, unknown>
  locality?: WireLocality
  user_agent_name?: string
  user_agent_version?: string
  client_features?: string[]
}

export interface DiscoveryRequest {
  version_info?: string
  node?: WireNode | null
  resource_names: string[]
  type_url?: string
  response_nonce?: string
  error_detail?: WireStatus | null
}

export interface DiscoveryResponse {
  version_info: string
  resources: EncodedAny[]
  type_url: string
  nonce: string
  control_plane?: { identifier: string }
}

export interface DeltaDiscoveryRequest {
  node?: WireNode | null
  type_url?: string
  resource_names_subscribe: string[]
  resource_names_unsubscribe: string[]
  initial_resource_versions?: Record<string, string>
  response_nonce?: string
  error_detail?: WireStatus | null
}

export interface DeltaResource {
  name: string
  version: string
  resource?: EncodedAny
  /** other names the resource goes by: the subscribed aliases it answers (VHDS `<route config>/<host>`) */
  aliases?: string[]
}

export interface DeltaDiscoveryResponse {
  system_version_info: string
  resources: DeltaResource[]
  type_url: string
  removed_resources: string[]
  nonce: string
  control_plane?: { identifier: string }
}

export interface AdsClientStub extends grpc.Client {
  StreamAggregatedResources(
    metadata?: grpc.Metadata,
    options?: grpc.CallOptions,
  ): grpc.ClientDuplexStream<DiscoveryRequest, DiscoveryResponse>
  DeltaAggregatedResources(
    metadata?: grpc.Metadata,
    options?: grpc.CallOptions,
  ): grpc.ClientDuplexStream<DeltaDiscoveryRequest, DeltaDiscoveryResponse>
}

interface Ads {
  service: grpc.ServiceDefinition
  Client: new (address: string, creds: grpc.ChannelCredentials, options?: grpc.ChannelOptions) => AdsClientStub
}

let ads: Ads | undefined

/** The ADS service definition and client constructor (ads.proto is parsed on first use). */
export function adsService(): Ads {
  if (ads) return ads
  const def = protoLoader.loadSync('envoy/service/discovery/v3/ads.proto', {
    keepCase: true,
    longs: String,
    enums: String,
    defaults: false,
    arrays: true,
    oneofs: true,
    includeDirs: protoIncludeDirs(),
  })
  const ctor = grpc.loadPackageDefinition(def).envoy as unknown as {
    service: { discovery: { v3: { AggregatedDiscoveryService: grpc.ServiceClientConstructor } } }
  }
  const Client = ctor.service.discovery.v3.AggregatedDiscoveryService
  ads = { service: Client.service, Client: Client as unknown as Ads['Client'] }
  return ads
}

/** The protocol of an ADS method by its name; null for another method. */
export function adsProtocol(method: string): 'sotw' | 'delta' | null {
  return method === 'StreamAggregatedResources' ? 'sotw' : method === 'DeltaAggregatedResources' ? 'delta' : null
}

/** The service definition with each ADS method as `f` makes it from the method and its protocol; others as they are. */
export function withAdsMethods(
  def: grpc.ServiceDefinition,
  f: (
    method: grpc.MethodDefinition<unknown, unknown>,
    protocol: 'sotw' | 'delta',
  ) => grpc.MethodDefinition<unknown, unknown>,
): grpc.ServiceDefinition {
  const out: Record<string, grpc.MethodDefinition<unknown, unknown>> = {}
  for (const [name, method] of Object.entries(def)) {
    const protocol = adsProtocol(name)
    out[name] = protocol === null ? method : f(method, protocol)
  }
  return out as grpc.ServiceDefinition
}
