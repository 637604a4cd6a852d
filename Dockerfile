# The one stockflow image: every role (`stockflow command-api`, `query-api`, ...).
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p stockflow --bin stockflow

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/stockflow /usr/local/bin/stockflow
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/stockflow"]
