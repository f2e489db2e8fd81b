"""Fetch the CA bundle PEM from its configured source (an SSM parameter for now).

Powertools Parameters caches the value per warm Lambda for `max_age` seconds.
"""

from __future__ import annotations

from aws_lambda_powertools.utilities import parameters
from aws_lambda_powertools.utilities.parameters.exceptions import GetParameterError

from eks_ca_remediator.errors import BundleError


def fetch_parameter_pem(name: str, max_age: int) -> str:
    try:
        value = parameters.get_parameter(name, decrypt=True, max_age=max_age)
    except GetParameterError as exc:
        raise BundleError(f"cannot read the CA bundle parameter {name!r}: {exc}") from exc
    if not isinstance(value, str) or not value.strip():
        raise BundleError(f"the CA bundle parameter {name!r} is empty")
    return value
