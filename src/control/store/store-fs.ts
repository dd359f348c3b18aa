/**
 * The file system calls FileStore makes, and nothing more. The default is node:fs/promises itself (the functions are
 * called directly: no wrapper, no cost); the crash tests pass a simulated disk that keeps what was written apart from
 * what was synced and, on a simulated power loss, drops what was not (test/helpers/crash-fs.ts).
 */
import { mkdir, open, readFile, rename, rm, writeFile } from 'node:fs/promises'

/** An open file or directory (node:fs/promises FileHandle has these methods). */
export interface StoreFile {
  write(buffer: Buffer, offset: number, length: number, position: number): Promise<{ bytesWritten: number }>
  readFile(): Promise<Buffer>
  truncate(length: number): Promise<void>
  /** fsync(2): data and metadata; on a directory, its entries (files created, renamed, removed in it) */
  sync(): Promise<void>
  /** fdatasync(2): data and the metadata needed to read it back (the size) */
  datasync(): Promise<void>
  close(): Promise<void>
}

export type OpenFlags = 'r' | 'r+' | 'w' | 'wx+'

export interface StoreFs {
  open(path: string, flags: OpenFlags): Promise<StoreFile>
  readFile(path: string): Promise<Buffer>
  writeFile(path: string, data: string, options: { flag: 'wx' }): Promise<void>
  rename(from: string, to: string): Promise<void>
  rm(path: string, options: { force: true }): Promise<void>
  /** the first directory created, or undefined when `path` existed */
  mkdir(path: string, options: { recursive: true }): Promise<string | undefined>
}

export const nodeFs: StoreFs = { open, readFile, writeFile, rename, rm, mkdir }
