"""Stand-in for the few mmcv names the official E2FGVI code imports (benchmarks only)."""
