# Builds walcast as a static binary on a distroless base.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /walcast ./cmd/walcast

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /walcast /walcast
COPY config/walcast.yaml /config/walcast.yaml
ENV WALCAST_CONFIG=/config/walcast.yaml \
    WALCAST_HTTP_ADDR=0.0.0.0:8080
EXPOSE 8080
ENTRYPOINT ["/walcast"]
CMD ["serve"]
