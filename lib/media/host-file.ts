// Host files inside an ffmpeg.wasm instance's file system (platform.md §4a). A MEMFS copy of the input
// costs as much memory as the file; a host-file node instead answers ffmpeg's reads, writes, seeks and
// fstat from a file descriptor on disk, so a conversion's memory does not depend on the file's size.
//
// The core is closure-minified: the names of a node's node_ops and stream_ops, of getattr, setattr and
// llseek are not stable words. They are found at run time on a probe MEMFS file (the ops object that a
// node and a fresh stream share is stream_ops; the op returning {size, mode} is getattr) and checked
// against that probe, so a core whose FS no longer has this shape fails loudly here, not mid-job.
import fs from 'node:fs';

/** The parts of Emscripten's FS object this module uses (their names are not minified). */
export interface WasmFs {
  writeFile(path: string, data: Uint8Array): void;
  open(path: string, flags: string): object;
  close(stream: object): void;
  unlink(path: string): void;
}

type Op = (...args: never[]) => unknown;
type Ops = Record<string, Op>;
type Node = Record<string, unknown> & { mode: number };
type Stream = Record<string, unknown> & { position: number };

/** Minified property names of one core build, discovered by {@link discoverFsShape}. */
export interface FsShape {
  node: string;
  nodeOps: string;
  streamOps: string;
  getattr: string;
  setattr: string;
  llseek: string;
  /** FS.ErrnoError: thrown with an errno, ffmpeg sees a failing syscall instead of a wasm abort. */
  ErrnoError: new (errno: number) => Error;
}

const PROBE = '/.host-file-probe';
const EINVAL = 28;
const EIO = 29;
const shapes = new WeakMap<WasmFs, FsShape>();

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !ArrayBuffer.isView(v);
const isOps = (v: unknown): v is Ops => isObject(v) && Object.keys(v).length > 0 && Object.values(v).every((f) => typeof f === 'function');

/**
 * Finds the minified names of this core's FS internals on a probe file. Throws when the shape is not
 * the expected one (a different core build): pin the core version and run its test.
 */
export function discoverFsShape(wasmFs: WasmFs): FsShape {
  const known = shapes.get(wasmFs);
  if (known) return known;
  wasmFs.writeFile(PROBE, new Uint8Array(10));
  const stream = wasmFs.open(PROBE, 'r') as Stream;
  try {
    const fail = (what: string): never => {
      throw new Error(`ffmpeg.wasm's file system does not have the expected shape (${what}); host files need the pinned core version.`);
    };
    const nodeKey = Object.keys(stream).find((k) => {
      const v = stream[k];
      return isObject(v) && typeof v.mode === 'number' && v.name === PROBE.slice(1);
    }) ?? fail('no node on a stream');
    const node = stream[nodeKey] as Node;
    const streamOps = Object.keys(stream).find((k) => isOps(stream[k]) && Object.values(node).includes(stream[k])) ?? fail('no stream_ops');
    const ops = stream[streamOps] as Ops;
    const streamOpsOnNode = Object.keys(node).find((k) => node[k] === ops)!;
    const nodeOps = Object.keys(node).find((k) => k !== streamOpsOnNode && isOps(node[k])) ?? fail('no node_ops');
    if (streamOpsOnNode !== streamOps) fail('stream_ops named differently on node and stream');
    const nOps = node[nodeOps] as Ops;
    const attrsOf = (name: string): Record<string, unknown> | undefined => {
      try {
        const r = (nOps[name] as (n: Node) => unknown)(node);
        return isObject(r) ? r : undefined;
      } catch {
        return undefined;
      }
    };
    const getattr = Object.keys(nOps).find((k) => nOps[k].length === 1 && attrsOf(k)?.size === 10 && attrsOf(k)?.mode === node.mode) ?? fail('no getattr');
    const setattr = Object.keys(nOps).find((k) => k !== getattr && nOps[k].length === 2) ?? fail('no setattr');
    (nOps[setattr] as (n: Node, a: { size: number }) => void)(node, { size: 7 });
    if (attrsOf(getattr)?.size !== 7) fail('setattr does not truncate');
    const llseek = Object.keys(ops).find((k) => {
      if (k === 'read' || k === 'write' || ops[k].length !== 3) return false;
      try {
        const seek = ops[k] as (s: Stream, offset: number, whence: number) => unknown;
        return seek(stream, 3, 0) === 3 && seek(stream, -2, 2) === 5;
      } catch {
        return false;
      }
    }) ?? fail('no llseek');
    if (typeof ops.read !== 'function' || typeof ops.write !== 'function') fail('no read/write stream ops');
    let ErrnoError: FsShape['ErrnoError'] | undefined;
    try {
      wasmFs.open('/.host-file-missing', 'r');
    } catch (error) {
      if (isObject(error) && (error as { name?: unknown }).name === 'ErrnoError') ErrnoError = error.constructor as FsShape['ErrnoError'];
    }
    const shape: FsShape = { node: nodeKey, nodeOps, streamOps, getattr, setattr, llseek, ErrnoError: ErrnoError ?? fail('no ErrnoError') };
    shapes.set(wasmFs, shape);
    return shape;
  } finally {
    wasmFs.close(stream);
    wasmFs.unlink(PROBE);
  }
}

