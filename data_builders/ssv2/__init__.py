"""ssv2: Something-Something V2 template classification (manual download)."""
