"""Model families; each sub-package is one family (see README 'Design: family contract')."""
