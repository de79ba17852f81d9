# syntax=docker/dockerfile:1
#
# One image for every Tributary process: `standalone` (the default command),
# `registry`, `ingest`, `processor`, `query`, and the operator CLI.
#
#   docker build -t tributary:local .
#   docker run --rm -p 8080:8080 -p 1883:1883 -p 50051:50051 tributary:local
#
# docker-compose.yml runs the distributed mode from this same image; see
# docs/deploy.md. scripts/check-deploy.sh (CI) checks that EXPOSE below covers
# every port docker-compose.yml publishes for a Tributary service.

# ---------------------------------------------------------------------------
# Builder
# ---------------------------------------------------------------------------
FROM rust:1-bookworm AS builder

# rdkafka-sys builds librdkafka from source with its own ./configure + make
# (the workspace does not enable rdkafka's `cmake-build` feature, so no
# cmake), linking the system zlib (rdkafka's default `libz` feature, found
# through pkg-config). librdkafka's configure wants a C and a C++ compiler;
# python3 only generates its linker script (optional). The rust image
# (buildpack-deps) ships all of these today; naming them keeps the build from
# depending on that. No protoc: crates/proto compiles with protox (pure Rust).
# OpenSSL only for CoAP over DTLS (the `openssl` crate links the system
# libssl, found through pkg-config); every other TLS is rustls, and rdkafka's
# `ssl` feature is off.
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      make gcc g++ pkg-config zlib1g-dev libssl-dev python3 \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /build
# .dockerignore lets in only what the build reads: Cargo.toml, Cargo.lock,
# crates/, loadtest/ (a workspace member, so --locked needs it) and proto/.
COPY . .

# The registry and target directory live in BuildKit cache mounts, so a
# rebuild after a source change recompiles only the changed crates. The
# binary is copied out of the cache mount in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/build/target,sharing=locked \
    cargo build --release --locked -p tributary \
 && install -D -m 0755 target/release/tributary /out/tributary

# ---------------------------------------------------------------------------
# Runtime
# ---------------------------------------------------------------------------
FROM debian:bookworm-slim

# What the binary links dynamically: glibc (libc, libm), libgcc_s (Rust
# unwinding), libz (librdkafka's compression, via libz-sys finding the
# system zlib) and libssl3 (DTLS for CoAP). glibc, libgcc-s1 and zlib1g are
# already in bookworm-slim; zlib1g is named so that stays true. ca-certificates for TLS to brokers or
# Scylla clusters that use public CAs.
#
# busybox (one 0.8 MB binary, depending only on libc) is the container
# health probe: `busybox wget -q -O /dev/null http://127.0.0.1:9100/readyz`
# exits non-zero unless /readyz answers 2xx. curl would pull in about a dozen
# shared libraries (libcurl, nghttp2, ssh2, ldap, rtmp, psl...) for the same
# job. Do not pass `-T`: Debian 12's busybox is built without wget timeouts
# and `-T` crashes it; the compose healthcheck's `timeout:` bounds the probe.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates zlib1g libssl3 busybox \
 && rm -rf /var/lib/apt/lists/*

# A fixed non-root uid, so volumes and Kubernetes securityContext agree.
# /var/lib/tributary/data is created owned by it: an empty named volume
# mounted there starts with this owner, so the registry can write the JWT
# secret and admin token into it. It is also the working directory, so the
# defaults ./data/jwt.secret and ./data/admin.token (which the CLI reads)
# resolve inside it.
RUN groupadd --system --gid 10001 tributary \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/tributary \
      --no-create-home --shell /usr/sbin/nologin tributary \
 && install -d -o 10001 -g 10001 -m 0750 /var/lib/tributary /var/lib/tributary/data

COPY --from=builder /out/tributary /usr/local/bin/tributary

USER 10001:10001
WORKDIR /var/lib/tributary

# HTTP ingest, MQTT, MQTT over WebSocket, MQTT over TLS and WSS (started only
# with --tls-cert/--tls-key), gRPC (query; standalone), gRPC (registry),
# /metrics /healthz /readyz, and CoAP and CoAP over DTLS (started only with
# --coap-addr and --coaps-addr).
EXPOSE 8080 1883 8083 8883 8084 50051 50052 9100 5683/udp 5684/udp

ENTRYPOINT ["tributary"]
CMD ["standalone"]
