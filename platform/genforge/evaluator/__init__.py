"""The evaluation stage: extractors and reference statistics (cached), sample generation, every metric
that applies to a family, the protocol recorded with each number, and the report."""
