# One image per function, from its esbuild bundle: `npm run build` first, then (scripts/images.sh)
#   minikube -p knative image build -t dev.local/<function>:<version> --build-opt=build-arg=FUNCTION=<function> .
# dist/<function>/ is self-contained (the loader index.js, the bundle function.js with its source map and
# code cache, THIRD-PARTY-LICENSES.txt with the licence texts of the npm packages bundled; convert also
# transcode-worker.js and ffmpeg-core/, the LGPL ffmpeg core loaded from disk at run time, with its
# licences/ and SOURCES.md, the source offer: docs/core.md), so it is all the image carries.
# Distroless: no shell, no package manager; the :nonroot variant has the user 65532.
FROM gcr.io/distroless/nodejs20-debian12:nonroot

ARG FUNCTION
WORKDIR /app
# Copying index.js by name first makes a build without FUNCTION fail here instead of copying all of dist/.
COPY dist/${FUNCTION}/index.js ./
COPY dist/${FUNCTION}/ ./
# A 1 MiB young generation: the socket buffers of a multi-GB upload or download die young and are freed
# at every scavenge, instead of piling up until V8's external-memory limit (the upload's peak RSS for a
# 2 GB file drops by ~50 MB; `npm run bench -- --large` runs the bundle with these flags). Set before the
# code cache is made: V8 accepts a cache only under the flags it was made with.
ENV NODE_OPTIONS=--max-semi-space-size=1
# glibc's malloc, told to (hugetlb=1), asks the kernel for transparent huge pages on its heap and big
# blocks: a start touches tens of MB (each converter thread reads and copies the core, a login's scrypt
# takes 32 MB), and 2 MB pages fault those in 512 times less often. One arena (arena_max=1): otherwise
# each thread that mallocs (every converter instance is a worker thread) gets its own arena, whose heaps
# got no huge pages, while these threads barely malloc as they work, so sharing one costs nothing
# measurable. What it saved is in docs/performance.md. Harmless where transparent huge pages are
# `never`. Needs glibc ≥ 2.35; this image has 2.36.
ENV GLIBC_TUNABLES=glibc.malloc.hugetlb=1:glibc.malloc.arena_max=1
# V8's code cache, remade with the node of this image (one from another node version is ignored, and
# the start is then as slow as without one). Exec form: distroless has no shell. Root only to write it.
USER 0
RUN ["/nodejs/bin/node", "index.js", "--make-code-cache"]

ENV NODE_ENV=production \
    PORT=8080
EXPOSE 8080
# Numeric, so the kubelet can verify the manifests' runAsNonRoot (a user name cannot be checked).
USER 65532:65532
# The base image's entrypoint is node; the bundle listens on $PORT (Knative sets it) and serves GET /healthz.
CMD ["--enable-source-maps", "index.js"]
