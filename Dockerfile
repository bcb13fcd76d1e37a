# The one livedrops binary; docker-compose.yml runs it as migrate, api, hub and worker.
#   docker build -t livedrops .        (--build-arg VERSION=v1.2.3 stamps a version)
#   docker run --rm livedrops help
# The image holds no PostgreSQL or Redis, so `all` needs DATABASE_URL and REDIS_URL here (NATS it can
# embed).

FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /livedrops ./cmd/livedrops

# Alpine rather than distroless: its busybox wget lets the compose health checks probe /readyz.
FROM alpine:3.22
RUN apk add --no-cache ca-certificates \
	&& adduser -D -H -u 10001 livedrops \
	&& install -d -o livedrops -g livedrops /var/lib/livedrops
COPY --from=build /livedrops /usr/local/bin/livedrops
USER livedrops
ENV LIVEDROPS_HTTP_ADDR=:8080 LIVEDROPS_DATA_DIR=/var/lib/livedrops
EXPOSE 8080
ENTRYPOINT ["livedrops"]
CMD ["help"]
