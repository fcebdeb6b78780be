"""MLflow glue: tracking URIs, run creation and look-ups, rank-0 metric logging, model and evaluation logging.

Other modules that talk to MLflow do so for their own stage and import it lazily inside functions: the
training driver (run lifecycle), tuning (parent and child runs), evaluator/run_evaluation.py and
model_registry/ (versions, aliases). Models, data and metrics never import it.
"""
