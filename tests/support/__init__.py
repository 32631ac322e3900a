"""Helpers the test layers share."""
