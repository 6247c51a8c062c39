"""Side-by-side benchmarks of sessionhub and its peers: `./bench/run.sh`."""
