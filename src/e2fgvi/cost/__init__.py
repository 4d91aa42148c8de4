"""What training costs, reported and forecast from the measured record (see e2fgvi.measure)."""
