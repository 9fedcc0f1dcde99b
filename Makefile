# make test   runs the tests of the module (scripts/test).
# make bench  runs the benchmark suite (bench/cmd/benchsuite, about
#             twenty minutes on two cores) and writes BENCHMARKS.md,
#             bench/scale.png and bench/fanout.png.
.PHONY: test bench

test:
	scripts/test

bench:
	cd bench && go run ./cmd/benchsuite
