"""MLflow glue: tracking URIs, runs, rank-0 metric logging and model logging. Nothing else imports MLflow."""
