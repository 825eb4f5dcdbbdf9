"""What the tests and the benchmarks share: dataflows, the browser, the scenes and references they compare with."""
