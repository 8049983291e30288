# syntax=docker/dockerfile:1
# The sidecar image: `byoc` (the reconciler and its agent API) and `rwproxy`, built from
# this workspace, on a distroless base with no shell, running as a non-root user.
#
#   docker build -t byoc:dev .            (or: podman build / buildah bud)
#
# manifests/base/deployment.yaml runs both containers from this one image.

# The toolchain the tests run with; bookworm, so the binaries need no newer glibc than the
# distroless debian12 base has.
FROM rust:1.95-bookworm AS build
WORKDIR /src
# libgit2 and libssh2 are built by the git2 crate (cmake, pkg-config); HTTPS fetches link OpenSSL.
RUN apt-get update \
    && apt-get install -y --no-install-recommends cmake=3.25.* pkg-config=1.8.* libssl-dev=3.0.* \
    && rm -rf /var/lib/apt/lists/*
COPY . .
RUN cargo build --release --locked -p byoc-reconciler --bin byoc \
    && cargo build --release --locked -p rwproxy --bin rwproxy \
    && install -D -m 0755 target/release/byoc /out/byoc \
    && install -D -m 0755 target/release/rwproxy /out/rwproxy

# distroless/cc: glibc, libgcc and CA certificates, no shell or package manager; the
# :nonroot tag runs as uid 65532, which the Deployment's securityContext also sets.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/byoc /usr/local/bin/byoc
COPY --from=build /out/rwproxy /usr/local/bin/rwproxy
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/byoc"]
