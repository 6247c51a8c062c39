"""The benchmarked apps: one module per framework, each with and without sessions."""
