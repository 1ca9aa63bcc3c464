# syntax=docker/dockerfile:1
# Every Ticketing image, from one build. The `builder` stage cooks the workspace's
# dependencies once (cargo-chef: rebuilt only when a manifest or Cargo.lock changes),
# then builds every deployable binary in one cargo invocation; each image is a target
# of its own holding one binary on a distroless runtime, as a non-root user:
#
#   docker build --target tickets -t ticketing-tickets .
#
# skaffold.yaml builds each target with only the sources its binary is built from as
# the artifact's dependencies. SQL is checked against the committed .sqlx/ data: no
# database at build time. Migrations are compiled into the binaries.
ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-slim-bookworm AS chef
RUN cargo install cargo-chef --locked --version 0.1.78
WORKDIR /app

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
# release for images that ship; skaffold's dev loop builds with dev (faster).
ARG PROFILE=release
COPY --from=planner /app/recipe.json recipe.json
# The patched sqlx-core (vendor/sqlx-core/PATCHES.md) is a dependency, not a member:
# cargo-chef does not make a skeleton of a `[patch]` path, so cook needs its sources.
COPY vendor vendor
# Dependencies only, for every deployable at once.
RUN cargo chef cook --profile "${PROFILE}" --recipe-path recipe.json \
    --package auth --package tickets --package orders --package payments \
    --package expiration --package client --package stripe-standin
COPY . .
ENV SQLX_OFFLINE=true
RUN cargo build --profile "${PROFILE}" --locked --bins \
    --package auth --package tickets --package orders --package payments \
    --package expiration --package client --package stripe-standin \
 && out="target/$([ "${PROFILE}" = dev ] && echo debug || echo "${PROFILE}")" \
 && for binary in auth tickets orders payments expiration client stripe-standin; do \
      install -D "${out}/${binary}" "/out/${binary}"; \
    done

# The runtime every image shares: glibc, libgcc and the CA bundle, user 65532.
FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
USER 65532:65532

FROM runtime AS auth
COPY --from=builder /out/auth /usr/local/bin/auth
# The API on 3000, /healthz, /readyz and /metrics on 9000.
EXPOSE 3000 9000
ENTRYPOINT ["/usr/local/bin/auth"]

FROM runtime AS tickets
COPY --from=builder /out/tickets /usr/local/bin/tickets
EXPOSE 3000 9000
ENTRYPOINT ["/usr/local/bin/tickets"]

FROM runtime AS orders
COPY --from=builder /out/orders /usr/local/bin/orders
EXPOSE 3000 9000
ENTRYPOINT ["/usr/local/bin/orders"]

FROM runtime AS payments
COPY --from=builder /out/payments /usr/local/bin/payments
EXPOSE 3000 9000
ENTRYPOINT ["/usr/local/bin/payments"]

FROM runtime AS expiration
COPY --from=builder /out/expiration /usr/local/bin/expiration
EXPOSE 3000 9000
ENTRYPOINT ["/usr/local/bin/expiration"]

FROM runtime AS client
COPY --from=builder /out/client /usr/local/bin/client
EXPOSE 3000 9000
ENTRYPOINT ["/usr/local/bin/client"]

# The local Stripe stand-in (dev only): one port.
FROM runtime AS stripe-standin
COPY --from=builder /out/stripe-standin /usr/local/bin/stripe-standin
EXPOSE 3000
ENTRYPOINT ["/usr/local/bin/stripe-standin"]
