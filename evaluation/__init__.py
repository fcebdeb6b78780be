"""Metrics and feature extractors: pure functions over arrays (torch, numpy, scipy only).

Never imports genforge, Ray or MLflow. Filled in by the evaluation stage.
"""
