# syntax=docker/dockerfile:1
#
# The analyzerd image: a static binary (no cgo) on a distroless base, running as the
# unprivileged nonroot user (65532). Build it with
#
#   docker build --build-arg VERSION=$(git describe --tags --always) -t analyzerd .
#
# The version goes into main.version through ldflags (`analyzerd version` prints it). CI runs
# the build command below outside Docker and checks that its result is statically linked
# (tools/chartcheck, TestDockerfileStaticBuild).

ARG GO_VERSION=1.26

FROM --platform=$BUILDPLATFORM golang:${GO_VERSION} AS build
WORKDIR /src
# The modules first, so that a change of the source does not download them again.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
ARG VERSION=dev
ARG TARGETOS=linux
ARG TARGETARCH=amd64
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=${TARGETOS} GOARCH=${TARGETARCH} \
    go build -trimpath -ldflags="-s -w -X main.version=${VERSION}" -o /out/analyzerd ./cmd/analyzerd

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/analyzerd /usr/local/bin/analyzerd
# The nonroot user of the base image; the Helm chart runs the pod as the same user.
USER 65532:65532
# The HTTP server (/metrics, /healthz, /readyz, /v1/rollouts) and the embedded NATS server.
EXPOSE 8080 4222
ENTRYPOINT ["/usr/local/bin/analyzerd"]
CMD ["--help"]
