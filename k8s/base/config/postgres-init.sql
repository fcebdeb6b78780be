-- Runs once, when the StatefulSet's volume is empty (docker-entrypoint-initdb.d), as POSTGRES_USER.
-- POSTGRES_DB (mlflow) holds runs and the model registry; the basic-auth user store gets its own database.
CREATE DATABASE mlflow_auth OWNER mlflow;
