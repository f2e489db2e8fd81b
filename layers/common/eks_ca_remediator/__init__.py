"""eks-ca-remediator shared package: models, settings, decisions and AWS adapters.

Shape of every flow: event (pydantic model, parsed at the edge) -> decision (pure function)
-> action (SSM adapter) -> record (DynamoDB adapter).
"""

# The released version: pyproject.toml, the template (ServerlessRepo SemanticVersion, the Version
# output), CHANGELOG.md and every attempt record (`remediator_version`) carry the same one.
__version__ = "0.1.0"
