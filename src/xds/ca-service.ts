/**
 * The certificate signing service (loom.ca.v1.CertificateService), served beside ADS on the control plane's xDS
 * port: one unary call per certificate. Messages are encoded with the shared protobuf Root (proto.ts,
 * loom-protos.ts) in proto-JSON form (bytes as base64).
 */
import * as grpc from '@grpc/grpc-js'
import { CA_PACKAGE } from './loom-protos.js'
import { decodeMessage, encodeMessage } from './proto.js'

export interface CreateCertificateRequest {
  csr?: string
  validity_seconds?: number
  current_certificate_chain?: string
  /** base64 */
  csr_signature?: string
}

export interface CreateCertificateResponse {
  certificate_chain?: string[]
  trust_bundle?: string[]
}

const REQUEST = `${CA_PACKAGE}.CreateCertificateRequest`
const RESPONSE = `${CA_PACKAGE}.CreateCertificateResponse`

export const CERTIFICATE_SERVICE = `${CA_PACKAGE}.CertificateService`

/** The service definition, for `grpc.Server.addService` and the client constructor. */
export const certificateService: grpc.ServiceDefinition = {
  CreateCertificate: {
    path: `/${CERTIFICATE_SERVICE}/CreateCertificate`,
    requestStream: false,
    responseStream: false,
    requestSerialize: (m: CreateCertificateRequest) => encodeMessage(REQUEST, m),
    requestDeserialize: (b: Buffer) => decodeMessage(REQUEST, b) as unknown as CreateCertificateRequest,
    responseSerialize: (m: CreateCertificateResponse) => encodeMessage(RESPONSE, m),
    responseDeserialize: (b: Buffer) => decodeMessage(RESPONSE, b) as unknown as CreateCertificateResponse,
  },
}

export interface CertificateServiceClient extends grpc.Client {
  CreateCertificate(
    request: CreateCertificateRequest,
    metadata: grpc.Metadata,
    options: grpc.CallOptions,
    callback: (err: grpc.ServiceError | null, response?: CreateCertificateResponse) => void,
  ): grpc.ClientUnaryCall
}

let ctor: (new (address: string, creds: grpc.ChannelCredentials) => CertificateServiceClient) | undefined

export function certificateServiceClient(
  address: string,
  creds = grpc.credentials.createInsecure(),
): CertificateServiceClient {
  ctor ??= grpc.makeGenericClientConstructor(certificateService, 'CertificateService') as unknown as typeof ctor
  return new ctor!(address, creds)
}

/** One CreateCertificate call; a bootstrap token goes in the metadata as `authorization: Bearer <token>`. */
export function createCertificate(
  client: CertificateServiceClient,
  request: CreateCertificateRequest,
  token?: string,
  timeoutMs = 10_000,
): Promise<CreateCertificateResponse> {
  const md = new grpc.Metadata()
  if (token !== undefined) md.set('authorization', `Bearer ${token}`)
  return new Promise((resolve, reject) => {
    client.CreateCertificate(request, md, { deadline: Date.now() + timeoutMs }, (err, res) =>
      err !== null ? reject(err) : resolve(res ?? {}),
    )
  })
}
