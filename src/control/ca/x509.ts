/**
 * `@peculiar/x509`, loaded once with what it needs: the metadata polyfill its dependency injection requires
 * (imported first) and Node's WebCrypto as its crypto provider. The CA imports the library only through here.
 */
import 'reflect-metadata'
import { webcrypto } from 'node:crypto'
import * as x509 from '@peculiar/x509'

x509.cryptoProvider.set(webcrypto as unknown as Crypto)

export * from '@peculiar/x509'
