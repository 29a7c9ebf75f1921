# eddy as a container: plugins and config are mounted volumes.
#   docker build -t eddy .
#   docker run -v $PWD/plugins-out:/plugins -v $PWD/config:/config eddy
# A secured cluster's password or certificates: mount them read-only and
# name them in [kafka.security], e.g. password_file = "/run/secrets/kafka"
# with -v $PWD/kafka-password:/run/secrets/kafka:ro (or password_env and
# -e KAFKA_SASL_PASSWORD).
# Not built on the machines this repository is developed on (no Docker
# engine there); its instructions are linted by the tests.

FROM rust:1.95-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake libssl-dev pkg-config \
 && rm -rf /var/lib/apt/lists/*
RUN rustup target add wasm32-wasip2
WORKDIR /src
COPY . .
RUN cargo build --release --package eddy-host --bin eddy \
 && cargo build --release --target wasm32-wasip2 \
      --manifest-path plugins/Cargo.toml --target-dir target/wasm \
 && mkdir -p /out/plugins \
 && for crate in plugins/*/; do \
      name=$(basename "$crate"); \
      cp "target/wasm/wasm32-wasip2/release/$(echo "$name" | tr - _).wasm" "/out/plugins/$name.wasm"; \
    done

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libssl3 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin eddy \
 && mkdir -p /plugins /config /opt/eddy/example-plugins
COPY --from=build /src/target/release/eddy /usr/local/bin/eddy
# The example plugins, to copy into /plugins if you want them.
COPY --from=build /out/plugins/ /opt/eddy/example-plugins/
VOLUME ["/plugins", "/config"]
USER eddy
EXPOSE 9464
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
  CMD ["eddy", "health", "--addr", "127.0.0.1:9464"]
ENTRYPOINT ["eddy"]
CMD ["run", "--config", "/config/eddy.toml"]
