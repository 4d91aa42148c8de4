"""Data: YouTube-VOS archives, the embedded sample, per-video zips, masks and the Dataset."""
