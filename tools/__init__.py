"""Developer tooling shared by the tests and the benchmark."""
