"""eks-ca-remediator shared package: models, settings, decisions and AWS adapters.

Shape of every flow: event (pydantic model, parsed at the edge) -> decision (pure function)
-> action (SSM adapter) -> record (DynamoDB adapter).
"""
