"""Weakly supervised video anomaly detection with LEGO fusion (METHOD.md, section 5)."""
