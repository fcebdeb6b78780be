"""Submitting genforge pipelines to a Ray cluster as Ray jobs (the Ray Jobs API), and the checks that run first.

`checks` holds what a job needs that can be decided from the spec alone (a tracking server every node reaches,
shared checkpoint storage, resources the cluster can ever provide); `client` talks to the cluster's Jobs API
(token authentication, a capacity probe, submit, logs, stop); `package` builds the job's runtime environment,
which ships the submitter's genforge code and spec so the job runs exactly what was submitted.
"""
