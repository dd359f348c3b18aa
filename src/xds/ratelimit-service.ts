/**
 * The rate limit share service (loom.ratelimit.v1alpha1.RateLimitShares), served beside ADS on the control plane's
 * xDS port: one bidirectional stream per proxy, reports up (requests admitted and denied per limit over the last
 * window), assignments down (the proxy's share of each limit). Messages are encoded with the shared protobuf Root
 * (proto.ts, loom-protos.ts), in the same proto-JSON form as every xDS resource.
 */
import * as grpc from '@grpc/grpc-js'
import { RATELIMIT_SHARES_PACKAGE } from './loom-protos.js'
import { decodeMessage, encodeMessage } from './proto.js'

export interface LimitUsage {
  name: string
  admitted?: number
  denied?: number
}

export interface ShareReport {
  node_id?: string
  window_ms?: number
  usage?: LimitUsage[]
}

export interface Share {
  name: string
  requests_per_second?: number
  burst?: number
  proxies?: number
}

export interface ShareAssignment {
  shares?: Share[]
  valid_ms?: number
}

const REPORT = `${RATELIMIT_SHARES_PACKAGE}.ShareReport`
const ASSIGNMENT = `${RATELIMIT_SHARES_PACKAGE}.ShareAssignment`

export const RATELIMIT_SHARES_SERVICE = `${RATELIMIT_SHARES_PACKAGE}.RateLimitShares`

/** The service definition, for `grpc.Server.addService` and the client constructor. */
export const rateLimitSharesService: grpc.ServiceDefinition = {
  StreamShares: {
    path: `/${RATELIMIT_SHARES_SERVICE}/StreamShares`,
    requestStream: true,
    responseStream: true,
    requestSerialize: (m: ShareReport) => encodeMessage(REPORT, m),
    requestDeserialize: (b: Buffer) => decodeMessage(REPORT, b) as unknown as ShareReport,
    responseSerialize: (m: ShareAssignment) => encodeMessage(ASSIGNMENT, m),
    responseDeserialize: (b: Buffer) => decodeMessage(ASSIGNMENT, b) as unknown as ShareAssignment,
  },
}

export interface RateLimitSharesClient extends grpc.Client {
  StreamShares(): grpc.ClientDuplexStream<ShareReport, ShareAssignment>
}

let ctor: (new (address: string, creds: grpc.ChannelCredentials) => RateLimitSharesClient) | undefined

export function rateLimitSharesClient(
  address: string,
  creds = grpc.credentials.createInsecure(),
): RateLimitSharesClient {
  ctor ??= grpc.makeGenericClientConstructor(rateLimitSharesService, 'RateLimitShares') as unknown as typeof ctor
  return new ctor!(address, creds)
}
