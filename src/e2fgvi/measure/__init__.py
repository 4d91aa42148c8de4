"""Measuring what training costs: step timing, NVML and RAPL sampling, FLOPs, the cost record."""
