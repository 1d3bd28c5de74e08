"""msrvtt: MSR-VTT retrieval, MSRVTT-QA and MSRVTT-MC (manual download)."""
