"""msvd_qa: MSVD-QA open-ended video QA (manual download)."""
