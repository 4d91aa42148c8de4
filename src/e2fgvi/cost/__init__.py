"""Cost measurement and forecast: step timing, NVML sampling, energy, money, reports."""
