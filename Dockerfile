# Tributary with the example financial project: `docker compose up` (docker-compose.yml) runs
# it beside PostgreSQL (the bank), Prometheus and Grafana. CI runs this file's build and start
# commands outside Docker (.ci/docker-outside), since no Docker engine runs there.

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# OpenSSL is vendored (built from source): perl and make come with the rust image.
RUN cargo build --locked --release -p tributary-server \
 && cp target/release/tributary /usr/local/bin/tributary

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /usr/local/bin/tributary /usr/local/bin/tributary
WORKDIR /opt/tributary
COPY models models
COPY seeds seeds
# Beyond loopback the server requires a password: set TRIBUTARY_PASSWORD when running.
ENV TRIBUTARY_LISTEN=0.0.0.0:6543 \
    TRIBUTARY_HTTP=0.0.0.0:6544 \
    TRIBUTARY_WAREHOUSE=/var/lib/tributary
VOLUME /var/lib/tributary
EXPOSE 6543 6544
CMD ["tributary", "demo"]