export interface HostFile {
  /** Path of the node inside the wasm file system. */
  readonly path: string;
  /** Removes the node and closes the host descriptor (the host file itself stays). */
  close(): void;
}

/**
 * Makes `wasmPath` inside the instance a node backed by the host file `hostPath`: opened for reading
 * ('read', it must exist) or created/truncated for writing ('write'). Reads, writes, seeks and fstat go
 * to the host file, so its size is never held in memory.
 */
export function attachHostFile(wasmFs: WasmFs, wasmPath: string, hostPath: string, mode: 'read' | 'write'): HostFile {
  const shape = discoverFsShape(wasmFs);
  const fd = fs.openSync(hostPath, mode === 'read' ? 'r' : 'w+');
  try {
    wasmFs.writeFile(wasmPath, new Uint8Array(0));
    const stream = wasmFs.open(wasmPath, 'r') as Stream;
    const node = stream[shape.node] as Node;
    wasmFs.close(stream);
    const memfsNodeOps = node[shape.nodeOps] as Ops;
    const io = <T>(call: () => T): T => {
      try {
        return call();
      } catch (error) {
        if (error instanceof shape.ErrnoError) throw error;
        throw new shape.ErrnoError(EIO);
      }
    };
    const size = (): number => fs.fstatSync(fd).size;
    // The ops objects are shared by every MEMFS file: this node gets its own copies.
    node[shape.nodeOps] = {
      ...memfsNodeOps,
      [shape.getattr]: (n: Node) => {
        const attrs = (memfsNodeOps[shape.getattr] as (n: Node) => Record<string, unknown>)(n);
        attrs.size = io(size);
        attrs.blocks = Math.ceil((attrs.size as number) / 4096);
        return attrs;
      },
      [shape.setattr]: (n: Node, attr: { size?: number; mode?: number; timestamp?: number }) => {
        const { size: newSize, ...rest } = attr;
        (memfsNodeOps[shape.setattr] as (n: Node, a: object) => void)(n, rest);
        if (newSize !== undefined) io(() => fs.ftruncateSync(fd, newSize));
      },
    };
    // Only read, write and llseek: MEMFS's allocate/mmap/msync would reach for in-memory contents.
    node[shape.streamOps] = {
      read: (_s: Stream, buffer: Uint8Array, offset: number, length: number, position: number) =>
        io(() => fs.readSync(fd, buffer, offset, length, position)),
      write: (_s: Stream, buffer: Uint8Array, offset: number, length: number, position: number) =>
        length === 0 ? 0 : io(() => fs.writeSync(fd, buffer, offset, length, position)),
      [shape.llseek]: (s: Stream, offset: number, whence: number) => {
        const position = whence === 1 ? s.position + offset : whence === 2 ? io(size) + offset : offset;
        if (position < 0) throw new shape.ErrnoError(EINVAL);
        return position;
      },
    };
  } catch (error) {
    fs.closeSync(fd);
    throw error;
  }
  let closed = false;
  return {
    path: wasmPath,
    close() {
      if (closed) return;
      closed = true;
      try {
        wasmFs.unlink(wasmPath);
      } catch {
        // Already gone (ffmpeg may have removed or renamed it): only the descriptor is left to close.
      }
      fs.closeSync(fd);
    },
  };
}
