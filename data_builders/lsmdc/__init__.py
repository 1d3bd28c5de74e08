"""lsmdc: LSMDC 2016 clips with retrieval, multiple-choice and fill-in-the-blank annotations."""
