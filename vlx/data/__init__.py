"""vlx.data"""
