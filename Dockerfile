# Image with the module's commands: gatewayd (the reference gateway) and
# sessionctl (demo, incident tools, the test backend, sign).
#
#   docker build -t sessioncache .
#   docker run --rm sessioncache sessionctl demo
#   docker run --rm -p 8080:8080 sessioncache gatewayd -redis redis://redis:6379 -backend http://backend:8081

FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/ ./cmd/...

FROM scratch
# CA roots for rediss:// and https:// backends.
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /out/ /usr/local/bin/
ENV PATH=/usr/local/bin
USER 65532:65532
EXPOSE 8080 8081
CMD ["gatewayd"]
