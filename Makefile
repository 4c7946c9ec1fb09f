# walcast: the two commands a fresh machine needs are `make run` and `make test`.
.PHONY: run test build bench fuzz pg-start pg-stop clean

build:
	go build -o bin/walcast ./cmd/walcast

## run: throwaway PostgreSQL + migrations + demo data + walcast on 127.0.0.1:8080
run:
	scripts/run.sh

## test: throwaway PostgreSQL, go vet, gofmt check, go test -race ./...
test:
	scripts/test.sh

## bench: reproduce docs/benchmarks.md (about 20 minutes)
bench:
	scripts/bench.sh

## fuzz: every fuzz target for FUZZTIME (default 4s) each
fuzz:
	scripts/fuzz.sh

pg-start:
	scripts/pg.sh start

pg-stop:
	scripts/pg.sh stop

clean:
	scripts/pg.sh stop
	rm -rf bin .pgdata .pgdata.path
