"""vlx.evals"""
