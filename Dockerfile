# The `flowline` binary (nodes, loadgen, harness, chaos) for docker-compose.yml.
# Multi-stage: build the workspace with the pinned Rust toolchain, ship only the binary.
FROM rust:1.95.0-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p flowline-harness --bin flowline \
 && cp target/release/flowline /usr/local/bin/flowline

FROM debian:12.11-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --create-home flowline \
 && mkdir /runs && chown flowline /runs
COPY --from=build /usr/local/bin/flowline /usr/local/bin/flowline
COPY scenarios /flowline/scenarios
COPY compose /flowline/compose
WORKDIR /flowline
USER flowline
ENTRYPOINT ["flowline"]
CMD ["--help"]
