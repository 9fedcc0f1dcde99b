// Package bench is the benchmark suite of the session cache against its
// peers: the mixed workload of a gateway (99% lookups, 1% revocations,
// Zipf popularity) run on sessioncache's tiered cache, on rueidis'
// server-assisted client-side caching and on go-redis/cache (TinyLFU in
// process, msgpack values in Redis), all on the same redis-server and the
// same sessions; the L2-hit comparison with rueidis and raw go-redis, with
// the CPU Redis spends per read (L2Peers); the scale curve of the L1 hit
// ratio and of the Redis calls it leaves; the fan-out scale curve, from 10
// to 1,000 subscribers on one redis-server (RunFanoutScale); the statistics
// and the plots of BENCHMARKS.md.
//
// It is a module of its own so that the library's go.mod never depends on
// the peers. bench/cmd/benchsuite runs everything (the library's own
// benchmarks included) and writes BENCHMARKS.md; `go test ./...` here runs
// a smoke of the suite in a few seconds.
//
// The functions are safe for concurrent use unless their doc says
// otherwise; each run owns the clients it creates and closes them.
package bench
