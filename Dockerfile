# CityStream: one binary for every role (up, produce, process, serve, init, destroy).
#
#   docker build -t citystream .                      # compiles it in a Rust image
#   cargo build --release && \
#   docker build -t citystream --target from-host .   # copies target/release/citystream
#
# The second form needs no Rust image: for machines that cannot pull one. The binary must be
# built on Debian 12 (bookworm) or a distribution with the same glibc and OpenSSL 3.
#
# Every setting is an environment variable (`citystream <role> --help` names them); the data
# directory of the SQLite store is the volume /var/lib/citystream.

ARG RUST_IMAGE=rust:1-bookworm

# The runtime every target shares: the system OpenSSL librdkafka links, CA certificates for
# AWS and Kafka over TLS, curl for the health check, and a user without privileges.
FROM debian:bookworm-slim AS runtime-base
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl libssl3 zlib1g \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 citystream \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/citystream citystream \
    && mkdir -p /var/lib/citystream \
    && chown citystream:citystream /var/lib/citystream
ENV CITYSTREAM_DATA_DIR=/var/lib/citystream \
    CITYSTREAM_HEALTH_URL=http://127.0.0.1:8082/api/v1/health
VOLUME ["/var/lib/citystream"]
WORKDIR /var/lib/citystream
USER 10001:10001
EXPOSE 8082 8080
# The API's health by default; each role's compose service names its own URL.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["sh", "-c", "curl -fsS --max-time 2 \"$CITYSTREAM_HEALTH_URL\" >/dev/null"]
# SIGTERM: stop reading, write and commit what was taken, exit (a second signal exits at once).
STOPSIGNAL SIGTERM
ENTRYPOINT ["citystream"]
CMD ["up"]

# A binary built on the host (`cargo build --release`; BINARY names another build of it).
FROM runtime-base AS from-host
ARG BINARY=target/release/citystream
COPY --chown=root:root ${BINARY} /usr/local/bin/citystream

# The binary built here.
FROM ${RUST_IMAGE} AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends cmake libssl-dev pkg-config \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin citystream \
    && cp target/release/citystream /usr/local/bin/citystream

FROM runtime-base AS runtime
COPY --from=build /usr/local/bin/citystream /usr/local/bin/citystream
