"""Evaluation under the paper's protocol and object removal on user videos."""
