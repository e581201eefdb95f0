"""Orchestration without click: one measured run, repetitions, the result assembled, calibration."""
