# eddy as a container: plugins and config are mounted volumes.
#   docker build -t eddy .
#   docker run -v $PWD/plugins-out:/plugins -v $PWD/config:/config eddy
# A secured cluster's password or certificates: mount them read-only and
# name them in [kafka.security], e.g. password_file = "/run/secrets/kafka"
# with -v $PWD/kafka-password:/run/secrets/kafka:ro (or password_env and
# -e KAFKA_SASL_PASSWORD).
#
# Two ways to fill it:
# - `runtime` (the default): eddy and the example plugins are built in the
#   `build` stage, from rust:1.95-bookworm;
# - `local`: `cargo xtask image` builds them on the machine and passes them
#   as the build context (eddy, plugins/), onto a base it made with
#   mmdebstrap (BASE), for machines that can pull no image.
# eddy writes nothing to disk: `--read-only` works, without a tmpfs.

ARG BASE=debian:bookworm-slim

FROM rust:1.95-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake libssl-dev pkg-config \
 && rm -rf /var/lib/apt/lists/*
RUN rustup target add wasm32-wasip2
WORKDIR /src
COPY . .
RUN cargo build --release --package eddy --bin eddy \
 && cargo build --release --target wasm32-wasip2 \
      --manifest-path plugins/Cargo.toml --target-dir target/wasm \
 && mkdir -p /out/plugins \
 && for crate in plugins/*/; do \
      name=$(basename "$crate"); \
      cp "target/wasm/wasm32-wasip2/release/$(echo "$name" | tr - _).wasm" "/out/plugins/$name.wasm"; \
    done \
 && cp target/release/eddy /out/eddy

# What both ways share: the user, the folders, the health check.
FROM ${BASE} AS base
# A base that has them already (the local one) skips apt.
RUN if ! (command -v useradd && dpkg -s ca-certificates libssl3) >/dev/null 2>&1; then \
      apt-get update \
      && apt-get install -y --no-install-recommends ca-certificates libssl3 passwd \
      && rm -rf /var/lib/apt/lists/*; \
    fi \
 && useradd --system --uid 10001 --user-group --home-dir /nonexistent \
      --shell /usr/sbin/nologin eddy \
 && mkdir -p /plugins /config /opt/eddy/example-plugins /var/cache/eddy \
 && chown 10001:10001 /var/cache/eddy && chmod 700 /var/cache/eddy
# Compiled plugins are cached here between runs ([plugins] compiled_cache).
ENV XDG_CACHE_HOME=/var/cache
LABEL org.opencontainers.image.title="eddy" \
      org.opencontainers.image.description="Runs Kafka events through sandboxed WebAssembly handlers" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/eddy-events/eddy"
VOLUME ["/plugins", "/config"]
EXPOSE 9464
# SIGTERM is eddy's graceful stop (finish the record in hand, commit, leave
# the group); give it the time it needs: `docker stop -t 30`, or
# terminationGracePeriodSeconds.
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
  CMD ["eddy", "health", "--addr", "127.0.0.1:9464"]
ENTRYPOINT ["eddy"]
CMD ["run", "--config", "/config/eddy.toml"]

# eddy and the plugins built outside, in the build context.
FROM base AS local
COPY eddy /usr/local/bin/eddy
COPY plugins/ /opt/eddy/example-plugins/
USER 10001:10001

FROM base AS runtime
COPY --from=build /out/eddy /usr/local/bin/eddy
# The example plugins, to copy into /plugins if you want them.
COPY --from=build /out/plugins/ /opt/eddy/example-plugins/
USER 10001:10001
