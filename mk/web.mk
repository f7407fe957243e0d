# The live data page (web/, docs/web.md).
.PHONY: bench-web
bench-web: setup ## web page load with 1000 jobs (goal p95 <= 300 ms) and 50 live viewers for 60 s (BENCH_ARGS="--seconds 10 --viewers 20" for a short run)
	$(PY) benchmarks/bench_web.py $(BENCH_ARGS)
