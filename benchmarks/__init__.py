"""Benchmarks: latency/throughput of exported models against the papers' way of running them."""
