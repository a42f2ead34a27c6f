# syntax=docker/dockerfile:1
# The wharf worker image: examples/worker.rs with the RabbitMQ, NATS and Redis
# features, configured only by environment variables (see the table at the top
# of examples/worker.rs). Deployed by charts/wharf-worker.
#
#   docker build -t wharf-worker:0.1.0 .
#   docker run --rm -p 8080:8080 -e WHARF_BROKER_URL=amqp://… wharf-worker:0.1.0

FROM rust:1.95-bookworm AS builder
WORKDIR /src
COPY . .
# The cache mounts keep the crate registry and target/ between builds, so the
# binary is copied out of target/ in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --example worker --features amqp,nats,redis \
    && install -D -m 0755 target/release/examples/worker /out/wharf-worker

# glibc, libgcc, CA certificates and a "nonroot" user (65532); no shell.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=builder /out/wharf-worker /usr/local/bin/wharf-worker
ENV WHARF_HTTP_ADDR=0.0.0.0:8080
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/wharf-worker"]
