"""vlx.convert"""
