# make test   runs the tests of the module (scripts/test).
# make bench  runs the benchmark suite (bench/cmd/benchsuite, about ten
#             minutes on two cores) and writes BENCHMARKS.md and
#             bench/scale.png.
.PHONY: test bench

test:
	scripts/test

bench:
	cd bench && go run ./cmd/benchsuite
