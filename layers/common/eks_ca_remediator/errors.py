"""Domain exceptions. Adapters raise them `from` the botocore ClientError they translate."""


class RemediatorError(Exception):
    """Base class of every error this product raises on purpose."""


class InvalidRequest(RemediatorError):
    """The caller's input is not acceptable; the message says why."""


class ConfigurationError(RemediatorError):
    """The deployment's configuration is incomplete or inconsistent."""


class BundleError(RemediatorError):
    """The CA bundle cannot be fetched or is not an acceptable CA bundle."""


class InstanceNotFound(RemediatorError):
    """EC2 does not know the instance (terminated long ago, wrong account or region)."""


class AgentNotRegistered(RemediatorError):
    """SSM rejected the instance id: its agent is not (or no longer) registered."""


class SendDenied(RemediatorError):
    """IAM refused SendCommand: an instance lacks an enrolled cluster's tag that the policy matches."""


class AttemptNotFound(RemediatorError):
    """A status event names a command this product has not recorded (yet)."""


class InvocationUnreadable(RemediatorError):
    """SSM did not answer GetCommandInvocation (throttled, server error, access denied, plugin name
    refused): the invocation's result is unknown for now. `code` is SSM's error code."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


class RecordConflict(RemediatorError):
    """A conditional write lost a race; the caller decides what that means."""


class MemberAccessDenied(RemediatorError):
    """Central mode: the member account's role cannot be assumed (missing, or it does not trust us)."""


class NotificationFailed(RemediatorError):
    """SNS refused a message to the deployment's topic."""


class AccountListingFailed(RemediatorError):
    """Central mode: AWS Organizations did not list the organisation's accounts (ListAccounts
    denied: not the management account nor a delegated administrator, or no permission)."""
