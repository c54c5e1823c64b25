// Host files inside an ffmpeg.wasm instance's file system (docs/media-engine.md, "Host files"). A
// MEMFS copy of the input costs as much memory as the file; a host-file node instead answers ffmpeg's
// reads, writes, seeks and fstat from a file descriptor on disk, so a conversion's memory does not
// depend on the file's size.
//
// A regular MEMFS file is made at the path, then its node gets its own node_ops (getattr reports the
// host file's size, setattr truncates it) and stream_ops (read, write, llseek on the host fd). The
// project's core is not minified, so these are Emscripten's own names (lib/media/ffmpeg-core.ts).
import fs from 'node:fs';
import type { CoreFs, CoreNode, CoreOps, CoreStream } from './ffmpeg-core';

const EINVAL = 28;
const EIO = 29;

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
export function attachHostFile(wasmFs: CoreFs, wasmPath: string, hostPath: string, mode: 'read' | 'write'): HostFile {
  const { ErrnoError } = wasmFs;
  const fd = fs.openSync(hostPath, mode === 'read' ? 'r' : 'w+');
  try {
    wasmFs.writeFile(wasmPath, new Uint8Array(0));
    const stream = wasmFs.open(wasmPath, 'r');
    const node = stream.node;
    wasmFs.close(stream);
    const memfsNodeOps = node.node_ops;
    const io = <T>(call: () => T): T => {
      try {
        return call();
      } catch (error) {
        if (error instanceof ErrnoError) throw error;
        throw new ErrnoError(EIO);
      }
    };
    const size = (): number => fs.fstatSync(fd).size;
    // The ops objects are shared by every MEMFS file: this node gets its own copies.
    node.node_ops = {
      ...memfsNodeOps,
      getattr: (n: CoreNode) => {
        const attrs = memfsNodeOps.getattr(n);
        attrs.size = io(size);
        attrs.blocks = Math.ceil((attrs.size as number) / 4096);
        return attrs;
      },
      setattr: (n: CoreNode, attr: { size?: number; mode?: number; timestamp?: number }) => {
        const { size: newSize, ...rest } = attr;
        memfsNodeOps.setattr(n, rest);
        if (newSize !== undefined) io(() => fs.ftruncateSync(fd, newSize));
      },
    };
    // Only read, write and llseek: MEMFS's allocate/mmap/msync would reach for in-memory contents.
    node.stream_ops = {
      read: (_s: CoreStream, buffer: Uint8Array, offset: number, length: number, position: number) =>
        io(() => fs.readSync(fd, buffer, offset, length, position)),
      write: (_s: CoreStream, buffer: Uint8Array, offset: number, length: number, position: number) =>
        length === 0 ? 0 : io(() => fs.writeSync(fd, buffer, offset, length, position)),
      llseek: (s: CoreStream, offset: number, whence: number) => {
        const position = whence === 1 ? s.position + offset : whence === 2 ? io(size) + offset : offset;
        if (position < 0) throw new ErrnoError(EINVAL);
        return position;
      },
    } satisfies CoreOps;
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
