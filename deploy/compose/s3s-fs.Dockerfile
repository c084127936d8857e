# syntax=docker/dockerfile:1
#
# The S3-compatible server of compose.yaml: s3s-fs from crates.io, the one
# Sluice's tests run (deploy/local/setup.sh installs the same version). It
# keeps each object as a file under its data directory, a bucket being a
# directory there. It has no published image, so compose.yaml builds this one:
#
#     docker build -f deploy/compose/s3s-fs.Dockerfile -t sluice-s3s-fs:0.17.0 deploy/compose
#
# s3s-fs 0.17.0 needs rustc >= 1.96, newer than the stable toolchain Sluice
# builds with, hence the nightly toolchain, as in setup.sh.

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS builder
ARG S3S_FS_VERSION=0.17.0
RUN rustup toolchain install nightly --profile minimal
RUN --mount=type=cache,id=sluice-s3s-fs-cargo-registry,target=/usr/local/cargo/registry \
    cargo +nightly install s3s-fs --version "${S3S_FS_VERSION}" --locked --features binary --root /out

FROM debian:${DEBIAN_RELEASE}-slim
# An unprivileged user owning the data directory, so that a fresh named
# volume mounted there gets that ownership.
RUN groupadd --system --gid 10001 s3 \
 && useradd --system --uid 10001 --gid s3 --home-dir /data --create-home --shell /usr/sbin/nologin s3
COPY --from=builder /out/bin/s3s-fs /usr/local/bin/s3s-fs
USER 10001:10001
WORKDIR /data
ENV RUST_LOG=info
EXPOSE 9000
ENTRYPOINT ["s3s-fs"]
CMD ["--help"]
