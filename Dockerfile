# kubeanon in a container: built with the Rust toolchain image, run as the
# non-root user of a distroless image (glibc and CA certificates, no shell).
# The root filesystem can be read-only: kubeanon writes only where
# --checkpoint, --append and --output point (mount a volume there).
#
#   docker build -t kubeanon:0.1.0 .
#   docker run --rm kubeanon:0.1.0 --help
#
# The build stage takes several minutes (the AWS SDK). See
# examples/deploy/cronjob.yaml for a CronJob that runs this image.
FROM docker.io/library/rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
RUN cargo build --locked --release --bin kubeanon

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/kubeanon /usr/local/bin/kubeanon
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/kubeanon"]
