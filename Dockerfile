# syntax=docker/dockerfile:1
# The mcp-operator image: the controller, the gateway sidecar and the stdio wrapper are one
# statically linked binary. Build: docker build -t ghcr.io/mcp-operator/mcp-operator:0.1.0 .

# 1. Build the release binary, statically linked (scripts/build-static.sh), and check it is.
FROM docker.io/library/rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN binary="$(scripts/build-static.sh)" \
 && if ldd "$binary" 2>&1 | grep -q '=>'; then echo "$binary is dynamically linked" >&2; exit 1; fi \
 && install -D -m 0755 "$binary" /out/mcp-operator

# 2. Run it on distroless static: no shell, no package manager, no libc; non-root.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/mcp-operator /usr/local/bin/mcp-operator
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/mcp-operator"]
CMD ["controller"]
