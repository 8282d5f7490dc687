# keyferry's container image for your own CI (docker build / buildah / kaniko). This repository
# builds the same image without a daemon: scripts/image (umoci), tested by crates/cli/tests/image.rs.
#
#   docker build --build-arg KEYFERRY_COMMIT=$(git rev-parse --short=12 HEAD) -t ghcr.io/keyferry/keyferry:0.1.0 .
#
# Stage 1 builds the release binary; stage 2 is distroless (glibc, CA certificates, no shell, no
# package manager) running as the non-root user 65532 — the uid the chart's securityContext sets.
ARG RUST_VERSION=1.95

FROM docker.io/library/rust:${RUST_VERSION}-slim-bookworm AS build
WORKDIR /src
COPY . .
# `keyferry --version` reports this commit (crates/cli/build.rs).
ARG KEYFERRY_COMMIT=""
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    KEYFERRY_COMMIT="${KEYFERRY_COMMIT}" cargo build --release --locked -p keyferry \
 && install -m 0755 target/release/keyferry /keyferry

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /keyferry /usr/local/bin/keyferry
USER 65532:65532
WORKDIR /home/nonroot
ENTRYPOINT ["/usr/local/bin/keyferry"]
CMD ["controller"]
