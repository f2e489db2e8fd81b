"""Business logic: composes decisions and adapters; no boto3 here."""
